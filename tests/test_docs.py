"""The language reference documents every layer name the registry accepts."""

from __future__ import annotations

import re

from cnndsl.ops import REGISTRY

from .conftest import ROOT


def test_every_op_is_in_docs_language():
    text = (ROOT / "docs" / "language.md").read_text()
    missing = [name for name in REGISTRY if not re.search(rf"`{name}\b", text)]
    assert not missing, f"undocumented layers: {missing}"


def test_every_op_has_a_doc_line():
    assert all(op.doc for op in REGISTRY.values())
