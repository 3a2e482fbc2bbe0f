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
from ..syntax.binder import REQUIRED, Args, P
from ..syntax.values import BOOL, FLOAT, INT, POSFLOAT, PROB
from .base import Op, ShapeCtx, needs_spatial, register


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


@register
class LayerNorm(_ScaledNorm):
    name = "layernorm"
    doc = "layer normalisation over the depth axis (Flax `LayerNorm`, epsilon 1e-6)"
    params = (P("eps", FLOAT, 1e-6),)


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
