"""Timing utilities for the benchmarks: interleaved repetitions, robust statistics, reports.

Method (what `run_interleaved` does):

1. Warm-up, excluded from the statistics: each contender runs until its first call (which
   traces and compiles) has finished, then a few more calls; the warm-up also calibrates
   `inner`, the number of calls per sample, so that a sample lasts about `min_sample_s`.
2. Repetitions are interleaved across contenders, A B C A B C ..., so that slow drifts of
   the machine (thermal, other processes) hit every contender alike.
3. A sample times `inner` calls with `time.perf_counter`, waiting for the device with
   `jax.block_until_ready` (after every call, or only after the last one for chained train
   steps whose state is donated: each step depends on the previous one, so blocking on the
   last state waits for all of them, while still letting Python dispatch ahead as a real
   training loop does). PyTorch eager on CPU is synchronous, so the wait is a no-op there.
4. The machine may be shared: a sample during which other processes used more than 10% of
   the CPU time (from /proc/stat) is taken again, a few times at most (`CpuMeter`).
5. Statistics over the samples: median and interquartile range of the time per call, images/s
   at the median, and the speed ratio against a named baseline (> 1 means faster).

Also here: the float32 matmul peak of this machine (`matmul_peak`), achieved GFLOP/s of a
step from a FLOP count passed in (`gflops`), XLA's own FLOP count (`xla_flops`), a machine
description (`machine_info`), and rendering as Markdown and JSON.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True, slots=True)
class Contender:
    """One implementation of a model, as three callables the benchmark drives.

    * `init(batch, seed) -> (state, x, y)`: builds the model and optimizer and one batch of
      inputs in the contender's own format (e.g. NHWC `jax.Array`s, NCHW `torch.Tensor`s);
    * `train_step(state, x, y) -> (state, loss)`: one forward + backward + optimizer update;
      may donate or update `state` in place, so the harness always passes the returned one;
    * `infer(state, x) -> logits`: inference (eval mode).

    `jitted`, for JAX contenders, returns the `jax.jit` objects `(train_step, infer)` made by
    the last `init`, with the same arguments, so that `xla_flops` can read XLA's FLOP count.
    """

    init: Callable[[int, int], tuple[Any, Any, Any]]
    train_step: Callable[[Any, Any, Any], tuple[Any, Any]]
    infer: Callable[[Any, Any], Any]
    framework: str = "jax"
    description: str = ""
    jitted: Callable[[], tuple[Any, Any]] | None = None


@dataclass(frozen=True, slots=True)
class Timing:
    """Statistics of one contender's samples; times are seconds per call."""

    samples: tuple[float, ...]
    inner: int
    median: float
    q25: float
    q75: float
    finite: bool = True
    retakes: int = 0  # samples taken again because other processes loaded the CPU
    max_other_load: float | None = None  # worst other-process CPU share among kept samples

    @property
    def iqr(self) -> float:
        return self.q75 - self.q25

    @staticmethod
    def of(
        samples: Sequence[float],
        inner: int,
        finite: bool = True,
        retakes: int = 0,
        max_other_load: float | None = None,
    ) -> Timing:
        xs = sorted(samples)
        if len(xs) >= 2:
            q25, _, q75 = statistics.quantiles(xs, n=4, method="inclusive")
        else:
            q25 = q75 = xs[0]
        return Timing(tuple(samples), inner, statistics.median(xs), q25, q75, finite, retakes, max_other_load)


def block(x: Any) -> Any:
    """Wait until every JAX array in the pytree `x` is computed (other leaves pass through)."""
    return jax.block_until_ready(x)


def all_finite(x: Any) -> bool:
    """True when every floating-point array leaf of `x` (JAX, NumPy, PyTorch CPU) is finite.

    Leaves that are not arrays (e.g. a PyTorch module in a train state) are ignored.
    """
    arrays = (np.asarray(leaf) for leaf in jax.tree.leaves(x) if hasattr(leaf, "dtype"))
    return all(bool(np.isfinite(a).all()) for a in arrays if a.dtype.kind in "fc")


