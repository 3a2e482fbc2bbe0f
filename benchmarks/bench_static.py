"""Static checking: how long `cnndsl compile` takes to know every shape, against asking JAX.

    python benchmarks/bench_static.py                     # ResNet-50, 7 reps (a minute or two on 2 cores)
    python benchmarks/bench_static.py --tiny              # LeNet-5, 2 reps (CI smoke configuration, seconds)
    python benchmarks/bench_static.py --model examples/vgg16.cnn --reps 11 --out static.json --md static.md

Rows (all in this one process, except the `process:` rows, which time a fresh Python process):

* `cnndsl.load`: parse + block expansion + shape inference + parameter/MAC counts + receptive
  fields, all in pure Python (no JAX). The first call also imports Lark and builds (or reads
  from its on-disk cache) the LALR parser, which is then kept: first call and warm median differ.
* `Net.functional`: JAX's route needs a model first; this builds the `apply` function and
  initializes real variables. Shown for context, not part of the ratios.
* `jax.eval_shape`: traces the forward pass (batch 1, `jax.ShapeDtypeStruct` variables and
  input) to get the output shape. JAX caches traces by function, so every repetition traces a
  fresh lambda (the honest cost of a shape check); `eval_shape (cache hit)` re-uses one callable.
* `nnx.tabulate`: Flax's model summary of `net.build(...)` in eval mode on zeros of batch 1
  (it traces and jits every module method; each call re-traces). If it fails on cnndsl's
  `Model`, the error is recorded instead of a time.
* `process: cnndsl compile [--json]`: wall time of the CLI (the console script next to
  `sys.executable`), exit status checked; `process: python -c "import jax"` and `python -c pass`
  put it in context (`cnndsl compile` never imports JAX; the run checks that too).

Every row is first called once, in the order above, in a process that has not yet parsed or
traced anything ("first call", reported apart), then `--reps` times, interleaved: one round calls
every row once, so slow drifts of the machine hit all rows alike.
Statistics: median and interquartile range (benchmarks/harness.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cnndsl  # before JAX starts: sets XLA_FLAGS

# Runnable as a script (`python benchmarks/bench_static.py`) and importable as a module.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness
import jax
import jax.numpy as jnp
from flax import nnx

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "examples" / "resnet50.cnn"
TINY_MODEL = ROOT / "examples" / "lenet5.cnn"

WHAT = {
    "load": "`cnndsl.load(path)`: parse + expansion + shape inference + costs + RF (no JAX)",
    "functional": "`Net.functional(key)`: build apply + init real variables (context only)",
    "eval_shape": "`jax.eval_shape` of the forward, fresh trace each call (batch 1)",
    "eval_shape_cached": "`jax.eval_shape` of the forward, same callable (JAX's trace cache hit)",
    "tabulate": "`nnx.tabulate(net.build(...), zeros)`, eval mode, batch 1",
    "cli_compile": "process: `cnndsl compile FILE` (wall time, exit 0)",
    "cli_compile_json": "process: `cnndsl compile --json FILE` (wall time, exit 0)",
    "python_import_jax": 'process: `python -c "import jax"`',
    "python_startup": "process: `python -c pass` (interpreter start-up)",
}


def cli_command() -> list[str]:
    """The `cnndsl` console script next to this interpreter, else the same entry point via `-c`.

    (`python -m cnndsl` does not work: the package has no `__main__`.)
    """
    script = Path(sys.executable).with_name("cnndsl")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from cnndsl.cli import main; sys.exit(main())"]


def run_process(cmd: Sequence[str]) -> str:
    """Run `cmd` to completion; returns its stdout, raises when the exit status is not 0."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


def cli_imports_jax(path: str) -> bool:
    """Whether running `cnndsl compile PATH` (in a fresh process) imports JAX."""
    code = (
        "import contextlib, io, sys\nfrom cnndsl.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n    rc = main(['compile', {path!r}])\n"
        "print(rc, 'jax' in sys.modules)"
    )
    rc, imported = run_process([sys.executable, "-c", code]).split()
    if rc != "0":
        raise RuntimeError(f"cnndsl compile {path} returned {rc}")
    return imported == "True"


