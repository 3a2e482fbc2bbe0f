"""Lowerings of the normalisations (`cnndsl/ops/norm.py`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ....ops import REGISTRY
from ....ops.base import per_channel
from ....shape import Shape
from ....syntax.binder import Args
from .._xla_guard import cpu_lowerings
from ..kernels.batchnorm import bn_train_dot
from .base import ApplyCtx, Lowering, lowering


class BatchNorm(Lowering):
    """Training normalises with the batch statistics and updates the running ones
    (`ctx.updates`); inference with the running statistics."""

    impls = ("dot", "xla")

    def choose(self, a: Args, x: Shape, y: Shape, train: bool, batch: int) -> str:
        """On CPU, `dot`: the per-channel sums of training (statistics forward, scale and
        bias gradients backward) as matmuls with a vector of ones, up to 75x faster there than
        XLA:CPU's reductions over (N, H, W) (30 vs 0.4 ms for a 64x32x32x64 batch); elsewhere
        (and with YNNPACK fusions on, where it measured no faster) XLA's reductions.
        Inference has no sums, so both are the same program there."""
        return "dot" if cpu_lowerings() else "xla"

    def apply(self, a: Args, p: dict[str, Any], x: Any, ctx: ApplyCtx) -> Any:
        if ctx.train:
            if (ctx.impl or self.choose(a, ctx.x, ctx.y, True, x.shape[0])) == "dot":
                y, mean, var = bn_train_dot(x, p["scale"], p["bias"], a.eps)
                mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
            else:
                axes = tuple(range(x.ndim - 1))
                mean = x.mean(axis=axes)
                var = jnp.maximum((x * x).mean(axis=axes) - mean * mean, 0.0)
                y = None
            m = a.momentum
            ctx.updates["mean"] = m * p["mean"] + (1 - m) * mean
            ctx.updates["var"] = m * p["var"] + (1 - m) * var
            if y is not None:
                return y
        else:
            mean, var = p["mean"], p["var"]
        mul = jax.lax.rsqrt(var + a.eps) * p["scale"]
        return (x - per_channel(mean, x)) * per_channel(mul, x) + per_channel(p["bias"], x)


bn = BatchNorm()


def _normalise(x: Any, axes: tuple[int, ...], eps: float) -> Any:
    """`(x - mean) / sqrt(var + eps)` over `axes`, biased variance (as PyTorch)."""
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def _scale_shift(op: str, a: Args, p: dict[str, Any], y: Any) -> Any:
    """`y` times the learned per-channel `scale` plus `bias`, where the op has them (`learned`)."""
    return y * per_channel(p["scale"], y) + per_channel(p["bias"], y) if REGISTRY[op].learned(a) else y


@lowering
def layernorm(a, p, x, ctx):
    return _scale_shift("layernorm", a, p, _normalise(x, (-1,), a.eps))


@lowering
def groupnorm(a, p, x, ctx):
    g, d = a.groups, x.shape[-1]
    grouped = x.reshape(*x.shape[:-1], g, d // g)
    axes = (*range(1, x.ndim - 1), x.ndim)  # spatial axes and the channels within a group
    return _scale_shift("groupnorm", a, p, _normalise(grouped, axes, a.eps).reshape(x.shape))


@lowering
def instancenorm(a, p, x, ctx):
    return _scale_shift("instancenorm", a, p, _normalise(x, tuple(range(1, x.ndim - 1)), a.eps))


@lowering
def lrn(a, p, x, ctx):
    """`x / (k + alpha/n * sum of x^2 over channels c-n//2 .. c+(n-1)//2)^beta`, zeros past the ends."""
    n = a.size
    window = (1,) * (x.ndim - 1) + (n,)
    pads = ((0, 0),) * (x.ndim - 1) + ((n // 2, (n - 1) // 2),)
    sums = jax.lax.reduce_window(x * x, 0.0, jax.lax.add, window, (1,) * x.ndim, pads)
    return x / (a.k + a.alpha / n * sums) ** a.beta
