"""`cnndsl fmt`: comments and layout kept, the network unchanged, a fixed point; `--check`,
`--write` and diagnostics as `compile` gives them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnndsl.cli import main
from cnndsl.compiler import compile_text
from cnndsl.syntax.fmt import format_module, format_source
from cnndsl.syntax.parse import parse

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.cnn"))
ERRORS = Path(__file__).resolve().parents[1] / "fixtures" / "errors"
_COMMENT_OR_STRING = re.compile(r'#[^\n]*|"[^"\n]*"')


def comments(text: str) -> list[str]:
    return [m[0].rstrip() for m in _COMMENT_OR_STRING.finditer(text) if m[0].startswith("#")]


def gaps(text: str) -> list[int]:
    """Offsets of blanks between tokens (outside comments and strings): text may go there."""
    code = _COMMENT_OR_STRING.sub(lambda m: "\0" * len(m[0]), text)
    return [i for i, ch in enumerate(code) if ch in " \n"]


def assert_same_network(before: str, after: str) -> None:
    assert parse(after) == parse(before)
    a, b = compile_text(before), compile_text(after)
    assert (a.name, a.input, a.body) == (b.name, b.input, b.body)


def assert_keeps_comments(before: str, after: str) -> None:
    """Every comment is still there (trailing ones may share a line: `# a  # b`). The order is
    checked on the examples; a comment pushed inside a block header may come out after one
    that followed it."""
    rest = "\n".join(comments(after))
    for c in comments(before):
        assert c in rest, f"lost {c!r}"
        rest = rest.replace(c, "", 1)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_keep_comments_network_and_fixed_point(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    out = format_source(text)
    assert comments(out) == comments(text)
    assert_same_network(text, out)
    assert format_source(out) == out
    # blank-line structure: as many paragraphs as written (runs of blank lines count once)
    assert len(re.findall(r"\n\s*\n", out)) == len(re.findall(r"\n\s*\n", text.rstrip("\n") + "\n"))


_INSERTS = ("\n", "\n\n\n", "  # trailing {i}\n", "\n# own line {i}\n", "\n\n# after a blank {i}\n\n")


@st.composite
def edited_examples(draw: st.DrawFn) -> str:
    """An example with comments, line breaks and blank lines pushed in between random tokens."""
    text = draw(st.sampled_from(EXAMPLES)).read_text(encoding="utf-8")
    spots = gaps(text)
    chosen = sorted(set(draw(st.lists(st.sampled_from(spots), min_size=1, max_size=6))), reverse=True)
    for n, at in enumerate(chosen):
        text = text[:at] + draw(st.sampled_from(_INSERTS)).format(i=n) + text[at:]
    return text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edited_examples())
def test_property_comments_kept_network_same_idempotent(text: str) -> None:
    out = format_source(text)
    assert_keeps_comments(text, out)
    assert_same_network(text, out)
    assert format_source(out) == out
    assert "\n\n\n" not in out and not out.startswith("\n") and out.endswith("\n")


def test_canonical_form_without_source_round_trips() -> None:
    for path in EXAMPLES:
        m = parse(path.read_text(encoding="utf-8"))
        out = format_module(m)
        assert parse(out) == m, path.name
        assert "#" not in out


def test_layout_is_normalised_around_what_is_kept() -> None:
    text = (
        "# LeNet, slightly\n"
        "input   1@28x28\n\n\n\n"
        "conv 6@5x5 ->relu   # edges\n"
        "  ->  maxpool 2 -> residual {conv 6@3x3 p1} -> flatten\n"
        "# the head\n"
        "-> dense 10\n"
    )
    assert format_source(text) == (
        "# LeNet, slightly\n"
        "input 1@28x28\n\n"
        "conv 6@5x5 -> relu  # edges\n"
        "-> maxpool 2 -> residual { conv 6@3x3 p1 } -> flatten\n"
        "# the head\n"
        "-> dense 10\n"
    )


def test_trailing_comments_keep_their_column_when_there_is_room() -> None:
    text = "input 1@8x8\nconv 2@3x3          # a\n-> relu             # b\n"
    assert format_source(text) == text


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(args)
    got = capsys.readouterr()
    return status, got.out, got.err


UGLY = "input 1@8x8 # tiny\nconv 2@3x3->relu\n"
PRETTY = "input 1@8x8  # tiny\nconv 2@3x3 -> relu\n"


def test_cli_prints_checks_and_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    Path("a.cnn").write_text(UGLY, encoding="utf-8")
    Path("b.cnn").write_text(PRETTY, encoding="utf-8")
    os.chmod("a.cnn", 0o640)
    assert run(["fmt", "a.cnn"], capsys) == (0, PRETTY, "")
    assert run(["fmt", "--check", "a.cnn", "b.cnn"], capsys) == (1, "", "would reformat a.cnn\n")
    assert run(["fmt", "--check", "b.cnn"], capsys) == (0, "", "")
    before = os.stat("b.cnn").st_mtime_ns
    assert run(["fmt", "--write", "a.cnn", "b.cnn"], capsys) == (0, "", "reformatted a.cnn\n")
    assert Path("a.cnn").read_text(encoding="utf-8") == PRETTY
    assert os.stat("a.cnn").st_mode & 0o777 == 0o640
    assert os.stat("b.cnn").st_mtime_ns == before  # unchanged files are not rewritten
    assert sorted(os.listdir()) == ["a.cnn", "b.cnn"]  # no temp file left
    assert run(["fmt", "--check", "a.cnn"], capsys) == (0, "", "")


@pytest.mark.parametrize("name", ["kernel_larger_than_input", "block_unknown_kwarg", "unclosed_brace"])
def test_cli_bad_file_gets_compiles_diagnostic(name: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(ERRORS)
    monkeypatch.setenv("NO_COLOR", "1")
    if not Path(f"{name}.cnn").exists():
        pytest.fail(f"fixture {name}.cnn is gone; pick another from tests/fixtures/errors")
    status, _, compile_err = run(["compile", "--color", "never", f"{name}.cnn"], capsys)
    for flags in ([], ["--check"], ["--write"]):
        before = Path(f"{name}.cnn").read_bytes()
        assert run(["fmt", *flags, f"{name}.cnn"], capsys) == (2, "", compile_err)
        assert Path(f"{name}.cnn").read_bytes() == before
    assert status == 2


def test_cli_shape_error_exits_2_and_leaves_the_file(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.cnn"
    bad.write_text("input 1@4x4\nconv 6@5x5->relu\n", encoding="utf-8")
    status, out, err = run(["fmt", "--write", str(bad)], capsys)
    assert (status, out) == (2, "")
    assert err.startswith(f"{bad}:2:1: error: conv 6@5x5 needs an input of at least 5x5, but gets 1@4x4\n")
    assert bad.read_text(encoding="utf-8") == "input 1@4x4\nconv 6@5x5->relu\n"


def test_cli_missing_file_reads_as_compile_says(tmp_path: Path, capsys) -> None:
    missing = str(tmp_path / "nope.cnn")
    status, out, err = run(["fmt", missing], capsys)
    assert (status, out) == (2, "")
    assert "nope.cnn" in err and "Traceback" not in err
    assert (status, err) == run(["compile", "--color", "never", missing], capsys)[::2]