def setup(path: str) -> tuple[dict[str, Callable[[], Any]], dict[str, float], dict[str, str], dict[str, Any]]:
    """Every row's first call, in this order in a fresh process, and the callables to repeat.

    Returns the callables, first-call times, errors (a row whose first call raised: left out of
    the callables) and the checks made along the way.
    """
    first: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        first[name] = time.perf_counter() - t0
        return out

    net = timed("load", lambda: cnndsl.load(path))
    variables, apply = timed("functional", lambda: net.functional(jax.random.key(0)))
    spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), variables)
    x_spec = jax.ShapeDtypeStruct(net.input.array_shape(1), jnp.float32)
    cached = lambda v, x: apply(v, x)  # one callable, so that JAX's trace cache hits
    out = timed("eval_shape", lambda: jax.eval_shape(cached, spec, x_spec))  # the first trace in the process
    timed("eval_shape_cached", lambda: jax.eval_shape(cached, spec, x_spec))
    model = net.build(rngs=nnx.Rngs(0))
    model.eval()
    x = jnp.zeros(net.input.array_shape(1), jnp.float32)
    cli = cli_command()
    fns: dict[str, Callable[[], Any]] = {
        "load": lambda: cnndsl.load(path),
        "functional": lambda: net.functional(jax.random.key(0)),
        "eval_shape": lambda: jax.eval_shape(lambda v, x: apply(v, x), spec, x_spec),
        "eval_shape_cached": lambda: jax.eval_shape(cached, spec, x_spec),
        "cli_compile": lambda: run_process([*cli, "compile", path]),
        "cli_compile_json": lambda: json.loads(run_process([*cli, "compile", "--json", path])),
        "python_import_jax": lambda: run_process([sys.executable, "-c", "import jax"]),
        "python_startup": lambda: run_process([sys.executable, "-c", "pass"]),
        # Last: a failing nnx.tabulate (flax 0.12.8) leaves its patches on the methods of the
        # classes it wrapped (no try/finally), so nothing after it may use those classes.
        "tabulate": lambda: nnx.tabulate(model, x),
    }
    for name in ("cli_compile", "cli_compile_json", "python_import_jax", "python_startup"):
        timed(name, fns[name])
    checks = {
        "static_output_shape": list(net.output.array_shape(1)),
        "eval_shape_output_shape": list(out.shape),
        "shapes_agree": tuple(out.shape) == net.output.array_shape(1),
        "cli_command": [*cli, "compile", path],
        "cli_imports_jax": cli_imports_jax(path),
    }
    errors: dict[str, str] = {}
    try:
        timed("tabulate", fns["tabulate"])
    except Exception as e:  # noqa: BLE001 - a failing contender is a result, not a crash
        errors["tabulate"] = f"{type(e).__name__}: {str(e)[:500]}"
        del fns["tabulate"]
    return fns, first, errors, checks


def measure(fns: dict[str, Callable[[], Any]], reps: int) -> tuple[dict[str, list[float]], list[float]]:
    """`reps` interleaved rounds, each calling every row once.

    Returns the samples (seconds) and the share of the CPU other processes used in each round.
    """
    samples: dict[str, list[float]] = {name: [] for name in fns}
    loads: list[float] = []
    meter = harness.CpuMeter()
    for _ in range(reps):
        meter.start()
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
        load = meter.stop()
        if load is not None:
            loads.append(load)
    return samples, loads


