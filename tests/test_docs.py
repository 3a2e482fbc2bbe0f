"""The docs are true: the language reference documents every layer name the registry accepts,
and every command output README.md and docs/ show is what cnndsl prints (issue 13, item 13)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from cnndsl.ops import REGISTRY

from .conftest import ROOT


def test_every_op_is_in_docs_language():
    text = (ROOT / "docs" / "language.md").read_text()
    missing = [name for name in REGISTRY if not re.search(rf"`{name}\b", text)]
    assert not missing, f"undocumented layers: {missing}"


def test_every_op_has_a_doc_line():
    assert all(op.doc for op in REGISTRY.values())


# --- every command output the README and docs/ show comes from the code as it is -------------
# A fenced block (not ```python) whose lines start with `$ ` shows commands, each followed by
# its output. The test runs them and compares, line for line, after masking what depends on
# the machine (the docs say so under each block): timings (`0.1 s`, `compiled in 1.5 s`),
# throughput (`8,922 img/s`) and the device (`1 × cpu`). A line `...` in a shown output stands
# for any number of lines. Compile-only commands run in the default suite; those that train
# are slow.

FENCE = re.compile(r"^```(\w*)\s*$")
MASKS = (
    (re.compile(r"\b\d[\d,]*(\.\d+)? s\b"), "<time> s"),
    (re.compile(r"\b[\d,]+ img/s\b"), "<rate> img/s"),
    (re.compile(r"\b\d+ × \w+\b"), "<devices>"),
)
DOCS = ("README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))
# Shown outputs the test does not reproduce, and why (any other shown output must be run).
NOT_RUN: dict[str, str] = {}


@dataclass(frozen=True)
class Shown:
    doc: str
    line: int
    command: str
    output: tuple[str, ...]

    @property
    def argv(self) -> list[str]:
        return shlex.split(os.path.expandvars(self.command.split("  #")[0]))

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: $ {self.command}"


def shown_commands(doc: str) -> list[Shown]:
    """The `$ command` lines of `doc`'s shell blocks, each with the output shown under it."""
    out: list[Shown] = []
    fence: str | None = None
    current: tuple[int, str, list[str]] | None = None

    def close() -> None:
        nonlocal current
        if current is not None:
            n, cmd, lines = current
            while lines and not lines[-1].strip():
                lines.pop()
            out.append(Shown(doc, n, cmd, tuple(lines)))
            current = None

    for n, line in enumerate((ROOT / doc).read_text().splitlines(), 1):
        m = FENCE.match(line)
        if m and fence is None:
            fence = m[1]
            continue
        if m:
            close()
            fence = None
            continue
        if fence != "" or fence is None:
            continue
        if line.startswith("$ "):
            close()
            current = (n, line[2:].strip(), [])
        elif current is not None:
            current[2].append(line)
    return out


def masked(lines: list[str] | tuple[str, ...]) -> list[str]:
    out = []
    for line in lines:
        for pattern, repl in MASKS:
            line = pattern.sub(repl, line)
        out.append(line.rstrip())
    return out


def matches(shown: tuple[str, ...], got: list[str]) -> bool:
    """`got` equals `shown` after masking, a `...` line in `shown` standing for any lines."""
    want, have = masked(shown), masked(got)
    parts: list[list[str]] = [[]]
    for line in want:
        if line.strip() == "...":
            parts.append([])
        else:
            parts[-1].append(line)
    if len(parts) == 1:
        return want == have
    if have[: len(parts[0])] != parts[0] or (parts[-1] and have[-len(parts[-1]) :] != parts[-1]):
        return False
    at, end = len(parts[0]), len(have) - len(parts[-1])
    for part in parts[1:-1]:
        while at <= end - len(part) and have[at : at + len(part)] != part:
            at += 1
        if at > end - len(part):
            return False
        at += len(part)
    return at <= end


def run_shown(s: Shown, cwd: Path) -> list[str]:
    """Run a shown command in `cwd` as a user would (stdout and stderr in the order printed)."""
    argv = s.argv
    if argv[0] == "cat":
        return (cwd / argv[1]).read_text().splitlines()
    assert argv[0] == "cnndsl", f"{s}: only `cnndsl` and `cat` commands can be checked"
    from cnndsl.cli import main

    buf = io.StringIO()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            main(argv[1:])
    finally:
        os.chdir(old)
    return buf.getvalue().splitlines()


ALL_SHOWN = [s for doc in DOCS for s in shown_commands(doc)]
WITH_OUTPUT = [s for s in ALL_SHOWN if s.output]


def compile_only(s: Shown) -> bool:
    a = s.argv
    return a[0] == "cat" or (a[0] == "cnndsl" and a[1] in ("compile", "fmt") and "--xla" not in a)


