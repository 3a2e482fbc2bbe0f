"""Issue 9 §4: SIGINT and SIGTERM at any moment of a run (in a step, during validation,
during a save, right after an epoch line, during compilation) leave a run that `--resume`
continues bit for bit to the same weights and history as an uninterrupted run; the CLI
exits 130 / 143. In-process phases are deterministic (the signal is sent from inside the
phase); the subprocess tests signal a real `cnndsl train` at delays after its output lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cnndsl
from cnndsl.cli import main
from cnndsl.training import engine, loop, train
from cnndsl.training.checkpoint import checkpoint_info

from .test_run_folder import TINY

ROOT = Path(__file__).resolve().parents[2]
TIMING = ("time", "images_per_s", "elapsed")


def _history(out: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in h.items() if k not in TIMING} for h in lines]


def _state(out: Path) -> tuple[int, str]:
    """The latest checkpoint's step and the sha256 of its arrays (weights, optimizer state,
    step counter, epoch metrics)."""
    info = checkpoint_info(out / "checkpoints")
    meta = json.loads((info.path / "meta.json").read_text())
    return info.step, meta["sha256"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("signals") / "straight"
    train(cnndsl.loads(TINY), out=out, quiet=True, plot=False)
    return out


def _kill_self(signum: int) -> None:
    os.kill(os.getpid(), signum)


def _once(signum: int, at: int = 1) -> Callable[[], None]:
    calls = []

    def maybe() -> None:
        calls.append(1)
        if len(calls) == at:
            _kill_self(signum)

    return maybe


def _inject(monkeypatch: pytest.MonkeyPatch, phase: str, signum: int) -> None:
    """Send `signum` to this process from inside `phase` of the run."""
    if phase == "step":  # while the 7th step is being dispatched
        fire = _once(signum, 7)
        real_put = engine.Placement.put_batch

        def put(self: Any, *arrays: Any) -> Any:
            if len(arrays) == 2:
                fire()
            return real_put(self, *arrays)

        monkeypatch.setattr(engine.Placement, "put_batch", put)
    elif phase == "validation":
        fire = _once(signum)
        real_eval = loop.evaluate_arrays

        def evaluate(*a: Any, **k: Any) -> Any:
            fire()
            return real_eval(*a, **k)

        monkeypatch.setattr(loop, "evaluate_arrays", evaluate)
    elif phase == "save":
        fire = _once(signum)
        real_save = loop.save_checkpoint

        def save(*a: Any, **k: Any) -> Any:
            fire()
            return real_save(*a, **k)

        monkeypatch.setattr(loop, "save_checkpoint", save)
    elif phase == "after-epoch-line":  # where Ctrl-C used to crash: `Array has been deleted`
        fire = _once(signum)
        real_print = loop._Run._print_epoch

        def print_epoch(self: Any, h: dict) -> None:
            real_print(self, h)
            fire()

        monkeypatch.setattr(loop._Run, "_print_epoch", print_epoch)
    else:  # "compile"
        fire = _once(signum)
        real_make = engine.make_train_step

        def make(*a: Any, **k: Any) -> Any:
            fire()
            return real_make(*a, **k)

        monkeypatch.setattr(engine, "make_train_step", make)


def _check_resume(out: Path, reference: Path) -> None:
    train(cnndsl.loads(TINY), out=out, quiet=True, plot=False, resume=True)
    assert _state(out) == _state(reference)
    assert _history(out) == _history(reference)
    assert (
        json.loads((out / "summary.json").read_text())["test"]
        == json.loads((reference / "summary.json").read_text())["test"]
    )


def _interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phase: str, signum: int) -> Path:
    """Train the tiny net with `cnndsl train` (in this process), signalled in `phase`."""
    out = tmp_path / "run"
    spec = tmp_path / "tiny.cnn"
    spec.write_text(TINY)
    with monkeypatch.context() as m:
        _inject(m, phase, signum)
        rc = main(["train", str(spec), "--out", str(out), "--no-plot", "--quiet"])
    assert rc == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum]
    assert json.loads((out / "summary.json").read_text())["stopped"] == "interrupted"
    return out


@pytest.mark.parametrize(("phase", "signum"), [("step", signal.SIGINT), ("after-epoch-line", signal.SIGTERM)])
def test_a_signal_leaves_a_run_that_resumes_bit_for_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: Path, phase: str, signum: int
) -> None:
    out = _interrupted(tmp_path, monkeypatch, phase, signum)
    step, _ = _state(out)
    assert step == (7 if phase == "step" else 20)  # the last finished step is saved
    _check_resume(out, reference)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("phase", "signum"),
    [("validation", signal.SIGINT), ("save", signal.SIGTERM), ("compile", signal.SIGINT), ("step", signal.SIGTERM)],
)
def test_every_phase_resumes_bit_for_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reference: Path, phase: str, signum: int
) -> None:
    out = _interrupted(tmp_path, monkeypatch, phase, signum)
    if phase == "compile":
        assert not (out / "checkpoints").exists()  # no step finished: nothing to save
    else:  # in a step: the steps before it; validation: the epoch's steps; save: that save completed
        assert _state(out)[0] == (7 if phase == "step" else 20)
    _check_resume(out, reference)


def test_a_second_signal_stops_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        first, second = _once(signal.SIGINT, 3), _once(signal.SIGINT, 1)
        real_put = engine.Placement.put_batch

        def put(self: Any, *arrays: Any) -> Any:
            first()
            if loop.StopRequest and len(arrays) == 2 and _sent[0]:
                second()
            return real_put(self, *arrays)

        _sent = [False]
        m.setattr(engine.Placement, "put_batch", put)
        m.setattr(loop.StopRequest, "_handle", _double_handle(_sent))
        with pytest.raises(KeyboardInterrupt):
            train(cnndsl.loads(TINY), out=tmp_path / "run", quiet=True, plot=False)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are restored


def _double_handle(sent: list[bool]) -> Any:
    real = loop.StopRequest._handle

    def handle(self: Any, signum: int, frame: Any) -> None:
        sent[0] = True
        real(self, signum, frame)

    return handle


# --- a real `cnndsl train` process ------------------------------------------------------------
def _signal_subprocess(spec: Path, out: Path, after: str, delay: float, signum: int) -> tuple[int, str]:
    """Run `cnndsl train`, send `signum` `delay` seconds after the first output line that
    starts with `after`; (exit code, output)."""
    # JAX_NUM_CPU_DEVICES as conftest sets it in-process: XLA's CPU numerics follow the device count
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "JAX_NUM_CPU_DEVICES": str(len(__import__("jax").devices()))}
    cmd = [sys.executable, "-m", "cnndsl", "train", str(spec), "--out", str(out), "--no-plot"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    lines: list[str] = []
    assert p.stdout is not None
    timer = None
    for line in p.stdout:
        lines.append(line)
        if timer is None and line.startswith(after):
            timer = threading.Timer(delay, lambda: p.poll() is None and p.send_signal(signum))
            timer.start()
    rc = p.wait(timeout=300)
    if timer is not None:
        timer.join()
    return rc, "".join(lines)


def _subprocess_case(tmp_path: Path, reference: Path, after: str, delay: float, signum: int) -> str:
    spec = tmp_path / "tiny.cnn"
    spec.write_text(TINY)
    out = tmp_path / "run"
    rc, text = _signal_subprocess(spec, out, after, delay, signum)
    assert "internal error" not in text and "Traceback" not in text, text
    if rc == 0:  # the signal came after the run had finished
        outcome = "finished first"
    else:
        assert rc == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum], text
        finished = json.loads((out / "summary.json").read_text())["stopped"] == "done"  # signalled while exiting
        assert finished or "stopped  (interrupted) after step" in text
        outcome = f"saved step {_state(out)[0]}" if (out / "checkpoints" / "latest").exists() else "nothing saved"
    _check_resume(out, reference)
    return outcome


@pytest.mark.slow
def test_sigterm_to_a_cnndsl_train_process(tmp_path: Path, reference: Path) -> None:
    _subprocess_case(tmp_path, reference, "epoch   1/2", 0.0, signal.SIGTERM)


SWEEP = [
    ("out      ", 0.0, signal.SIGINT),
    ("out      ", 0.03, signal.SIGTERM),
    ("out      ", 0.1, signal.SIGINT),
    ("out      ", 0.3, signal.SIGTERM),
    ("epoch   1/2", 0.0, signal.SIGINT),
    ("epoch   1/2", 0.01, signal.SIGTERM),
    ("epoch   1/2", 0.05, signal.SIGINT),
    ("epoch   1/2", 0.2, signal.SIGTERM),
    ("epoch   2/2", 0.0, signal.SIGINT),
    ("test     ", 0.0, signal.SIGTERM),
]


@pytest.mark.slow
@pytest.mark.parametrize(("after", "delay", "signum"), SWEEP)
def test_signal_sweep_on_cnndsl_train(tmp_path: Path, reference: Path, after: str, delay: float, signum: int) -> None:
    outcome = _subprocess_case(tmp_path, reference, after, delay, signum)
    print(f"{signal.Signals(signum).name} {delay:.2f} s after `{after.strip()}`: {outcome}; resumed bit for bit")
