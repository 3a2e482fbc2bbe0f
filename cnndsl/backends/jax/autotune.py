"""Choose each layer's lowering by measuring the whole network once on this device.

    lowering = autotune(net.ir, batch=128, train=True)   # {"conv1": "shift", "conv2": "col2im", ...}
    forward(net.ir, variables, x, lowering=lowering)

Layers with several candidate lowerings (`Lowering.candidates`: those that apply to the
layer, e.g. Winograd only for 3x3 stride-1 convolutions) are grouped by signature (op,
arguments, input and output shapes: the same choice suits them all). Starting from the fixed
defaults (`Lowering.choose`), each group in turn is switched to each alternative lowering and the
*whole network* is compiled and raced against the current choice at the given batch size
(samples taken in turn, so drift in the machine's speed hits both; forward, or a stand-in
train step when `train`); a switch is kept when it makes the network at least 3% faster. Timing whole networks, not layers alone, matters: how XLA fuses a layer with its
neighbours (and what the backward pass then recomputes) decides more than the layer's own
kernel (LeNet-5's conv1 alone is faster with XLA's convolution; in the network `shift` makes
the train step 1.5x faster). So the result is never slower than the defaults, as measured.

The choice is cached in `$CNNDSL_CACHE_DIR/autotune.json` (default `~/.cache/cnndsl`), keyed
by device, JAX version, the network's layer signatures, batch and mode, so a later run
starts at once. Without autotuning every op uses its fixed default, which is what CI runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from ... import config, ir
from .lowerings import LOWERINGS

KEEP = 0.97  # a switch must make the network this much faster (3%), beyond timing noise


def cache_path() -> Path:
    """`autotune.json` in cnndsl's private cache folder (`config.cache_dir`)."""
    return config.cache_dir() / "autotune.json"


def _device_key() -> str:
    from . import onednn

    d = jax.devices()[0]
    flags = os.environ.get("XLA_FLAGS", "")
    extra = onednn.available()[1] if d.platform == "cpu" and onednn.available()[0] else "no-onednn"
    return f"{d.platform}:{getattr(d, 'device_kind', '?')}:{os.cpu_count()}:jax{jax.__version__}:{flags}:{extra}"


def layer_signature(n: ir.Layer) -> str:
    return f"{n.op}|{n.args!r}|{n.x}|{n.y}"


def default_lowering(n: ir.Layer, batch: int, train: bool) -> str:
    return LOWERINGS[n.op].choose(n.args, n.x, n.y, train, batch)


def tunable_groups(net: ir.Network, train: bool = True) -> dict[str, list[ir.Layer]]:
    """Layers with a choice of lowering, grouped by signature (in network order)."""
    groups: dict[str, list[ir.Layer]] = {}
    for n in ir.layers(net.body):
        if len(LOWERINGS[n.op].candidates(n.args, n.x, n.y, train)) >= 2:
            groups.setdefault(layer_signature(n), []).append(n)
    return groups


def network_key(net: ir.Network, batch: int, train: bool) -> str:
    sigs = "\n".join(f"{n.name}|{layer_signature(n)}" for n in ir.layers(net.body))
    digest = hashlib.sha256(f"{net.input}\n{sigs}".encode()).hexdigest()[:16]
    return f"{_device_key()}|{net.name}|{digest}|b{batch}|{'train' if train else 'eval'}"


def compile_step(net: ir.Network, lowering: dict[str, str], batch: int, train: bool) -> Callable[[], Any]:
    """A zero-argument callable running the whole network once, jitted, with `lowering`:
    the forward pass, or with `train` a stand-in for a train step (loss, gradient of the
    parameters and an SGD update of them). Compiled before it returns."""
    from .model import forward, init_variables

    variables = init_variables(net, jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), net.input.array_shape(batch), jnp.float32)

    if train:

        def loss(params: dict, x: jax.Array) -> jax.Array:
            y, _ = forward(
                net, {**variables, "params": params}, x, train=True, key=jax.random.key(2), lowering=lowering
            )
            return jnp.mean(jax.nn.logsumexp(y.reshape(batch, -1), axis=-1))

        def step(params: dict, x: jax.Array) -> dict:
            return jax.tree.map(lambda p, g: p - 0.01 * g, params, jax.grad(loss)(params, x))

        fn = jax.jit(step)
        args: tuple[Any, ...] = (variables["params"], x)
    else:
        fn = jax.jit(lambda v, x: forward(net, v, x, lowering=lowering)[0])
        args = (variables, x)
    jax.block_until_ready(fn(*args))
    return lambda: fn(*args)


def race(steps: Sequence[Callable[[], Any]], reps: int = 5, sample_s: float = 0.05) -> list[float]:
    """Median seconds per call of each step, sampled in turn (A B A B ...) so that a change
    in the machine's speed during the race affects all alike; samples last >= `sample_s`."""
    inner = []
    for step in steps:
        t = time.perf_counter()
        jax.block_until_ready(step())
        inner.append(max(1, round(sample_s / max(time.perf_counter() - t, 1e-6))))
    times: list[list[float]] = [[] for _ in steps]
    for _ in range(reps):
        for i, step in enumerate(steps):
            t = time.perf_counter()
            for _ in range(inner[i]):
                out = step()
            jax.block_until_ready(out)
            times[i].append((time.perf_counter() - t) / inner[i])
    return [statistics.median(ts) for ts in times]


def autotune(
    net: ir.Network,
    batch: int,
    *,
    train: bool = True,
    use_cache: bool = True,
    verbose: bool = False,
) -> dict[str, str]:
    """`{layer name: lowering}` for every layer with a choice (see the module docstring)."""
    groups = tunable_groups(net, train)
    if not groups:
        return {}
    path = cache_path()
    cache: dict[str, Any] = {}
    if use_cache and path.is_file():
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
    key = network_key(net, batch, train)
    if key not in cache:
        choice = {n.name: default_lowering(n, batch, train) for layers in groups.values() for n in layers}
        incumbent = compile_step(net, choice, batch, train)
        trials: list[dict[str, Any]] = []
        for layers in groups.values():
            start = choice[layers[0].name]
            n0 = layers[0]
            for impl in LOWERINGS[n0.op].candidates(n0.args, n0.x, n0.y, train):
                if impl == start:
                    continue
                trial = {**choice, **{n.name: impl for n in layers}}
                candidate = compile_step(net, trial, batch, train)
                t_in, t_new = race([incumbent, candidate])
                names = ", ".join(n.name for n in layers)
                trials.append({"switch": f"{names} -> {impl}", "seconds": t_new, "incumbent_seconds": t_in})
                if verbose:
                    print(f"autotune {net.name}: {names} -> {impl}: {t_new * 1e3:.2f} ms (now {t_in * 1e3:.2f} ms)")
                if t_new < KEEP * t_in:
                    choice, incumbent = trial, candidate
        cache[key] = {"choice": choice, "trials": trials}
        if use_cache:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
                tmp.replace(path)
            except OSError:
                pass  # a read-only home: the choice still applies to this run
    return dict(cache[key]["choice"])
