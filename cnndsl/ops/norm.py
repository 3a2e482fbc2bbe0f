"""Normalisation: `bn` (alias `batchnorm`) and `layernorm`, both over the depth axis.

`bn` follows Flax's `BatchNorm`: running statistics `mean`/`var` (non-trainable, collection
`batch_stats`) updated as `m * old + (1 - m) * batch` with momentum m = 0.99 (PyTorch's
`momentum=0.1` is m = 0.9), epsilon 1e-5, biased batch variance. Trainable `scale`, `bias`.
"""

from __future__ import annotations

from typing import Any

from ..shape import Shape
from .base import FLOAT, PROB, ApplyCtx, Args, Op, P, per_channel, register


def _ones_zeros(d: int) -> tuple[Any, Any]:
    import numpy as np

    return np.ones((d,), np.float32), np.zeros((d,), np.float32)


@register
class BatchNorm(Op):
    name = "bn"
    aliases = ("batchnorm",)
    doc = "batch normalisation over the depth axis (Flax conventions)"
    example = "bn momentum=0.9"
    params = (P("momentum", PROB, 0.99), P("eps", FLOAT, 1e-5))

    def count(self, a: Args, x: Shape, y: Shape) -> tuple[int, int]:
        return 2 * x.depth, 2 * x.depth

    def init(self, a, x, y, key):
        one, zero = _ones_zeros(x.depth)
        return {"scale": ("params", one), "bias": ("params", zero), "mean": ("batch_stats", zero), "var": ("batch_stats", one)}

    def apply(self, a: Args, p: dict[str, Any], x: Any, ctx: ApplyCtx) -> Any:
        import jax
        import jax.numpy as jnp

        if ctx.train:
            axes = tuple(range(x.ndim - 1))
            mean = x.mean(axis=axes)
            var = jnp.maximum((x * x).mean(axis=axes) - mean * mean, 0.0)
            m = a.momentum
            ctx.updates["mean"] = m * p["mean"] + (1 - m) * mean
            ctx.updates["var"] = m * p["var"] + (1 - m) * var
        else:
            mean, var = p["mean"], p["var"]
        mul = jax.lax.rsqrt(var + a.eps) * p["scale"]
        return (x - per_channel(mean, x)) * per_channel(mul, x) + per_channel(p["bias"], x)


@register
class LayerNorm(Op):
    name = "layernorm"
    doc = "layer normalisation over the depth axis (Flax `LayerNorm`, epsilon 1e-6)"
    params = (P("eps", FLOAT, 1e-6),)

    def count(self, a, x, y):
        return 2 * x.depth, 0

    def init(self, a, x, y, key):
        one, zero = _ones_zeros(x.depth)
        return {"scale": ("params", one), "bias": ("params", zero)}

    def apply(self, a, p, x, ctx):
        import jax

        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + a.eps) * per_channel(p["scale"], x) + per_channel(p["bias"], x)
