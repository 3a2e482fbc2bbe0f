"""Issue 9 §2 and §7: `train --out DIR` never deletes or overwrites files cnndsl did not write,
two runs never share a folder, a read-only or full folder fails before any work, and a full
disk during a save keeps the previous checkpoint. Plus `--max-steps 0` and paths with `[`."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

import cnndsl
import cnndsl.training.data
from cnndsl.cli import main
from cnndsl.errors import ArgumentError, DataError
from cnndsl.training import train
from cnndsl.training.checkpoint import checkpoint_info, restore_checkpoint
from cnndsl.training.rundir import LOCK, MANIFEST, RunFolder

TINY = """network Tiny
input 1@8x8
conv 4@3x3 p1 -> relu -> maxpool 2 -> flatten -> dense 10

train {
  data = digits
  optimizer = adam(lr=0.01)
  batch = 64
  epochs = 2
  seed = 0
}
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.cnn"
    path.write_text(TINY)
    return path


def _foreign(folder: Path) -> dict[Path, bytes]:
    files = {folder / "checkpoints" / "model.pt": b"another framework's weights", folder / "notes.txt": b"mine"}
    for p, data in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def test_a_folder_of_another_tool_is_refused_and_left_alone(spec: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "other"
    files = _foreign(out)
    for extra in ([], ["--overwrite"]):
        assert main(["train", str(spec), "--out", str(out), "--max-steps", "1", *extra]) == 2
        err = capsys.readouterr().err
        assert "holds files that cnndsl did not write: checkpoints/, notes.txt" in err
        assert (
            "pick another (new or empty) folder" in err and "`--overwrite` only replaces a previous cnndsl run" in err
        )
    assert {p: p.read_bytes() for p in files} == files
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "notes.txt"]  # no lock, no manifest left
    assert main(["train", str(spec), "--out", str(out), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_overwrite_removes_only_what_the_manifest_lists(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(spec, out=out, quiet=True, max_steps=2, plot=False)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["files"] == sorted([MANIFEST, LOCK, "checkpoints", "history.jsonl", "summary.json"])
    added = {out / "mine.txt": b"a user's file", out / "checkpoints" / "model.pt": b"a user's file in there"}
    for p, data in added.items():
        p.write_bytes(data)
    with pytest.raises(ArgumentError, match="already holds a training run"):
        train(spec, out=out, quiet=True, max_steps=1)
    buf = io.StringIO()
    r = train(spec, out=out, overwrite=True, max_steps=1, plot=False, console=Console(file=buf, width=300))
    assert r.step == 1
    text = buf.getvalue()
    assert "overwrite removed the previous run's checkpoints/ (1 checkpoint), history.jsonl, summary.json" in text
    assert {p: p.read_bytes() for p in added} == added  # never anything else
    assert checkpoint_info(out / "checkpoints").step == 1


def test_a_second_run_fails_at_once_naming_the_holder(spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    holder = RunFolder(out)
    holder.open(fresh=True, overwrite=False)
    try:
        t = time.monotonic()
        with pytest.raises(
            ArgumentError, match=rf"is in use by another `cnndsl train` \(pid {os.getpid()} on .*started 20"
        ):
            train(spec, out=out, quiet=True, max_steps=1)
        assert time.monotonic() - t < 5  # at once: before data loading and compilation
        with pytest.raises(ArgumentError, match="in use"):
            train(spec, out=out, quiet=True, resume=True)
    finally:
        holder.close()
    assert train(spec, out=out, quiet=True, max_steps=1, plot=False).step == 1  # released


def test_the_os_releases_the_lock_of_a_killed_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = (
        "import sys; from pathlib import Path; from cnndsl.training.rundir import RunFolder;"
        "RunFolder(Path(sys.argv[1])).open(fresh=True, overwrite=False); print('locked', flush=True);"
        "import time; time.sleep(60)"
    )
    p = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "locked"
        with pytest.raises(ArgumentError, match=f"pid {p.pid} "):
            RunFolder(out).open(fresh=True, overwrite=False)
    finally:
        p.kill()
        p.wait()
    folder = RunFolder(out)
    folder.open(fresh=True, overwrite=False)  # SIGKILL released it
    folder.close()


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_an_unwritable_out_fails_before_data_and_compilation(
    spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    from cnndsl.training import loop

    def no_data(*a, **k):
        raise AssertionError("data was loaded before the folder was checked")

    monkeypatch.setattr(loop, "load_dataset", no_data)
    real_open, real_fsync = os.open, os.fsync

    def fake_open(path, flags, *a, **k):
        if fault == "read-only" and ".cnndsl-probe" in str(path):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *a, **k)

    def fake_fsync(fd):
        if fault == "full":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "fsync", fake_fsync)
    with pytest.raises(DataError) as e:
        train(spec, out=tmp_path / "run", quiet=True)
    want = "the disk is full" if fault == "full" else "Read-only file system"
    assert f"cannot write the run to `{tmp_path / 'run'}`: {want}" in e.value.message
    assert not list((tmp_path / "run").glob(".cnndsl-probe*"))


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(
    spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import cnndsl.training.checkpoint as ck

    out = tmp_path / "run"
    real = ck._write
    saves = []

    def write(path: Path, data: bytes) -> None:
        if path.name == "state.msgpack":
            saves.append(path)
            if len(saves) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ck, "_write", write)
    assert main(["train", str(spec), "--out", str(out), "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert "disk full while saving step 40; the previous checkpoint is intact" in err  # 20 steps an epoch
    assert "continue the run with `--resume`" in err
    kept = restore_checkpoint(out / "checkpoints")
    assert kept.step == 20 and kept.meta["epoch"] == 1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best", "latest", "step-00000020"]
    assert [json.loads(line)["epoch"] for line in (out / "history.jsonl").read_text().splitlines()] == [1]


def test_max_steps_zero_is_a_usage_error(spec: Path, tmp_path: Path, capsys) -> None:
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--max-steps", "0"]) == 2
    err = capsys.readouterr().err
    assert "error: --max-steps 0: a run takes at least one step" in err and "hint:" in err
    assert not (tmp_path / "run").exists()


def test_paths_with_brackets_print_as_written(spec: Path, tmp_path: Path, capsys) -> None:
    ds = cnndsl.training.data.load_dataset("digits", cnndsl.loads(TINY).input, normalize="none")
    data = tmp_path / "d[" / "a]" / "digits[bold].npz"  # `.../d[/a]/...`: a closing tag to rich
    data.parent.mkdir(parents=True)
    np.savez(data, x=ds.x_train[:200].astype(np.uint8), y=ds.y_train[:200])
    out = tmp_path / "o[" / "b]"
    argv = ["train", str(spec), "--out", str(out), "--data", str(data), "--epochs", "1", "--no-plot"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"data     {data}" in text and f"out      {out}" in text
    assert main(["eval", str(spec), "--weights", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"data    {data}" in captured.out and str(data) in captured.err
