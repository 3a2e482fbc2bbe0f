"""Normalisation: `bn` (alias `batchnorm`) and `layernorm` over the depth axis; `groupnorm G`,
`instancenorm` and `lrn N` with PyTorch's definitions (`GroupNorm`, `InstanceNorm2d`,
`LocalResponseNorm`).

`bn` follows Flax's `BatchNorm`: running statistics `mean`/`var` (non-trainable, collection
`batch_stats`) updated as `m * old + (1 - m) * batch` with momentum m = 0.99 (PyTorch's
`momentum=0.1` is m = 0.9), epsilon 1e-5, biased batch variance. Trainable `scale`, `bias`.
"""

from __future__ import annotations

from typing import Any

from ..shape import Shape
from .base import (
    BOOL,
    FLOAT,
    INT,
    POSFLOAT,
    PROB,
    REQUIRED,
    ApplyCtx,
    Args,
    Op,
    P,
    ShapeCtx,
    needs_spatial,
    per_channel,
    register,
)


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

    def affine(self, a: Args, p: dict[str, Any], depth: int) -> tuple[Any, Any]:
        """In inference, `(x - mean) * g + bias` with `g = scale / sqrt(var + eps)`."""
        g = p["scale"] / (p["var"] + a.eps) ** 0.5
        return g, p["bias"] - p["mean"] * g

    def init(self, a, x, y, key):
        one, zero = _ones_zeros(x.depth)
        return {
            "scale": ("params", one),
            "bias": ("params", zero),
            "mean": ("batch_stats", zero),
            "var": ("batch_stats", one),
        }

    lowerings = ("dot", "xla")

    def lowering(self, a: Args, x: Shape, y: Shape, train: bool) -> str:
        """On CPU, `dot`: the per-channel sums of training (statistics forward, scale and
        bias gradients backward) as matmuls with a vector of ones, up to 75x faster there than
        XLA:CPU's reductions over (N, H, W) (30 vs 0.4 ms for a 64x32x32x64 batch); elsewhere
        (and with YNNPACK fusions on, where it measured no faster) XLA's reductions.
        Inference has no sums, so both are the same program there."""
        from ..backends.jax._xla_guard import cpu_lowerings

        return "dot" if cpu_lowerings() else "xla"

    def apply(self, a: Args, p: dict[str, Any], x: Any, ctx: ApplyCtx) -> Any:
        import jax
        import jax.numpy as jnp

        if ctx.train:
            if (ctx.impl or self.lowering(a, ctx.x, ctx.y, True)) == "dot":
                y, mean, var = _bn_train_dot(x, p["scale"], p["bias"], a.eps)
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