class CpuMeter:
    """How much of the machine's CPU other processes used between `start()` and `stop()`.

    Reads /proc/stat (all CPUs, steal included) and this process's CPU time; returns None
    where /proc/stat is missing. A benchmark on a shared machine uses it to notice samples
    disturbed by other work (a test suite started by someone else, a noisy VM neighbour).
    """

    def __init__(self) -> None:
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._t0: tuple[float, float, float] | None = None

    def _snapshot(self) -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                vals = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        total = sum(vals)
        busy = total - vals[3] - vals[4]  # minus idle and iowait
        t = os.times()
        return busy / self._hz, total / self._hz, t.user + t.system

    def start(self) -> None:
        self._t0 = self._snapshot()

    def wait_quiet(self, max_other_load: float, max_wait_s: float, window_s: float = 0.5) -> float | None:
        """Sleep in `window_s` windows until other processes use at most `max_other_load` of
        the CPU (or `max_wait_s` has passed); returns the last window's load."""
        deadline = time.perf_counter() + max_wait_s
        load = None
        while True:
            self.start()
            time.sleep(window_s)
            load = self.stop()
            if load is None or load <= max_other_load or time.perf_counter() >= deadline:
                return load

    def stop(self) -> float | None:
        """Fraction (0..1) of all CPUs' time spent by other processes since `start()`."""
        t1 = self._snapshot()
        # Below ~0.1 CPU-seconds the 10 ms clock ticks make the estimate meaningless.
        if self._t0 is None or t1 is None or t1[1] - self._t0[1] < 0.1:
            return None
        busy, total, own = (b - a for a, b in zip(self._t0, t1, strict=True))
        return min(1.0, max(0.0, (busy - own) / total))


class QuietBudget:
    """How long a whole benchmark run may wait for a quiet CPU, across every
    `run_interleaved` call: once it is spent, disturbed samples are kept (their load is
    reported) instead of waited out, so a machine that stays busy costs at most `limit_s`."""

    def __init__(self, limit_s: float = 60.0) -> None:
        self.limit_s = limit_s
        self.waited_s = 0.0
        self.told_spent = False

    @property
    def left_s(self) -> float:
        return max(0.0, self.limit_s - self.waited_s)


QUIET = QuietBudget()  # the process's budget (bench scripts may replace it: `harness.QUIET = QuietBudget(120)`)


def _say(text: str) -> None:
    """A progress line on stderr, so stdout keeps only the results."""
    print(f"harness: {text}", file=sys.stderr, flush=True)


def run_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    *,
    reps: int,
    min_sample_s: float = 0.2,
    warmup_calls: int = 2,
    sync_each: bool = True,
    check: Callable[[Any], bool] = all_finite,
    max_other_load: float = 0.1,
    max_retries: int = 3,
    quiet_wait_s: float = 30.0,
    quiet: QuietBudget | None = None,
) -> dict[str, Timing]:
    """Time each zero-argument callable in `fns` with interleaved repetitions.

    Each `fns[name]()` performs one call (a train step or an inference) and returns what to
    wait for. `sync_each=False` waits only after the last call of a sample: use it only when
    every call depends on the previous one. `check` is applied to the last output of each
    contender (NaN watch: see STYLE.md's note on jaxlib 0.10.2's YNNPACK fusion).

    A sample during which other processes used more than `max_other_load` of the machine's
    CPU time is taken again, after waiting (up to `quiet_wait_s`) for the machine to quiet
    down, up to `max_retries` times per sample; the count of retakes and the worst load kept
    are in the `Timing`. All waiting draws on `quiet` (default `QUIET`: 60 s for the whole
    run), and each wait says on stderr what it waits for; so does the start of the timing,
    with its expected length.
    """
    quiet = QUIET if quiet is None else quiet
    inner: dict[str, int] = {}
    per_call: dict[str, float] = {}
    last: dict[str, Any] = {}
    for name, fn in fns.items():
        block(fn())  # compile
        t0 = time.perf_counter()
        for _ in range(warmup_calls):
            out = fn()
            if sync_each:
                block(out)
        block(out)
        per_call[name] = max((time.perf_counter() - t0) / warmup_calls, 1e-7)
        inner[name] = max(1, round(min_sample_s / per_call[name]))
    expected = reps * sum(inner[n] * per_call[n] for n in fns)
    _say(f"timing {', '.join(fns)}: {reps} interleaved rounds, about {expected:.0f} s on a quiet CPU")
    samples: dict[str, list[float]] = {name: [] for name in fns}
    retakes = dict.fromkeys(fns, 0)
    loads: dict[str, list[float]] = {name: [] for name in fns}
    meter = CpuMeter()
    for _ in range(reps):
        for name, fn in fns.items():
            n = inner[name]
            for attempt in range(max_retries + 1):
                meter.start()
                t0 = time.perf_counter()
                for _ in range(n):
                    out = fn()
                    if sync_each:
                        block(out)
                block(out)
                elapsed = time.perf_counter() - t0
                load = meter.stop()
                if load is None or load <= max_other_load or attempt == max_retries:
                    break
                retakes[name] += 1
                budget = min(quiet_wait_s, quiet.left_s)
                if budget <= 0:
                    if not quiet.told_spent:
                        _say(
                            f"no longer waiting for a quiet CPU ({quiet.limit_s:.0f} s spent waiting in all):"
                            " disturbed samples are kept and their load is reported"
                        )
                        quiet.told_spent = True
                    break
                _say(
                    f"{name}: other processes used {100 * load:.0f}% of the CPU during a sample (limit"
                    f" {100 * max_other_load:.0f}%); waiting up to {budget:.0f} s for it to quiet down"
                    f" (retake {attempt + 1} of {max_retries}; {quiet.left_s:.0f} s of waiting left for the run)"
                )
                w0 = time.perf_counter()
                meter.wait_quiet(max_other_load, max_wait_s=budget)
                quiet.waited_s += time.perf_counter() - w0
            samples[name].append(elapsed / n)
            if load is not None:
                loads[name].append(load)
            last[name] = out
    return {
        name: Timing.of(
            samples[name],
            inner[name],
            check(last[name]),
            retakes=retakes[name],
            max_other_load=max(loads[name]) if loads[name] else None,
        )
        for name in fns
    }


