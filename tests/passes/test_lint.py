"""The lint pass (issue 13, item 4): a reviewer's warnings, located and with a hint. Each
`tests/fixtures/warnings/NAME.cnn` compiles (exit 0) and `NAME.txt` is exactly what
`cnndsl compile NAME.cnn` prints on stderr there; `--werror` makes them errors (exit 2).

Regenerate after an intended change of wording with
`CNNDSL_UPDATE_GOLDEN=1 pytest tests/passes/test_lint.py` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cnndsl.cli import main
from cnndsl.compiler import compile_file, compile_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "warnings"
CASES = sorted(p.stem for p in FIXTURES.glob("*.cnn"))
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
UPDATE = os.environ.get("CNNDSL_UPDATE_GOLDEN") == "1"


def run(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    monkeypatch.chdir(FIXTURES)
    monkeypatch.setenv("NO_COLOR", "1")
    status = main(["compile", "--color", "never", *args])
    return status, capsys.readouterr().err


@pytest.mark.parametrize("name", CASES)
def test_golden_warning(name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    status, err = run([f"{name}.cnn"], monkeypatch, capsys)
    golden = FIXTURES / f"{name}.txt"
    if UPDATE:
        golden.write_text(err, encoding="utf-8")
    assert status == 0, err
    assert err.startswith(f"{name}.cnn:") and ": warning: " in err.splitlines()[0]
    assert "= hint: " in err
    assert err == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", CASES)
def test_werror_makes_each_warning_an_error(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = run(["--werror", f"{name}.cnn"], monkeypatch, capsys)
    golden = (FIXTURES / f"{name}.txt").read_text(encoding="utf-8")
    assert status == 2
    assert err.count(": error: ") == golden.count(": warning: ") and ": warning: " not in err
    assert err.count("= a warning, made an error by --werror") == golden.count(": warning: ")


def test_werror_passes_a_clean_file(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    status, err = run(["--werror", str(EXAMPLES / "lenet5.cnn")], monkeypatch, capsys)
    assert (status, err) == (0, "")


def test_every_example_is_clean() -> None:
    """No false alarms on the shipped networks (ResNet-50's 1x1 stride-2 projections sit
    beside a 3x3 stride-2 convolution; GoogLeNet's and AlexNet's windows overlap)."""
    for path in sorted(EXAMPLES.glob("*.cnn")):
        assert [w.message for w in compile_file(path).warnings] == [], path.name


@pytest.mark.parametrize(
    "spec",
    [
        "input 10\ndense 10 -> softmax",  # softmax last
        "input 10\ndense 10 -> logsoftmax",
        "input 3@8x8\nconv 4@3x3 -> sigmoid -> gap -> dense 2 -> sigmoid",  # a sigmoid is also a gate
        "input 3@8x8\nconv 4@3x3 -> dropout 0.2 -> gap -> dense 2",  # dropout before the head
        "input 3@8x8\nconv 4@3x3 -> bn momentum=0.9 -> maxpool 2 -> gap -> dense 2",  # overlapping / tiling windows
        "input 3@8x8\nconv 4@3x3 s3 -> flatten -> dense 2",  # stride equal to the window
    ],
)
def test_no_warning_where_nothing_is_wrong(spec: str) -> None:
    assert compile_text(spec).warnings == ()


def test_softmax_then_logsoftmax_and_dropout_under_the_softmax() -> None:
    net = compile_text("input 10\ndense 10 -> dropout 0.1 -> softmax -> logsoftmax")
    assert [w.message.split(":")[0] for w in net.warnings] == [
        "`dropout 0.1` right before the output randomly zeroes the network's outputs in training",
        "`logsoftmax` after `softmax`",
    ]
    assert all(w.span is not None and w.hints for w in net.warnings)


def test_json_carries_the_warnings(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    monkeypatch.chdir(FIXTURES)
    assert main(["compile", "--json", "gap_then_flatten.cnn"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["warnings"]) == 1 and "`flatten` does nothing here" in out["warnings"][0]
