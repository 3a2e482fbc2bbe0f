"""Choose each layer's lowering by measuring it once on this device, and remember it.

    lowering = autotune(net.ir, batch=128, train=True)   # {"conv1": "patches", ...}
    forward(net.ir, variables, x, lowering=lowering)

For every layer whose op has several lowerings (`Op.lowerings`, e.g. conv: XLA's
convolution or patches + matmul), the layer alone is compiled with each lowering at the
given batch size and timed (forward, or forward + backward when `train`: the parameter
gradient, and the input gradient unless no trainable layer comes before it, as for the
first convolution, whose input gradient the train step never computes); the fastest wins.
Layers with the same op, arguments and shapes are measured once. Results are cached in
`$CNNDSL_CACHE_DIR/autotune.json` (default `~/.cache/cnndsl`), keyed by device, JAX version
and layer signature, so a later run starts instantly. Without autotuning every op uses its
fixed default (`Op.lowering`), which is what CI exercises.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from .. import ir
from ..ops import REGISTRY
from ..ops.base import ApplyCtx


def cache_path() -> Path:
    root = os.environ.get("CNNDSL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "cnndsl")
    return Path(root) / "autotune.json"


def _device_key() -> str:
    d = jax.devices()[0]
    return f"{d.platform}:{getattr(d, 'device_kind', '?')}:{os.cpu_count()}:jax{jax.__version__}"


def signature(n: ir.Layer, batch: int, train: bool, input_grad: bool = True) -> str:
    mode = ("train" if input_grad else "train-no-dx") if train else "eval"
    return f"{_device_key()}|{n.op}|{n.args!r}|{n.x}|{n.y}|b{batch}|{mode}"


def time_layer(n: ir.Layer, impl: str, batch: int, train: bool, reps: int = 7, input_grad: bool = True) -> float:
    """Median seconds of one jitted call of layer `n` alone with lowering `impl` (with
    `train`: its gradient, for the input too when `input_grad`)."""
    op = REGISTRY[n.op]
    assert n.x is not None and n.y is not None
    import numpy as np

    p = {k: jnp.asarray(v) for k, (_, v) in op.init(n.args, n.x, n.y, np.random.default_rng(0)).items()}
    x = jax.random.normal(jax.random.key(1), n.x.array_shape(batch), jnp.float32)

    def f(p: dict, x: jax.Array) -> jax.Array:
        return op.apply(n.args, p, x, ApplyCtx(train=train, x=n.x, y=n.y, impl=impl, dropout=False))

    if train:
        g = jax.grad(lambda p, x: jnp.sum(f(p, x)), argnums=(0, 1) if input_grad else 0)
        fn = jax.jit(g)
    else:
        fn = jax.jit(f)
    jax.block_until_ready(fn(p, x))
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(p, x))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def autotune(
    net: ir.Network,
    batch: int,
    *,
    train: bool = True,
    use_cache: bool = True,
    verbose: bool = False,
) -> dict[str, str]:
    """`{layer name: lowering}` for every layer with a choice, fastest measured first."""
    path = cache_path()
    cache: dict[str, Any] = {}
    if use_cache and path.is_file():
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
    choice: dict[str, str] = {}
    trainable_before = False  # (in walk order: exact for chains, a fair guess in graphs)
    for n in ir.layers(net.body):
        op = REGISTRY[n.op]
        input_grad = trainable_before
        if n.x is not None and n.y is not None and op.count(n.args, n.x, n.y)[0] > 0:
            trainable_before = True
        if len(op.lowerings) < 2:
            continue
        key = signature(n, batch, train, input_grad)
        if key not in cache:
            timings = {impl: time_layer(n, impl, batch, train, input_grad=input_grad) for impl in op.lowerings}
            cache[key] = {"best": min(timings, key=timings.__getitem__), "seconds": timings}
            if verbose:
                shown = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in timings.items())
                print(f"autotune {n.name} ({n.text}, {n.x} -> {n.y}): {shown}")
        choice[n.name] = cache[key]["best"]
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
            tmp.replace(path)
        except OSError:
            pass  # a read-only home: the choice still applies to this run
    return choice