def channel_sum(x: Any) -> Any:
    """`x: (N, ..., C)` summed over every axis but the last, as a vector-matrix product with
    a vector of ones (full float32 precision): XLA:CPU reduces over leading axes far slower
    than it multiplies. The rows are first regrouped `r` at a time, `(M/r, r*C)`, which makes
    the product 3x faster again (wider rows), and the `r` partial sums added at the end."""
    import math

    import jax
    import jax.numpy as jnp

    c = x.shape[-1]
    m = x.size // c
    r = math.gcd(m, 64)
    x2 = x.reshape(m // r, r * c)
    partial = jnp.dot(jnp.ones((m // r,), x.dtype), x2, precision=jax.lax.Precision.HIGHEST)
    return partial.reshape(r, c).sum(0)


def _bn_train_dot(x: Any, scale: Any, bias: Any, eps: float) -> tuple[Any, Any, Any]:
    """Training-mode batch norm `(y, batch mean, batch variance)` with its gradient written
    out (the textbook formula), every per-channel sum a `channel_sum`. Same arithmetic as
    Flax's `BatchNorm` (variance as E[x²] - E[x]², clamped at 0)."""
    import jax

    n = x.size // x.shape[-1]

    def stats(x):
        mean = channel_sum(x) / n
        return mean, jax.numpy.maximum(channel_sum(x * x) / n - mean * mean, 0.0)

    @jax.custom_vjp
    def bn(x, scale, bias):
        mean, var = stats(x)
        inv = jax.lax.rsqrt(var + eps)
        return (x - per_channel(mean, x)) * per_channel(inv * scale, x) + per_channel(bias, x), mean, var

    def fwd(x, scale, bias):
        mean, var = stats(x)
        inv = jax.lax.rsqrt(var + eps)
        y = (x - per_channel(mean, x)) * per_channel(inv * scale, x) + per_channel(bias, x)
        return (y, mean, var), (x, mean, inv, scale)

    def bwd(res, cts):
        x, mean, inv, scale = res
        g, g_mean, g_var = cts
        centred = x - per_channel(mean, x)
        xhat = centred * per_channel(inv, x)
        dbias = channel_sum(g)
        dscale = channel_sum(g * xhat)
        dx = per_channel(scale * inv / n, x) * (n * g - per_channel(dbias, x) - xhat * per_channel(dscale, x))
        # the batch statistics' own cotangents (zero when only the running averages use them)
        dx = dx + per_channel(g_mean / n, x) + centred * per_channel(2 * g_var / n, x)
        return dx, dscale, dbias

    bn.defvjp(fwd, bwd)
    return bn(x, scale, bias)


def _normalise(x: Any, axes: tuple[int, ...], eps: float) -> Any:
    """`(x - mean) / sqrt(var + eps)` over `axes`, biased variance (as PyTorch)."""
    import jax

    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


class _ScaledNorm(Op):
    """A normalisation followed by a learned per-channel `scale` and `bias` (initially 1 and 0),
    where `learned(a)` says it has them."""

    def learned(self, a: Args) -> bool:
        return True

    def count(self, a, x, y):
        return (2 * x.depth if self.learned(a) else 0), 0

    def init(self, a, x, y, key):
        if not self.learned(a):
            return {}
        one, zero = _ones_zeros(x.depth)
        return {"scale": ("params", one), "bias": ("params", zero)}

    def scale_shift(self, a: Args, p: dict[str, Any], y: Any) -> Any:
        return y * per_channel(p["scale"], y) + per_channel(p["bias"], y) if self.learned(a) else y


@register
class LayerNorm(_ScaledNorm):
    name = "layernorm"
    doc = "layer normalisation over the depth axis (Flax `LayerNorm`, epsilon 1e-6)"
    params = (P("eps", FLOAT, 1e-6),)

    def apply(self, a, p, x, ctx):
        return self.scale_shift(a, p, _normalise(x, (-1,), a.eps))


@register
class GroupNorm(_ScaledNorm):
    name = "groupnorm"
    doc = "group normalisation (PyTorch `GroupNorm(G, D)`): per example over D/G channels and the spatial axes"
    example = "groupnorm 2"
    params = (
        P("groups", INT, REQUIRED, positional=True, doc="a number of groups, like `groupnorm 32`"),
        P("eps", POSFLOAT, 1e-5),
    )

    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        if x.depth % a.groups:
            raise ctx.error(
                f"`groupnorm {a.groups}` needs a depth divisible by {a.groups}, but the input {x} has {x.depth}",
                "choose a number of groups that divides the depth (`groupnorm 1` normalises over all channels)",
            )
        return x

    def apply(self, a, p, x, ctx):
        g, d = a.groups, x.shape[-1]
        grouped = x.reshape(*x.shape[:-1], g, d // g)
        axes = (*range(1, x.ndim - 1), x.ndim)  # spatial axes and the channels within a group
        return self.scale_shift(a, p, _normalise(grouped, axes, a.eps).reshape(x.shape))


@register
class InstanceNorm(_ScaledNorm):
    name = "instancenorm"
    doc = "instance normalisation (PyTorch `InstanceNorm2d`): per example and channel over the spatial axes"
    example = "instancenorm affine"
    params = (P("eps", POSFLOAT, 1e-5), P("affine", BOOL, False, flags=(("affine", True),)))

    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        needs_spatial(x, ctx, "instancenorm")
        return x

    def learned(self, a: Args) -> bool:
        return a.affine

    def apply(self, a, p, x, ctx):
        return self.scale_shift(a, p, _normalise(x, tuple(range(1, x.ndim - 1)), a.eps))


@register
class LocalResponseNorm(Op):
    name = "lrn"
    doc = "local response normalisation across channels (PyTorch `LocalResponseNorm`; AlexNet, GoogLeNet)"
    example = "lrn 5"
    params = (
        P("size", INT, REQUIRED, positional=True, doc="a window of channels, like `lrn 5`"),
        P("alpha", POSFLOAT, 1e-4),
        P("beta", POSFLOAT, 0.75),
        P("k", POSFLOAT, 1.0),
    )

    def apply(self, a, p, x, ctx):
        """`x / (k + alpha/n * sum of x^2 over channels c-n//2 .. c+(n-1)//2)^beta`, zeros past the ends."""
        import jax

        n = a.size
        window = (1,) * (x.ndim - 1) + (n,)
        pads = ((0, 0),) * (x.ndim - 1) + ((n // 2, (n - 1) // 2),)
        sums = jax.lax.reduce_window(x * x, 0.0, jax.lax.add, window, (1,) * x.ndim, pads)
        return x / (a.k + a.alpha / n * sums) ** a.beta
