"""docs/language.md documents every option's long form (`groups=`, `stride=`, ...): the
Options table has a row for each op with arguments, naming each argument."""

from __future__ import annotations

import re

from cnndsl.ops import REGISTRY

from ..conftest import ROOT


def options_table() -> dict[str, str]:
    text = (ROOT / "docs" / "language.md").read_text()
    section = text.split("### Options", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if line.startswith("| `"):
            ops, _, rest = line[2:].partition(" | ")
            for op in re.findall(r"`([a-z0-9]+)`", ops):
                rows[op] = rest
    return rows


def test_every_option_has_its_long_form_documented():
    rows = options_table()
    missing = [
        f"{op.name}: {p.name}="
        for op in {id(o): o for o in REGISTRY.values()}.values()
        for p in op.params
        if f"`{p.name}=" not in rows.get(op.name, "") and f" {p.name}=" not in rows.get(op.name, "")
    ]
    assert missing == []
