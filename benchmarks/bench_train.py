"""Train-step and inference throughput: LeNet-5 and CIFAR ResNet-18, across implementations.

    python benchmarks/bench_train.py                      # full run (tens of minutes on 2 cores: see below)
    python benchmarks/bench_train.py --tiny               # CI smoke configuration (seconds)
    python benchmarks/bench_train.py --reps 15 --out results.json --md results.md
    python benchmarks/bench_train.py --models lenet5 --contenders flax_nnx,jax_im2col

Contenders (see `contenders_for`): the hand-written Flax NNX model (`flax_nnx`, the
baseline of the ratios), plain JAX (`jax_lax`, and `jax_im2col` for LeNet-5) and PyTorch eager
(`torch_eager`, `torch_channels_last` and `torch_compile`, skipped with a note when torch is not
importable); a closing table sets cnndsl's best against PyTorch's best. Every contender sees the
same random batch (float32 images, integer labels) and runs the same optimizer
(`optax.sgd(0.01, momentum=0.9)` / `torch.optim.SGD`). Timing method: benchmarks/harness.py.

How long: every (model, batch, mode) times its contenders in `--reps` rounds of samples of
`--min-sample-s` each (default 10 x 0.3 s): with the defaults 3 x 2 x 6 x 10 x 0.3 s = 18 minutes
of samples (counted, not timed), plus compilation (torch.compile's is the longest). Each timing batch
first prints (stderr) what it times and how long it should take; a sample disturbed by other
processes is retaken after waiting for a quieter CPU, each wait saying what it waits for, and
all waiting together is capped at 60 s (`harness.QUIET`), after which disturbed samples are
kept and their load reported.

Adding a contender (e.g. the cnndsl-compiled model) takes a few lines: see
`register_contender` and `nnx_contender` at "HOOK" below.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

# Runnable as a script (`python benchmarks/bench_train.py`) and importable as a module.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import reference as ref  # noqa: E402
from flax import nnx  # noqa: E402
from harness import Contender  # noqa: E402

import cnndsl  # noqa: E402,F401  (first: it sets XLA_FLAGS before JAX starts its backend)

BASELINE = "flax_nnx"
BATCHES: dict[str, tuple[int, ...]] = {"lenet5": (128, 512), "resnet18": (64,)}
TINY_BATCHES: dict[str, tuple[int, ...]] = {"lenet5": (8,), "resnet18": (2,)}


# --------------------------------------------------------------------------------------
# Contender builders


def jax_contender(
    make: Callable[[int], tuple[ref.ApplyFn, ref.Params, Any]],
    spec: ref.ModelSpec,
    description: str = "",
) -> Contender:
    """A contender from a pure JAX model.

    `make(seed) -> (apply, params, model_state)` where `apply(params, model_state, x, train)
    -> (logits, new_model_state)` takes NHWC inputs `x: (N, H, W, C)`. The train step and
    inference are `reference.make_jax_fns`: jitted once, state donated, optax SGD.
    """
    fns: dict[str, Any] = {}

    def init(batch: int, seed: int) -> tuple[Any, Any, Any]:
        apply, params, model_state = make(seed)
        state, fns["train"], fns["infer"] = ref.make_jax_fns(apply, params, model_state)
        x, y = ref.random_batch(spec, batch, seed)
        return state, jnp.asarray(x), jnp.asarray(y)

    return Contender(
        init=init,
        train_step=lambda s, x, y: fns["train"](s, x, y),
        infer=lambda s, x: fns["infer"](s, x),
        framework="jax",
        description=description,
        jitted=lambda: (fns["train"], fns["infer"]),
    )


def nnx_contender(
    make_module: Callable[[nnx.Rngs], nnx.Module], spec: ref.ModelSpec, description: str = ""
) -> Contender:
    """A contender from any Flax NNX module factory (`make_module(rngs) -> module`).

    The module maps `(N, H, W, C)` images to `(N, num_classes)` logits; BatchNorm and Dropout
    follow `module.train()` / `module.eval()`. This is the hook for the cnndsl-compiled model.
    """
    return jax_contender(lambda seed: ref.nnx_apply_fn(make_module(nnx.Rngs(seed))), spec, description)


def torch_contender(
    make_module: Callable[[], Any],
    spec: ref.ModelSpec,
    description: str = "",
    *,
    channels_last: bool = False,
    compiled: bool = False,
) -> Contender:
    """A contender from a `torch.nn.Module` factory; inputs are NCHW tensors.

    `channels_last` stores module and input in `torch.channels_last` (NHWC in memory, oneDNN's
    preferred layout on CPU); `compiled` runs the module through `torch.compile` (inductor)."""
    import torch

    def init(batch: int, seed: int) -> tuple[Any, Any, Any]:
        torch.manual_seed(seed)
        module = make_module()
        x, y = ref.random_batch(spec, batch, seed)
        xt = torch.tensor(x.transpose(0, 3, 1, 2))
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
            xt = xt.contiguous(memory_format=torch.channels_last)
        state, fns["train"], fns["infer"] = ref.make_torch_fns(module, compiled=compiled)
        return state, xt, torch.tensor(y).long()

    fns: dict[str, Any] = {}
    return Contender(
        init=init,
        train_step=lambda s, x, y: fns["train"](s, x, y),
        infer=lambda s, x: fns["infer"](s, x),
        framework="torch",
        description=description,
    )


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CNN_FILES = {"lenet5": "examples/lenet5.cnn", "resnet18": "examples/resnet18_cifar.cnn"}


def cnndsl_contender(
    model_name: str,
    *,
    lowering: dict[str, str] | None = None,
    folded: bool = False,
    tuned: bool = False,
    dtype: Any = None,
    description: str = "",
) -> Contender:
    """The cnndsl-compiled model: `Net.functional` of the example's `.cnn` file.

    `lowering` overrides the per-layer lowering (`{"*": "xla"}`: XLA's convolution
    everywhere, the same program as hand-written Flax). With `folded`, inference runs the
    `Net.for_inference` network (BatchNorm folded into the convolutions, dropout removed),
    folded once from the trained variables outside the timed call, as a deployment would.
    With `tuned`, `Net.autotune` picks the lowerings by timing the whole network at the batch
    size, once for training and once for inference (cached in `$CNNDSL_CACHE_DIR`).
    `dtype=jnp.bfloat16` computes convolutions and dense layers in bfloat16 (float32
    accumulation and variables).
    """
    net = cnndsl.load(os.path.join(ROOT, CNN_FILES[model_name]))
    spec = ref.SPECS[model_name]
    fns: dict[str, Any] = {}

    def make(seed: int, batch: int) -> tuple[ref.ApplyFn, ref.Params, Any]:
        low_train = net.autotune(batch, train=True) if tuned else lowering
        low_eval = net.autotune(batch, train=False) if tuned else lowering
        variables, apply = net.functional(jax.random.key(seed), lowering=low_train, dtype=dtype)
        _, apply_eval = net.functional(jax.random.key(seed), lowering=low_eval, dtype=dtype)
        params = variables.pop("params")

        def apply_fn(p: ref.Params, s: Any, x: jax.Array, train: bool) -> tuple[jax.Array, Any]:
            if not train:
                return apply_eval({"params": p, **s}, x, logits=True), s
            y, stats = apply({"params": p, **s}, x, train=True, logits=True)
            return y, ({**s, "batch_stats": stats} if "batch_stats" in s else s)

        return apply_fn, params, variables

    def init(batch: int, seed: int) -> tuple[Any, Any, Any]:
        apply, params, model_state = make(seed, batch)
        state, fns["train"], fns["infer"] = ref.make_jax_fns(apply, params, model_state)
        if folded:
            fns["folded"] = None  # (state, folded variables) of the last fold
            fns["folded_apply"] = None
        x, y = ref.random_batch(spec, batch, seed)
        return state, jnp.asarray(x), jnp.asarray(y)

    def infer(state: Any, x: jax.Array) -> jax.Array:
        if not folded:
            return fns["infer"](state, x)
        if fns["folded"] is None or fns["folded"][0] is not state:
            p, s, _ = state
            fnet, fv = net.for_inference({"params": p, **s})
            _, fapply = fnet.functional(jax.random.key(0), lowering=lowering, dtype=dtype)
            fns["folded_apply"] = jax.jit(lambda v, x: fapply(v, x, logits=True))
            fns["folded"] = (state, fv)
        return fns["folded_apply"](fns["folded"][1], x)

    return Contender(
        init=init,
        train_step=lambda s, x, y: fns["train"](s, x, y),
        infer=infer,
        framework="jax",
        description=description,
        jitted=lambda: (fns["train"], fns["infer"]),
    )


def _lenet_plain(apply: ref.ApplyFn) -> Callable[[int], tuple[ref.ApplyFn, ref.Params, Any]]:
    return lambda seed: (apply, ref.init_lenet_params(jax.random.key(seed)), {})


def _resnet_plain(seed: int) -> tuple[ref.ApplyFn, ref.Params, Any]:
    params, stats = ref.init_resnet_params(jax.random.key(seed))
    return ref.resnet_apply, params, stats


def _cnndsl_contenders(model_name: str) -> dict[str, Callable[[], Contender]]:
    tuned: dict[str, Callable[[], Contender]] = {}
    if model_name == "lenet5":  # (ResNet-18's 21 convolutions x 3 lowerings take minutes to tune)
        tuned["cnndsl_tuned"] = lambda: cnndsl_contender(
            model_name, tuned=True, description="cnndsl, lowerings autotuned per layer"
        )
    return {
        "cnndsl": lambda: cnndsl_contender(model_name, description="cnndsl, default lowerings"),
        "cnndsl_xla": lambda: cnndsl_contender(
            model_name, lowering={"*": "xla"}, description="cnndsl, XLA convolutions everywhere (Flax's program)"
        ),
        "cnndsl_folded": lambda: cnndsl_contender(
            model_name, folded=True, description="cnndsl, default lowerings; inference BN-folded"
        ),
        **tuned,
        **_onednn_contenders(model_name),
    }


def _onednn_contenders(model_name: str) -> dict[str, Callable[[], Contender]]:
    """`cnndsl_onednn` (every 2-D convolution by oneDNN) where the optional kernel is available."""
    from cnndsl.backends.jax import onednn

    if not onednn.available()[0]:
        return {}
    return {
        "cnndsl_onednn": lambda: cnndsl_contender(
            model_name, lowering={"*": "onednn"}, description=f"cnndsl, {onednn.available()[1]} convolutions"
        )
    }


def _builtin_contenders(model_name: str) -> dict[str, Callable[[], Contender]]:
    spec = ref.SPECS[model_name]
    if model_name == "lenet5":
        return {
            "flax_nnx": lambda: nnx_contender(
                lambda rngs: ref.LeNet5(rngs=rngs), spec, "Flax NNX, split once + jax.jit"
            ),
            "jax_lax": lambda: jax_contender(
                _lenet_plain(ref.lenet_apply_lax), spec, "plain JAX, lax.conv_general_dilated + reduce_window"
            ),
            "jax_im2col": lambda: jax_contender(
                _lenet_plain(ref.lenet_apply_im2col), spec, "plain JAX, slicing im2col + matmul, reshape-max pool"
            ),
            "torch_eager": lambda: torch_contender(ref.torch_lenet5, spec, "PyTorch eager, torch.nn"),
            "torch_channels_last": lambda: torch_contender(
                ref.torch_lenet5, spec, "PyTorch eager, channels_last (NHWC) memory format", channels_last=True
            ),
            "torch_compile": lambda: torch_contender(
                ref.torch_lenet5, spec, "PyTorch torch.compile (inductor)", compiled=True
            ),
            **_cnndsl_contenders(model_name),
        }
    if model_name == "resnet18":
        return {
            "flax_nnx": lambda: nnx_contender(
                lambda rngs: ref.ResNet18(rngs=rngs), spec, "Flax NNX, split once + jax.jit"
            ),
            "jax_lax": lambda: jax_contender(_resnet_plain, spec, "plain JAX, lax.conv_general_dilated"),
            "torch_eager": lambda: torch_contender(ref.torch_resnet18, spec, "PyTorch eager, torch.nn"),
            "torch_channels_last": lambda: torch_contender(
                ref.torch_resnet18, spec, "PyTorch eager, channels_last (NHWC) memory format", channels_last=True
            ),
            "torch_compile": lambda: torch_contender(
                ref.torch_resnet18, spec, "PyTorch torch.compile (inductor)", compiled=True
            ),
            **_cnndsl_contenders(model_name),
        }
    raise KeyError(f"unknown model {model_name!r}; known: {sorted(ref.SPECS)}")


# --------------------------------------------------------------------------------------
# HOOK: more contenders.
#
# To benchmark the cnndsl-compiled model next to the hand-written ones, register a factory
# (it is called once per batch size, so it may compile lazily):
#
#     import cnndsl
#     register_contender("lenet5", "cnndsl", lambda: nnx_contender(
#         lambda rngs: cnndsl.compile_file("examples/lenet5.cnn").build(rngs=rngs),
#         ref.LENET5, "cnndsl-compiled"))
#
# `nnx_contender` suits any nnx.Module taking (N, H, W, C) images; `jax_contender` any pure
# apply function; or build a `Contender(init, train_step, infer)` directly.

EXTRA_CONTENDERS: dict[str, dict[str, Callable[[], Contender]]] = {name: {} for name in ref.SPECS}


def register_contender(model_name: str, name: str, factory: Callable[[], Contender]) -> None:
    """Add (or replace) contender `name` for `model_name` in every later `contenders_for`."""
    if model_name not in EXTRA_CONTENDERS:
        raise KeyError(f"unknown model {model_name!r}; known: {sorted(EXTRA_CONTENDERS)}")
    EXTRA_CONTENDERS[model_name][name] = factory


def contenders_for(
    model_name: str, *, skip_torch: bool = False, notes: list[str] | None = None
) -> dict[str, Contender]:
    """All contenders for `model_name`, built-in ones first, then `EXTRA_CONTENDERS`.

    PyTorch contenders are left out, with a note appended to `notes`, when torch cannot be
    imported or `skip_torch` is set.
    """
    factories = {**_builtin_contenders(model_name), **EXTRA_CONTENDERS[model_name]}
    out: dict[str, Contender] = {}
    for name, factory in factories.items():
        if name.startswith("torch"):
            reason = "--skip-torch given" if skip_torch else _torch_missing()
            if reason:
                if notes is not None:
                    notes.append(f"{model_name}: skipped {name} ({reason})")
                continue
        out[name] = factory()
    return out


def _torch_missing() -> str | None:
    """None when torch imports, else why not."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        return f"torch not importable: {e}"
    return None


