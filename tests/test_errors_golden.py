"""Golden error messages: each `tests/fixtures/errors/NAME.cnn` is a realistic mistake, and
`NAME.txt` is exactly what `cnndsl compile NAME.cnn` prints on stderr when run from that
folder (so paths render as `NAME.cnn`).

After an intended change of wording, regenerate with

    CNNDSL_UPDATE_GOLDEN=1 pytest tests/test_errors_golden.py

and review the diff of the `.txt` files: they are the documentation of our messages.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from cnndsl.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "errors"
CASES = sorted(p.stem for p in FIXTURES.glob("*.cnn"))
UPDATE = os.environ.get("CNNDSL_UPDATE_GOLDEN") == "1"

# What Lark calls its tokens; a message must put them into words.
LARK_NAMES = re.compile(
    r"Token\(|__ANON|\$END|\b(?:NAME|NUMBER|CALLNAME|SIZE|ARROW|[LR]BRACE|[LR]PAR|VBAR|EQUAL|COMMA)\b"
)


def compile_stderr(name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    monkeypatch.chdir(FIXTURES)
    monkeypatch.setenv("NO_COLOR", "1")
    status = main(["compile", "--color", "never", f"{name}.cnn"])
    return status, capsys.readouterr().err


def test_there_are_enough_distinct_cases() -> None:
    assert len(CASES) >= 30
    texts = [(FIXTURES / f"{c}.cnn").read_bytes() for c in CASES]
    assert len(set(texts)) == len(texts)


@pytest.mark.parametrize("name", CASES)
def test_golden_error(name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    status, err = compile_stderr(name, monkeypatch, capsys)
    golden = FIXTURES / f"{name}.txt"
    if UPDATE:
        golden.write_text(err, encoding="utf-8")
    assert status == 2, err
    assert err.startswith(f"{name}.cnn"), err
    assert "Traceback" not in err and "internal error" not in err
    assert not LARK_NAMES.search(err), err
    assert golden.exists(), f"no {golden.name}: run with CNNDSL_UPDATE_GOLDEN=1"
    assert err == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", CASES)
def test_caret_lies_under_the_reported_column(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The underline starts at the column in `file:line:col`, on a copy of that source line."""
    _, err = compile_stderr(name, monkeypatch, capsys)
    lines = err.splitlines()
    m = re.match(rf"{re.escape(name)}\.cnn:(\d+):(\d+): error: ", lines[0])
    if m is None:  # a message about the whole file has no position
        assert re.match(rf"{re.escape(name)}\.cnn: error: ", lines[0])
        return
    line, col = int(m[1]), int(m[2])
    source = (FIXTURES / f"{name}.cnn").read_text(encoding="utf-8", errors="replace").splitlines()[line - 1]
    shown, caret = lines[1], lines[2]
    assert shown == "    " + source.strip()
    indent = len(source) - len(source.lstrip())
    assert caret.index("^") - 4 == col - 1 - indent
