"""Multi-process training on `jax.distributed`: 2 processes on this machine (CPU collectives
through gloo over 127.0.0.1) against one process with the same global batch.

Like is compared with like: CPU numerics can depend on the device count, so 2 processes x 1
device are compared with 1 process x 2 devices. Every child has a bounded wait and is killed
in a `finally`, so a hung peer fails the test instead of hanging CI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np
import pytest

import cnndsl
from cnndsl.cli import main
from cnndsl.errors import ArgumentError
from cnndsl.training import train
from cnndsl.training.checkpoint import restore_checkpoint
from cnndsl.training.data import augment

# BN (statistics over the global batch), dropout and augmentation (per-process shards of
# each batch's random draws): what could make a sharded run differ from a single one.
SPEC = """network Tiny
input 1@8x8
conv 4@3x3 p1 nobias -> bn -> relu -> maxpool 2 -> flatten -> dropout 0.1 -> dense 10 -> softmax
train {
  data = digits
  optimizer = sgd(lr=0.05, momentum=0.9)
  batch = 32
  epochs = 3
  augment = "crop(pad=1), flip"
}
"""
RUN_TIMEOUT_S = 240  # one 2-process run takes ~15-30 s on 2 busy cores
CLI = "import sys; from cnndsl.cli import main; sys.exit(main())"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(spec: Path, out: Path, *extra: str, n: int = 2) -> list[subprocess.Popen[str]]:
    """`n` processes of one `cnndsl train` run over 127.0.0.1, one CPU device each."""
    port = free_port()
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "1", "JAX_PLATFORMS": "cpu"}
    flags = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n), "--no-plot", "--quiet"]
    return [
        subprocess.Popen(
            [sys.executable, "-c", CLI, "train", str(spec), "--out", str(out), *flags, "--process-id", str(i), *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(n)
    ]


def wait_for_checkpoint(procs: list[subprocess.Popen], out: Path) -> None:
    """Until the run in `out` has saved a checkpoint, with every process still running."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (out / "checkpoints" / "latest").is_file():
        assert all(p.poll() is None for p in procs), [p.communicate()[0] for p in procs]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


def finish(procs: list[subprocess.Popen[str]], timeout: float = RUN_TIMEOUT_S) -> list[str]:
    """Wait for every process (bounded); their output. A failure names each one's output."""
    deadline = time.monotonic() + timeout
    outs = [p.communicate(timeout=max(deadline - time.monotonic(), 1))[0] for p in procs]
    codes = [p.returncode for p in procs]
    assert codes == [0] * len(procs), "\n".join(
        f"--- process {i} (exit {c}):\n{o}" for i, (c, o) in enumerate(zip(codes, outs))
    )
    return outs


def kill(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
    for p in procs:
        p.wait(timeout=30)


def params(out: Path) -> dict:
    tree = restore_checkpoint(out / "checkpoints").tree
    return {"params": tree["params"], "batch_stats": tree["batch_stats"]}


def max_diff(a: dict, b: dict) -> float:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(la, lb, strict=True))


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, list[int]]]:
    """One uninterrupted 2-process run: (spec, run folder, the processes' pids)."""
    root = tmp_path_factory.mktemp("dist")
    spec = root / "tiny.cnn"
    spec.write_text(SPEC)
    procs = start(spec, root / "two")
    try:
        finish(procs)
    finally:
        kill(procs)
    yield spec, root / "two", [p.pid for p in procs]