def versus_best_pytorch(rows: Sequence[harness.Result]) -> str:
    """A markdown table: per model, batch and mode, cnndsl's best contender against the best
    PyTorch one (eager NCHW, channels_last or torch.compile, whichever ran fastest here)."""
    groups: dict[tuple[str, int, str], list[harness.Result]] = {}
    for r in rows:
        groups.setdefault((r.model, r.batch, r.mode), []).append(r)
    lines = []
    for (model, batch, mode), rs in groups.items():
        ours = [r for r in rs if r.contender.startswith("cnndsl") and r.finite]
        theirs = [r for r in rs if r.contender.startswith("torch") and r.finite]
        if not ours or not theirs:
            continue
        a = max(ours, key=lambda r: r.images_per_s)
        b = max(theirs, key=lambda r: r.images_per_s)
        lines.append(
            f"| {model} | {batch} | {mode} | {a.contender} {a.images_per_s:,.0f} | {b.contender} "
            f"{b.images_per_s:,.0f} | {a.images_per_s / b.images_per_s:.2f}x |"
        )
    if not lines:
        return ""
    head = "| model | batch | mode | best cnndsl (img/s) | best PyTorch (img/s) | cnndsl / PyTorch |\n"
    return head + "| --- | ---: | --- | --- | --- | ---: |\n" + "\n".join(lines)


