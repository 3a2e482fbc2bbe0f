"""Whatever is given as a spec or an option, `cnndsl compile` exits 2 with a worded, located
message, never 70 ("internal error"), never a hang (issue 9, section 7, compile path).

Every command reads specs through `cnndsl.compiler.read_spec`: regular files only (a FIFO
would block, `/dev/zero` never ends), at most 1 MiB, a UTF-8 byte-order mark skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import cnndsl
from cnndsl.cli import main
from cnndsl.compiler import MAX_SPEC_BYTES, read_spec
from cnndsl.errors import SpecFileError

ROOT = Path(__file__).resolve().parents[2]
LENET = str(ROOT / "examples" / "lenet5.cnn")


def compile_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    try:
        status = main(["compile", "--color", "never", *argv])
    except SystemExit as e:  # argparse's usage errors
        status = int(e.code or 0)
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--xla", "--batch", "0"], "argument --batch: must be 1 or more, got 0"),  # was ZeroDivisionError
        (["--batch", "-4"], "argument --batch: must be 1 or more, got -4"),  # was TypeError
        (["--depth", "-3"], "argument --depth: must be 0 or more, got -3"),  # printed an empty table
        (["--depth", "two"], "argument --depth: expected a whole number, got 'two'"),
        (["--batch", str(10**20)], "argument --batch: must be at most 2,147,483,647"),
    ],
    ids=["batch-0", "batch-negative", "depth-negative", "depth-word", "batch-huge"],
)
def test_bad_options_are_usage_errors(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, err = compile_cli(capsys, *argv, LENET)
    assert status == 2, err
    assert f"cnndsl compile: error: {expected}" in err
    assert "internal error" not in err and "Traceback" not in err


def test_depth_zero_still_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", "--color", "never", "--depth", "0", LENET]) == 0
    assert "conv1" in capsys.readouterr().out


def _expect(capsys: pytest.CaptureFixture[str], path: str, first_line: str, hint: str | None = None) -> None:
    status, err = compile_cli(capsys, path)
    assert status == 2, err
    assert err.splitlines()[0] == first_line, err
    if hint is not None:
        assert f"= hint: {hint}" in err, err
    assert "internal error" not in err and "Traceback" not in err and "Errno" not in err


def test_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "nets").mkdir()
    (tmp_path / "nets" / "a.cnn").write_text("input 1@8x8\nrelu\n", encoding="utf-8")
    d = str(tmp_path / "nets")
    _expect(
        capsys, d, f"{d}: error: this is a directory, not a `.cnn` file", f"give a `.cnn` file in it, like `{d}/a.cnn`"
    )


def test_a_device_is_refused_before_reading(capsys: pytest.CaptureFixture[str]) -> None:
    """`/dev/zero` never ends (MemoryError before): refused from its type, nothing read."""
    _expect(capsys, "/dev/zero", "/dev/zero: error: this is a character device, not a regular file")


def test_a_fifo_does_not_hang(tmp_path: Path) -> None:
    """A FIFO with no writer blocked `open` forever; in a subprocess so a regression fails, not hangs."""
    fifo = tmp_path / "net.cnn"
    os.mkfifo(fifo)
    r = subprocess.run(
        [sys.executable, "-m", "cnndsl", "compile", "--color", "never", str(fifo)],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"{fifo}: error: this is a named pipe (FIFO), not a regular file"), r.stderr


def test_a_missing_file_suggests_a_neighbour(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "lenet5.cnn").write_text("input 1@8x8\nrelu\n", encoding="utf-8")
    missing = str(tmp_path / "lenet.cnn")
    _expect(capsys, missing, f"{missing}: error: no such file", "did you mean `lenet5.cnn`?")
    under_a_file = str(tmp_path / "lenet5.cnn" / "x.cnn")
    _expect(capsys, under_a_file, f"{under_a_file}: error: no such file")


def test_too_large_is_refused_from_its_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "big.cnn"
    with big.open("wb") as f:
        f.truncate(50 * MAX_SPEC_BYTES)  # sparse: 50 MiB that take no disk
    _expect(
        capsys,
        str(big),
        f"{big}: error: the file is 52,428,800 bytes, over the 1,048,576-byte (1 MiB) limit for a spec",
    )
    exact = tmp_path / "exact.cnn"
    exact.write_bytes(b"input 1@8x8\nrelu\n" + b"#" * (MAX_SPEC_BYTES - 17))
    assert len(read_spec(exact)) == MAX_SPEC_BYTES


def test_undecodable_bytes_are_located(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "latin1.cnn"
    bad.write_bytes("input 1@8x8\nconv 6@3x3 # côté\n".encode("latin-1"))
    status, err = compile_cli(capsys, str(bad))
    assert status == 2
    assert err.splitlines()[:3] == [
        f"{bad}:2:15: error: the file is not UTF-8 text: byte 0xf4",
        "    conv 6@3x3 # c\ufffdt\ufffd",
        "                  ^",
    ], err


def test_a_byte_order_mark_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "bom.cnn"
    spec.write_bytes(b"\xef\xbb\xbfinput 1@8x8\nconv 4@3x3 -> relu\n")
    assert main(["compile", "--color", "never", str(spec)]) == 0
    assert cnndsl.load(spec).output == cnndsl.Shape(4, (6, 6))
    assert main(["fmt", str(spec)]) == 0
    assert capsys.readouterr().out.endswith("conv 4@3x3 -> relu\n")
    # positions count from after the mark, as an editor shows them
    spec.write_bytes(b"\xef\xbb\xbfinput 1@8x8\nconv 4@9x9\n")
    with pytest.raises(cnndsl.ShapeError) as e:
        cnndsl.load(spec)
    assert (e.value.span.line, e.value.span.column) == (2, 1)
    assert cnndsl.loads("\ufeffinput 1@8x8\nrelu\n").output == cnndsl.Shape(1, (8, 8))


@pytest.mark.parametrize("command", ["compile", "fmt"])
def test_every_command_reads_through_read_spec(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`compile`, `fmt` and `cnndsl.load` (which `train`, `eval` and `predict` use) refuse the same way."""
    d = str(tmp_path)
    assert main([command, d]) == 2
    assert capsys.readouterr().err.startswith(f"{d}: error: this is a directory")
    with pytest.raises(SpecFileError, match="this is a directory"):
        cnndsl.load(d)


def test_compile_fmt_and_load_all_read_through_read_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    """A spy on the one reader sees every read (`train`, `eval` and `predict` go through `cnndsl.load`)."""
    import cnndsl.compiler

    seen: list[str] = []

    def spy(path: str | Path) -> str:
        seen.append(str(path))
        return read_spec(path)

    monkeypatch.setattr(cnndsl.compiler, "read_spec", spy)
    assert main(["compile", "--color", "never", LENET]) == 0
    assert main(["fmt", LENET]) == 0
    cnndsl.load(LENET)
    assert seen == [LENET] * 3