def test_two_processes_match_one(two_process_run: tuple[Path, Path, list[int]], tmp_path: Path) -> None:
    spec, two, pids = two_process_run
    one = train(cnndsl.load(spec), out=tmp_path / "one", devices=2, quiet=True, plot=False)
    assert one.summary["devices"] == 2 and one.step == 3 * (1294 // 32)
    diff = max_diff(params(two), {"params": one.variables["params"], "batch_stats": one.variables["batch_stats"]})
    assert diff <= 1e-5, f"2 processes vs 1 process (same global batch): max |Δ| = {diff:g}"
    summary = json.loads((two / "summary.json").read_text())
    assert summary["devices"] == 2 and summary["step"] == one.step and summary["stopped"] == "done"
    # Process 0 alone held the folder: its pid is the lock's, and only cnndsl's files are there.
    assert json.loads((two / ".cnndsl.lock").read_text())["pid"] == pids[0]
    listed = json.loads((two / ".cnndsl-run.json").read_text())["files"]
    assert sorted(p.name for p in two.iterdir()) == sorted(listed)
    assert restore_checkpoint(two / "checkpoints").meta["processes"] == 2


def test_resume_with_another_process_count_is_refused(two_process_run: tuple[Path, Path, list[int]]) -> None:
    spec, two, _ = two_process_run
    with pytest.raises(ArgumentError, match="trained by 2 processes; this run has 1") as e:
        train(cnndsl.load(spec), out=two, resume=True, overrides={"epochs": 4}, quiet=True, plot=False)
    assert "--num-processes 2" in e.value.render()


@pytest.mark.slow
def test_killed_two_process_run_resumes(two_process_run: tuple[Path, Path, list[int]], tmp_path: Path) -> None:
    """SIGKILL both processes after the first checkpoint; `--resume` ends where an
    uninterrupted 2-process run ends."""
    spec, two, _ = two_process_run
    out = tmp_path / "killed"
    procs = start(spec, out)
    try:
        wait_for_checkpoint(procs, out)
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
    finally:
        kill(procs)
    saved = restore_checkpoint(out / "checkpoints").meta
    total = 3 * (1294 // 32)
    assert saved["epoch"] < 3, "the run ended before it was killed: nothing left to resume"
    procs = start(spec, out, "--resume")
    try:
        finish(procs)
    finally:
        kill(procs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == total and summary["stopped"] == "done"
    diff = max_diff(params(out), params(two))
    assert diff <= 1e-5, f"resumed vs uninterrupted 2-process run: max |Δ| = {diff:g}"


@pytest.mark.slow
def test_a_signal_to_one_process_stops_both_at_the_same_step(
    two_process_run: tuple[Path, Path, list[int]], tmp_path: Path
) -> None:
    """SIGTERM to process 1 alone (one preempted node): both stop after the same step, with
    no peer left waiting in a collective; process 0 saves it and `--resume` ends where an
    uninterrupted run ends."""
    spec, two, _ = two_process_run
    out = tmp_path / "signalled"
    procs = start(spec, out)
    try:
        wait_for_checkpoint(procs, out)
        procs[1].send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=RUN_TIMEOUT_S)[0] for p in procs]
    finally:
        kill(procs)
    assert [p.returncode for p in procs] == [143, 143], outs  # process 0 stopped by its peer's signal
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "interrupted" and summary["step"] < 3 * (1294 // 32), summary
    assert restore_checkpoint(out / "checkpoints").meta["history"]["step"] == summary["step"]
    procs = start(spec, out, "--resume")
    try:
        finish(procs)
    finally:
        kill(procs)
    diff = max_diff(params(out), params(two))
    assert diff <= 1e-5, f"resumed vs uninterrupted 2-process run: max |Δ| = {diff:g}"


def test_a_peer_that_never_comes_fails_start_up_within_the_join_timeout(tmp_path: Path) -> None:
    spec = tmp_path / "tiny.cnn"
    spec.write_text(SPEC)
    """Process 1 of 2 alone: a cnndsl error and exit 2 after 2 s, not JAX's abort (SIGABRT and a
    C++ stack trace) and not a hang; nothing is written."""
    procs: list[subprocess.Popen[str]] = []
    port = free_port()
    cmd = [sys.executable, "-c", CLI, "train", str(spec), "--out", str(tmp_path / "r"), "--quiet"]
    cmd += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "1", "--join-timeout", "2"]
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "1", "JAX_PLATFORMS": "cpu"}
    try:
        procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)]
        err = procs[0].communicate(timeout=60)[1]
    finally:
        kill(procs)
    assert procs[0].returncode == 2, err
    assert "not every process joined within 2 s" in err and "--join-timeout" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


# --- cheap checks, no second process ---------------------------------------------------------
def test_a_shard_is_augmented_as_its_rows_of_the_whole_batch() -> None:
    x = np.random.default_rng(0).normal(size=(12, 5, 5, 2)).astype(np.float32)
    whole = augment(x, np.random.default_rng((1, 2, 3)), crop=1, flip=True)
    for rows in (slice(0, 6), slice(6, 12), slice(4, 8)):
        part = augment(x[rows], np.random.default_rng((1, 2, 3)), crop=1, flip=True, part=(rows, 12))
        np.testing.assert_array_equal(part, whole[rows])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-processes", "2"], "--coordinator, --process-id missing"),
        (["--coordinator", "127.0.0.1", "--num-processes", "2", "--process-id", "0"], "expected HOST:PORT"),
        (["--coordinator", "127.0.0.1:7777", "--num-processes", "2", "--process-id", "2"], "the ids are 0 to 1"),
        (["--distributed", "--process-id", "1"], "it takes no --process-id"),
        (["--distributed", "--join-timeout", "0"], "--join-timeout 0: give at least 1 second"),
    ],
)
def test_launch_flags_are_checked_before_jax_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    spec = tmp_path / "tiny.cnn"
    spec.write_text(SPEC)
    assert main(["train", str(spec), "--out", str(tmp_path / "r"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