def test_the_docs_show_commands_and_every_one_is_checked() -> None:
    assert any(s.command == "cnndsl compile examples/lenet5.cnn" for s in WITH_OUTPUT)
    assert any(s.command == "cat docs/examples/broken.cnn" for s in WITH_OUTPUT)
    odd = [str(s) for s in WITH_OUTPUT if s.command not in NOT_RUN and s.argv[0] not in ("cat", "cnndsl")]
    assert not odd, f"shown outputs of commands the test cannot run (add them to NOT_RUN with why): {odd}"
    assert set(NOT_RUN) <= {s.command for s in WITH_OUTPUT}, "NOT_RUN names a command the docs no longer show"


@pytest.mark.parametrize("shown", [s for s in WITH_OUTPUT if compile_only(s)], ids=str)
def test_a_compile_output_in_the_docs_is_what_cnndsl_prints(shown: Shown, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    got = run_shown(shown, ROOT)
    assert matches(shown.output, got), f"{shown} shows\n" + "\n".join(shown.output) + "\nbut prints\n" + "\n".join(got)


def test_the_matcher_masks_machine_figures_and_elides() -> None:
    assert matches(
        ("time     7.6 s in all, 1.1 s training · 12,188 img/s",), ["time     3.0 s in all, 0.9 s training · 9 img/s"]
    )
    assert not matches(("accuracy 99.72%",), ["accuracy 99.16%"])
    assert matches(("a", "...", "z"), ["a", "b", "c", "z"]) and matches(("a", "...", "z"), ["a", "z"])
    assert not matches(("a", "...", "z"), ["a", "b"]) and not matches(("a", "b"), ["a", "b", "c"])
    assert masked(["devices  1 × cpu · float32"]) == ["devices  <devices> · float32"]


# --- the commands that run networks (train, predict, eval, viz): slow -------------------------
RUNS_JAX = [s for s in WITH_OUTPUT if not compile_only(s) and s.command not in NOT_RUN]


@pytest.mark.slow
@pytest.mark.parametrize("doc", sorted({s.doc for s in RUNS_JAX}))
def test_a_session_in_the_docs_is_what_cnndsl_prints(doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A doc's commands in order, in a fresh folder holding the examples (runs/ is written
    there) and the files the docs name: `seven.png` is the first 7 of the digits test split
    (docs/training.md says so), `$CHINA` scikit-learn's sample photo."""
    import numpy as np
    import sklearn
    from PIL import Image

    from cnndsl.shape import Shape
    from cnndsl.training.data import load_dataset

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setenv("CHINA", str(Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"))
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / "docs").mkdir()
    ds = load_dataset("digits", Shape(1, (8, 8)))
    seven = ds.x_test[int(np.flatnonzero(ds.y_test == 7)[0]), :, :, 0]
    Image.fromarray(seven.astype(np.uint8)).save(tmp_path / "seven.png")
    if any(s.argv[1] == "import-weights" for s in RUNS_JAX if s.doc == doc):
        import torch

        from .interop.torch_reference import BasicBlock, ResNet

        torch.manual_seed(0)  # torchvision's ResNet-18 layout: the mapping table depends on names and shapes only
        torch.save(ResNet(BasicBlock, [2, 2, 2, 2]).state_dict(), tmp_path / "resnet18-f37072fd.pth")
    for s in [s for s in RUNS_JAX if s.doc == doc]:
        got = run_shown(s, tmp_path)
        assert matches(s.output, got), f"{s} shows\n" + "\n".join(s.output) + "\nbut prints\n" + "\n".join(got)


# --- benchmarks: what bench_train.py waits for, said and capped --------------------------------
def test_the_harness_says_what_it_waits_for_and_caps_the_wait(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys
    import time

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import harness
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    def busy_wait(self: object, max_other_load: float, max_wait_s: float, window_s: float = 0.5) -> float:
        time.sleep(max_wait_s)  # the machine never quiets down
        return 0.9

    monkeypatch.setattr(harness.CpuMeter, "stop", lambda self: 0.9)  # every sample disturbed
    monkeypatch.setattr(harness.CpuMeter, "wait_quiet", busy_wait)
    budget = harness.QuietBudget(limit_s=0.3)
    t0 = time.perf_counter()
    t = harness.run_interleaved(
        {"a": lambda: 1.0, "b": lambda: 2.0}, reps=4, min_sample_s=0.001, quiet_wait_s=0.2, quiet=budget
    )
    waited = time.perf_counter() - t0
    assert budget.waited_s == pytest.approx(0.3, abs=0.1) and waited < 1.5  # not 4 x 2 x 3 x 0.2 s
    assert len(t["a"].samples) == 4 and t["a"].max_other_load == 0.9  # kept, their load reported
    err = capsys.readouterr().err
    assert "harness: timing a, b: 4 interleaved rounds, about 0 s on a quiet CPU" in err
    assert "a: other processes used 90% of the CPU during a sample (limit 10%); waiting up to 0 s" in err
    assert err.count("no longer waiting for a quiet CPU (0 s spent waiting in all)") == 1
