"""One bound on numbers, 10^15, applied everywhere (issue 9, section 5): literals as they are
parsed, values computed by expressions and functions, the elements of every tensor, and the
receptive field. Past it a located `CnnError`, never an `OverflowError` in the report.
"""

from __future__ import annotations

import json

import pytest

import cnndsl
from cnndsl.cli import main
from cnndsl.syntax.values import MAX_VALUE, RANGE_HINT


def error(text: str) -> cnndsl.CnnError:
    with pytest.raises(cnndsl.CnnError) as e:
        cnndsl.loads(text, "n.cnn")
    assert e.value.span is not None
    return e.value


@pytest.mark.parametrize(
    ("layer", "shown", "column"),
    [
        ("conv 1e30@3x3", "the number `1e30` is out of range", 6),  # was accepted
        ("conv (1000000000*1000000000)@3x3", "`1000000000*1000000000` is out of range", 7),
        ("conv 8@3x3 -> bn eps=1e-16", "the number `1e-16` is out of range", 22),
        ("maxpool 99999999999999999x2", "the number `99999999999999999` is out of range", 9),
        ("dense 1000000000000001", "the number `1000000000000001` is out of range", 7),
        ("conv max(2, 1e16)@3x3", "the number `1e16` is out of range", 13),
        (
            "flatten -> dense make_divisible(999999999999999, 6e14)",
            "`make_divisible(999999999999999, 6e14)` is out",
            18,
        ),
    ],
    ids=["literal", "product", "too-fine", "size-token", "int", "function-argument", "function-result"],
)
def test_the_bound_applies_to_literals_and_computed_values(layer: str, shown: str, column: int) -> None:
    e = error(f"input 3@8x8\n{layer}\n")
    assert shown in e.message
    assert (e.span.line, e.span.column) == (2, column)
    assert e.hints == [RANGE_HINT]


def test_the_bound_itself_is_allowed() -> None:
    assert MAX_VALUE == 10**15
    net = cnndsl.loads("input 1@8x8\nflatten -> dense 1e15\n")
    assert net.output == cnndsl.Shape(10**15)
    assert cnndsl.loads("input 1@8x8\nconv 1@1x1 -> bn eps=1e-15\n").layers()[1].args.eps == 1e-15


@pytest.mark.parametrize(
    ("text", "message", "where"),
    [
        (
            "input 3@8x8\nrepeat 30 { upsample 999999 }\n",
            "`upsample 999999` would output 3@7999984000008x7999984000008",
            (2, 13),
        ),
        ("input 3@8x8\nconv 1e15@1x1\n", "`conv 1e15@1x1` would output 1000000000000000@8x8", (2, 1)),
        (
            "input 3@1000000x1000000\nconcat { conv 600@1x1 | conv 600@1x1 }\n",
            "`concat` would output 1200@1000000x1000000",
            (2, 1),
        ),
        ("input 3@999999999x999999999\nrelu\n", "the input 3@999999999x999999999 has", (1, 7)),
        ("input 1@8x8\nrepeat 30 { conv 1@1x1 s999999999999999 }\n", "the receptive field grows past 10^15", (2, 13)),
    ],
    ids=["upsample", "filters", "concat", "input", "receptive-field"],
)
def test_tensors_and_receptive_fields_are_bounded(text: str, message: str, where: tuple[int, int]) -> None:
    e = error(text)
    assert isinstance(e, cnndsl.ShapeError)
    assert message in e.message
    assert (e.span.line, e.span.column) == where


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_the_report_never_overflows(json_flag: list[str], tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """`upsample` past the bound crashed `report._bytes` (OverflowError, exit 70): now exit 2,
    the table up to the failing layer, and strict JSON."""
    spec = tmp_path / "up.cnn"
    spec.write_text("input 3@8x8\nrepeat 30 { upsample 999999 }\n", encoding="utf-8")
    assert main(["compile", "--color", "never", *json_flag, str(spec)]) == 2
    out, err = capsys.readouterr()
    assert "internal error" not in err
    if json_flag:
        data = json.loads(out, parse_constant=lambda c: pytest.fail(c))
        assert data["error"]["kind"] == "ShapeError" and data["error"]["line"] == 2
        assert [r["output"] for r in data["layers"]] == ["3@7999992x7999992"]  # up to the failing layer
    else:
        assert "3@7999992x7999992" in out and "would output" in err