# --------------------------------------------------------------------------------------
# Running


def bench_model(
    model_name: str,
    batch: int,
    contenders: dict[str, Contender],
    *,
    reps: int,
    min_sample_s: float,
    peak_gflops: float | None,
    with_xla_flops: bool,
    max_retries: int = 3,
    seed: int = 0,
) -> list[harness.Result]:
    """Time train step and inference of every contender on one model and batch size."""
    spec = ref.SPECS[model_name]
    inputs = {name: c.init(batch, seed) for name, c in contenders.items()}
    states = {name: s for name, (s, _, _) in inputs.items()}

    def train_fn(name: str) -> Callable[[], Any]:
        c, (_, x, y) = contenders[name], inputs[name]

        def step() -> Any:
            states[name], loss = c.train_step(states[name], x, y)
            return states[name], loss

        return step

    def infer_fn(name: str) -> Callable[[], Any]:
        c, (_, x, _) = contenders[name], inputs[name]
        return lambda: c.infer(states[name], x)

    baseline = BASELINE if BASELINE in contenders else None
    timing = {"reps": reps, "min_sample_s": min_sample_s, "max_retries": max_retries}
    train = harness.run_interleaved({n: train_fn(n) for n in contenders}, sync_each=False, **timing)
    infer = harness.run_interleaved({n: infer_fn(n) for n in contenders}, **timing)
    rows = harness.make_results(
        train, model=model_name, batch=batch, mode="train", baseline=baseline,
        flops=spec.train_flops(batch), peak_gflops=peak_gflops,
    ) + harness.make_results(
        infer, model=model_name, batch=batch, mode="infer", baseline=baseline,
        flops=spec.infer_flops(batch), peak_gflops=peak_gflops,
    )  # fmt: skip
    if with_xla_flops:
        for row in rows:
            c = contenders[row.contender]
            if c.jitted is None:
                continue
            train_jit, infer_jit = c.jitted()
            state, (_, x, y) = states[row.contender], inputs[row.contender]
            row.xla_flops = (
                harness.xla_flops(train_jit, state, x, y)
                if row.mode == "train"
                else harness.xla_flops(infer_jit, state, x)
            )
    for row in rows:
        row.extra["description"] = contenders[row.contender].description
        row.extra["framework"] = contenders[row.contender].framework
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny batches, 2 reps, short samples (CI smoke test)")
    p.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 10; 2 with --tiny)")
    p.add_argument("--min-sample-s", type=float, default=None, help="target seconds per sample (default 0.3)")
    p.add_argument("--models", default=",".join(BATCHES), help="comma-separated: " + ", ".join(BATCHES))
    p.add_argument("--batches", default=None, help="comma-separated batch sizes, overriding the defaults")
    p.add_argument("--contenders", default=None, help="comma-separated names to keep (default: all)")
    p.add_argument(
        "--max-retries", type=int, default=None,
        help="retakes of a sample disturbed by other processes (default 3; 0 with --tiny)",
    )  # fmt: skip
    p.add_argument("--skip-torch", action="store_true", help="leave out the PyTorch contenders")
    p.add_argument("--no-xla-flops", action="store_true", help="skip XLA cost_analysis (saves compile time)")
    p.add_argument("--out", default=None, help="write results as JSON here")
    p.add_argument("--md", default=None, help="write results as Markdown here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the JSON payload (also written to `--out`)."""
    args = parse_args(argv)
    reps = args.reps or (2 if args.tiny else 10)
    min_sample_s = args.min_sample_s if args.min_sample_s is not None else (0.005 if args.tiny else 0.3)
    models = [m for m in args.models.split(",") if m]
    max_retries = args.max_retries if args.max_retries is not None else (0 if args.tiny else 3)
    keep = set(args.contenders.split(",")) if args.contenders else None
    notes: list[str] = []

    info = harness.machine_info()
    peak = harness.matmul_peak(
        n=256 if args.tiny else 2048, reps=reps, min_sample_s=min_sample_s, max_retries=max_retries
    )
    print(harness.machine_markdown(info, peak), flush=True)

    rows: list[harness.Result] = []
    for model_name in models:
        batches = (
            tuple(int(b) for b in args.batches.split(","))
            if args.batches
            else (TINY_BATCHES if args.tiny else BATCHES)[model_name]
        )
        for batch in batches:
            contenders = contenders_for(model_name, skip_torch=args.skip_torch, notes=notes)
            if keep is not None:
                contenders = {n: c for n, c in contenders.items() if n in keep}
            new = bench_model(
                model_name, batch, contenders, reps=reps, min_sample_s=min_sample_s,
                peak_gflops=peak["gflops"], with_xla_flops=not (args.tiny or args.no_xla_flops),
                max_retries=max_retries,
            )  # fmt: skip
            print(harness.results_markdown(new), flush=True)
            for r in new:
                if not r.finite:
                    notes.append(f"{model_name} b{batch} {r.mode} {r.contender}: NON-FINITE output (NaN/inf)")
                if r.max_other_load is not None and r.max_other_load > 0.1:
                    notes.append(
                        f"{model_name} b{batch} {r.mode} {r.contender}: other processes used up to "
                        f"{100 * r.max_other_load:.0f}% of the CPU during kept samples"
                    )
            rows += new
    gap = versus_best_pytorch(rows)
    if gap:
        print("\n" + gap, flush=True)
    for note in dict.fromkeys(notes):
        print("note:", note)

    payload = {
        "benchmark": "train_and_infer",
        "machine": info,
        "matmul_peak": peak,
        "config": {
            "tiny": args.tiny,
            "reps": reps,
            "min_sample_s": min_sample_s,
            "max_retries": max_retries,
            "models": models,
            "baseline": BASELINE,
        },  # fmt: skip
        "results": rows,
        "notes": list(dict.fromkeys(notes)),
    }
    if args.out:
        harness.write_json(args.out, payload)
    if args.md:
        with open(args.md, "w", encoding="utf-8") as f:
            f.write(harness.machine_markdown(info, peak) + "\n" + harness.results_markdown(rows, peak["gflops"]))
            f.write("\n" + gap + "\n" if gap else "")
            f.writelines(f"\n- note: {n}" for n in payload["notes"])
    return payload


if __name__ == "__main__":
    main()