def stats(first: dict[str, float], samples: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Per row: what it measures, the first call, and median / quartiles of the repetitions."""
    out = {}
    for name, xs in samples.items():
        t = harness.Timing.of(xs, 1)
        out[name] = {
            "what": WHAT[name], "first_s": first[name], "median_s": t.median, "q25_s": t.q25, "q75_s": t.q75,
            "iqr_s": t.iqr, "samples_s": list(xs),
        }  # fmt: skip
    return out


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Time ratios (> 1: the left side is slower); None where a row failed."""

    def ratio(a: str, b: str, key: str = "median_s") -> float | None:
        return results[a][key] / results[b][key] if a in results and b in results else None

    return {
        "eval_shape first / load first": ratio("eval_shape", "load", "first_s"),
        "eval_shape fresh trace / load warm": ratio("eval_shape", "load"),
        "tabulate first / load first": ratio("tabulate", "load", "first_s"),
        "tabulate / load warm": ratio("tabulate", "load"),
        "process: cnndsl compile / python -c 'import jax'": ratio("cli_compile", "python_import_jax"),
        "process: cnndsl compile / python -c pass": ratio("cli_compile", "python_startup"),
    }


def markdown(payload: dict[str, Any]) -> str:
    m, results = payload["model"], payload["results"]
    lines = [
        (
            f"Static checking of {m['file']} ({m['name']}: {m['layers']} layers, {m['params']:,} params, "
            f"{m['input']} -> {m['output']}); {payload['config']['reps']} interleaved repetitions.\n"
        ),
        "| row | what it measures | first call (ms) | median (ms) | IQR (ms) |",
        "|---|---|---:|---:|---:|",
    ]
    for name, what in WHAT.items():
        if name in results:
            r = results[name]
            lines.append(
                f"| {name} | {what} | {1e3 * r['first_s']:.1f} | {1e3 * r['median_s']:.1f} | {1e3 * r['iqr_s']:.1f} |"
            )
        elif name in payload["errors"]:
            lines.append(f"| {name} | {what} | **failed** | — | — |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    for name, value in payload["ratios"].items():
        lines.append(f"| {name} | {'—' if value is None else f'{value:.3g}'} |")
    c = payload["checks"]
    cli = [Path(c["cli_command"][0]).name, *c["cli_command"][1:-1], payload["model"]["file"]]
    lines += [
        "",
        (
            f"- output shape (batch 1): cnndsl {tuple(c['static_output_shape'])}, jax.eval_shape "
            f"{tuple(c['eval_shape_output_shape'])}: {'agree' if c['shapes_agree'] else '**DISAGREE**'}"
        ),
        f"- `{' '.join(cli)}` imports JAX: {'**yes**' if c['cli_imports_jax'] else 'no'}",
    ]
    lines += [f"- error in {name}: `{err}`" for name, err in payload["errors"].items()]
    lines += [f"- note: {n}" for n in payload["notes"]]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="LeNet-5, 2 reps (CI smoke test)")
    p.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 7; 2 with --tiny)")
    p.add_argument("--model", default=None, help="the .cnn file (default examples/resnet50.cnn; lenet5 with --tiny)")
    p.add_argument("--out", default=None, help="write results as JSON here")
    p.add_argument("--md", default=None, help="write results as Markdown here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the JSON payload (also written to `--out`)."""
    args = parse_args(argv)
    reps = args.reps or (2 if args.tiny else 7)
    path = str(Path(args.model) if args.model else (TINY_MODEL if args.tiny else DEFAULT_MODEL))

    info = harness.machine_info()
    print(harness.machine_markdown(info), flush=True)
    fns, first, errors, checks = setup(path)
    samples, loads = measure(fns, reps)

    net = cnndsl.load(path)
    notes = []
    if loads and max(loads) > 0.1:
        notes.append(f"other processes used up to {100 * max(loads):.0f}% of the CPU during a round")
    results = stats(first, samples)
    payload = {
        "benchmark": "static",
        "machine": info,
        "config": {"tiny": args.tiny, "reps": reps, "model": path},
        "model": {
            "file": os.path.relpath(path, ROOT),
            "name": net.name,
            "input": str(net.input),
            "output": str(net.output),
            "layers": len(net.layers()),
            "params": net.params["total"],
            "macs": net.macs,
        },
        "results": results,
        "ratios": ratios(results),
        "checks": checks,
        "errors": errors,
        "other_cpu_load_per_round": loads,
        "notes": notes,
    }
    md = markdown(payload)
    print(md, flush=True)
    if args.out:
        harness.write_json(args.out, payload)
    if args.md:
        with open(args.md, "w", encoding="utf-8") as f:
            f.write(harness.machine_markdown(info) + "\n" + md)
    return payload


if __name__ == "__main__":
    main()