# --------------------------------------------------------------------------------------
# FLOPs


def matmul_peak(n: int = 2048, reps: int = 7, min_sample_s: float = 0.2, max_retries: int = 3) -> dict[str, float]:
    """Measured float32 matmul throughput of a jitted `(n, n) @ (n, n)` in JAX (2 n^3 FLOPs).

    Returns `{"n", "median_s", "gflops", "gflops_q25", "gflops_q75"}`; the GFLOP/s quartiles
    come from the time quartiles (a slower sample gives fewer GFLOP/s).
    """
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (n, n), jnp.float32)
    b = jax.random.normal(key_b, (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    t = run_interleaved({"matmul": lambda: f(a, b)}, reps=reps, min_sample_s=min_sample_s, max_retries=max_retries)[
        "matmul"
    ]
    flops = 2.0 * n**3
    return {
        "n": float(n),
        "median_s": t.median,
        "gflops": flops / t.median / 1e9,
        "gflops_q25": flops / t.q75 / 1e9,
        "gflops_q75": flops / t.q25 / 1e9,
    }


def gflops(flops: float, seconds: float) -> float:
    """Achieved GFLOP/s of a step that does `flops` FLOPs in `seconds`."""
    return flops / seconds / 1e9


def xla_flops(jitted: Any, *args: Any) -> float | None:
    """XLA's FLOP count for `jitted(*args)` (`lower(...).compile().cost_analysis()`).

    A cross-check of the analytic count: XLA counts elementwise work too, and a multiply-add as
    2 FLOPs. Returns None when the backend does not report it.
    """
    try:
        cost = jitted.lower(*args).compile().cost_analysis()
    except Exception:  # noqa: BLE001 - cost analysis is best-effort on every backend
        return None
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


# --------------------------------------------------------------------------------------
# Machine description


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (falls back to `platform.processor()`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags(wanted: Sequence[str] = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "fma")) -> list[str]:
    """Which of the `wanted` SIMD features /proc/cpuinfo lists."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def machine_info() -> dict[str, Any]:
    """CPU, core count, library versions, XLA flags and date, for the results header."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "versions": {name: _version(name) for name in ("jax", "jaxlib", "flax", "optax", "numpy", "torch")},
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --------------------------------------------------------------------------------------
# Results


@dataclass(slots=True)
class Result:
    """One row of results: a contender on one model, batch size and mode."""

    model: str
    batch: int
    mode: str  # "train" | "infer"
    contender: str
    median_s: float
    q25_s: float
    q75_s: float
    iqr_s: float
    images_per_s: float
    inner: int
    samples_s: list[float]
    finite: bool
    retakes: int = 0
    max_other_load: float | None = None
    baseline: str | None = None
    ratio_vs_baseline: float | None = None
    flops: float | None = None
    gflops: float | None = None
    fraction_of_peak: float | None = None
    xla_flops: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def make_results(
    timings: Mapping[str, Timing],
    *,
    model: str,
    batch: int,
    mode: str,
    baseline: str | None,
    flops: float | None = None,
    peak_gflops: float | None = None,
) -> list[Result]:
    """Turn timings into `Result` rows with images/s, ratio vs `baseline` and GFLOP/s."""
    base = timings.get(baseline) if baseline else None
    rows = []
    for name, t in timings.items():
        g = gflops(flops, t.median) if flops else None
        rows.append(
            Result(
                model=model,
                batch=batch,
                mode=mode,
                contender=name,
                median_s=t.median,
                q25_s=t.q25,
                q75_s=t.q75,
                iqr_s=t.iqr,
                images_per_s=batch / t.median,
                inner=t.inner,
                samples_s=list(t.samples),
                finite=t.finite,
                retakes=t.retakes,
                max_other_load=t.max_other_load,
                baseline=baseline if base else None,
                ratio_vs_baseline=base.median / t.median if base else None,
                flops=flops,
                gflops=g,
                fraction_of_peak=g / peak_gflops if g and peak_gflops else None,
            )
        )
    return rows


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def results_markdown(rows: Sequence[Result], peak_gflops: float | None = None) -> str:
    """A Markdown table, one row per result, grouped as given."""
    head = (
        "| model | batch | mode | contender | img/s | median ms | IQR ms | vs baseline "
        "| GFLOP/s | % peak | other CPU | finite |\n"
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for r in rows:
        ratio = f"{r.ratio_vs_baseline:.2f}x" if r.ratio_vs_baseline is not None else "—"
        frac = f"{100 * r.fraction_of_peak:.0f}%" if r.fraction_of_peak is not None else "—"
        other = f"{100 * r.max_other_load:.0f}%" if r.max_other_load is not None else "—"
        lines.append(
            f"| {r.model} | {r.batch} | {r.mode} | {r.contender} | {r.images_per_s:,.0f} "
            f"| {1e3 * r.median_s:.2f} | {1e3 * r.iqr_s:.2f} | {ratio} "
            f"| {_fmt(r.gflops, '.1f')} | {frac} | {other} | {'yes' if r.finite else '**NaN**'} |"
        )
    note = (
        f"\nGFLOP/s counts conv and dense layers (2 FLOPs per multiply-add, train step = 3x forward); "
        f"% peak is relative to the measured float32 matmul peak of {peak_gflops:.0f} GFLOP/s. "
        "'other CPU' is the largest share of the machine's CPU time that other processes used "
        "during a kept sample (samples above 10% are retaken a few times).\n"
        if peak_gflops
        else ""
    )
    return head + "\n".join(lines) + "\n" + note


def machine_markdown(info: Mapping[str, Any], peak: Mapping[str, float] | None = None) -> str:
    """The machine description as a Markdown bullet list."""
    v = info["versions"]
    lines = [
        (
            f"- CPU: {info['cpu']} ({info['usable_cores']} usable of {info['cores']} cores; "
            f"{', '.join(info['cpu_flags']) or 'no listed SIMD flags'})"
        ),
        f"- {info['platform']}, Python {info['python']}, JAX backend `{info['jax_backend']}`",
        "- " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
        f"- XLA_FLAGS: `{info['xla_flags'] or '(unset)'}`",
        f"- date: {info['date']}",
    ]
    if peak:
        lines.append(
            f"- float32 matmul peak (jitted {int(peak['n'])}x{int(peak['n'])} @ "
            f"{int(peak['n'])}x{int(peak['n'])}): {peak['gflops']:.0f} GFLOP/s "
            f"(IQR {peak['gflops_q25']:.0f}-{peak['gflops_q75']:.0f})"
        )
    return "\n".join(lines) + "\n"


def write_json(path: str, payload: Mapping[str, Any]) -> None:
    """Write `payload` (dataclasses converted) as indented JSON."""

    def default(o: Any) -> Any:
        if isinstance(o, Result):
            return asdict(o)
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(f"not JSON serializable: {type(o).__name__}")

    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1, default=default)
        f.write("\n")
