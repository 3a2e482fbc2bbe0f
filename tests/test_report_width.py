"""The layer table fits the terminal (`$COLUMNS` or the tty's width), dropping columns in a
stated order; `--wide` and pipes get every column; diagnostics are coloured on a terminal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import cnndsl
from cnndsl.cli import main
from cnndsl.report import COLUMNS, DROP_ORDER, fit_columns, paint_diagnostic, render_table, rows

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "fixtures" / "report"
UPDATE = os.environ.get("CNNDSL_UPDATE_GOLDEN") == "1"


def compile_out(args: list[str], monkeypatch, capsys, columns: str | None) -> tuple[int, str, str]:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("NO_COLOR", raising=False)
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    status = main(["compile", *args])
    got = capsys.readouterr()
    return status, got.out, got.err


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


@pytest.mark.parametrize("columns", ["60", "80", "100", "40"])
def test_resnet50_fits_the_width(columns: str, monkeypatch, capsys) -> None:
    status, out, _ = compile_out(["--color", "never", "examples/resnet50.cnn"], monkeypatch, capsys, columns)
    assert status == 0
    assert widest(out) <= int(columns)
    header = next(line for line in out.splitlines() if "layer" in line and "output" in line)
    assert "params" in header
    assert "25,557,032" in out  # the totals are wrapped, not cut


def test_golden_lenet5_at_60_columns(monkeypatch, capsys) -> None:
    _, out, _ = compile_out(["--color", "never", "examples/lenet5.cnn"], monkeypatch, capsys, "60")
    golden = GOLDEN / "lenet5_60_columns.txt"
    if UPDATE:
        golden.write_text(out, encoding="utf-8")
    assert out == golden.read_text(encoding="utf-8")


def test_wide_and_pipes_get_every_column(monkeypatch, capsys) -> None:
    _, wide, _ = compile_out(["--color", "never", "--wide", "examples/resnet50.cnn"], monkeypatch, capsys, "60")
    _, piped, _ = compile_out(["--color", "never", "examples/resnet50.cnn"], monkeypatch, capsys, None)
    assert wide == piped
    rule = next(line for line in wide.splitlines() if line.startswith("─"))
    assert len(rule) == 139 and "RF (jump)" in wide  # the 139-character rows
    assert "…" not in wide


def test_columns_are_dropped_in_the_stated_order() -> None:
    net = cnndsl.load(ROOT / "examples" / "resnet50.cnn").ir
    cells = [(str(r.index), r.text, r.name, "1:1", r.output, "1", "1", "1") for r in rows(net)]
    names = [c for c, _ in COLUMNS]
    seen: list[list[str]] = []
    for width in range(160, 20, -1):
        keep, cut = fit_columns(cells, width)
        kept = [names[i] for i in keep]
        dropped = [c for c in names if c not in kept]
        assert set(dropped) == set(DROP_ORDER[: len(dropped)]), width
        assert {"layer", "output", "params"} <= set(kept)
        if cut is not None:
            assert kept == ["layer", "output", "params"]
        seen.append(kept)
    assert len({tuple(k) for k in seen}) == len(DROP_ORDER) + 1  # every stage happens


def test_the_layer_column_is_cut_with_an_ellipsis() -> None:
    net = cnndsl.load(ROOT / "examples" / "resnet50.cnn").ir
    out = render_table(net, width=50)
    assert widest(out) <= 50
    assert "conv 64@3x3 stride=1…" in out or "…" in out


def test_small_flop_counts_have_a_space() -> None:
    net = cnndsl.loads("input 1@3x3\nconv 1@2x2 nobias")
    assert "(32 FLOPs;" in render_table(net.ir)
    assert "(833 kFLOPs;" in render_table(cnndsl.load(ROOT / "examples" / "lenet5.cnn").ir)


BAD = ROOT / "tests" / "fixtures" / "errors" / "kernel_larger_than_input.cnn"


def test_diagnostics_are_coloured_only_when_asked_or_on_a_terminal(monkeypatch, capsys) -> None:
    status, _, err = compile_out(["--color", "always", str(BAD)], monkeypatch, capsys, None)
    assert status == 2
    assert "\x1b[1;31merror\x1b[0m" in err and "\x1b[36m= hint:" in err
    _, _, plain = compile_out(["--color", "never", str(BAD)], monkeypatch, capsys, None)
    assert "\x1b" not in plain
    _, _, auto = compile_out([str(BAD)], monkeypatch, capsys, None)  # captured stderr is no terminal
    assert auto == plain
    monkeypatch.setenv("NO_COLOR", "1")
    assert main(["compile", str(BAD)]) == 2 and "\x1b" not in capsys.readouterr().err


def test_golden_painted_diagnostic() -> None:
    text = (
        "a.cnn:2:1: error: conv 6@5x5 needs an input of at least 5x5, but gets 1@4x4\n"
        "    conv 6@5x5\n"
        "    ^^^^^^^^^^\n"
        "  = the input comes from the `input` line at 1:7, which outputs 1@4x4\n"
        "  = hint: pad it"
    )
    assert paint_diagnostic(text) == (
        "\x1b[1ma.cnn:2:1: \x1b[0m\x1b[1;31merror\x1b[0m: "
        "\x1b[1mconv 6@5x5 needs an input of at least 5x5, but gets 1@4x4\x1b[0m\n"
        "    conv 6@5x5\n"
        "\x1b[1;31m    ^^^^^^^^^^\x1b[0m\n"
        "  \x1b[34m= the input comes from the `input` line at 1:7, which outputs 1@4x4\x1b[0m\n"
        "  \x1b[36m= hint: pad it\x1b[0m"
    )
    assert "\x1b[1;33mwarning\x1b[0m" in paint_diagnostic("a.cnn:1:1: warning: softmax twice")
