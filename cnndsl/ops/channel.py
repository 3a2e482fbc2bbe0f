"""Channel operations: `slice a:b` (a channel range), `shuffle G` (ShuffleNet's fixed
channel permutation) and `layerscale` (a learned per-channel scale, ConvNeXt). None has MACs. ShuffleNetV2's unit is
`concat { slice 0:c | slice c:2*c -> ... } -> shuffle 2` (torch's `chunk(2)`, then
`channel_shuffle(x, 2)`).
"""

from __future__ import annotations

from typing import Any

from ..shape import Shape
from ..syntax.binder import REQUIRED, Args, P
from ..syntax.values import FLOAT, INT, RANGE
from .base import Op, ShapeCtx, register


@register
class Slice(Op):
    name = "slice"
    doc = "channels a..b-1 of the input (a half-open range, 0-based, as Python's x[:, a:b])"
    example = "slice 1:3"
    params = (P("range", RANGE, REQUIRED, positional=True, doc="a channel range like `slice 0:16`"),)

    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        start, stop = a.range
        if stop > x.depth:
            raise ctx.error(
                f"`slice {start}:{stop}` needs at least {stop} channels, but the input {x} has {x.depth}",
                f"the channels are 0:{x.depth}; a half is `slice 0:{x.depth // 2}` and `slice {x.depth // 2}:{x.depth}`"
                if x.depth > 1
                else "there is only one channel",
            )
        return x.with_depth(stop - start)


@register
class Shuffle(Op):
    name = "shuffle"
    doc = "channel shuffle in G groups (ShuffleNet): output channel j*G + g is input channel g*(D/G) + j"
    example = "shuffle 2"
    params = (P("groups", INT, REQUIRED, positional=True, doc="a number of groups, like `shuffle 2`"),)

    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        if x.depth % a.groups:
            raise ctx.error(
                f"`shuffle {a.groups}` needs a depth divisible by {a.groups}, but the input {x} has {x.depth}",
                "choose a number of groups that divides the depth",
            )
        return x


@register
class LayerScale(Op):
    name = "layerscale"
    doc = "x times a learned per-channel scale, initially the given value (ConvNeXt, CaiT: 1e-6)"
    example = "layerscale 1e-6"
    params = (P("init", FLOAT, 1e-6, positional=True),)

    def count(self, a: Args, x: Shape, y: Shape) -> tuple[int, int]:
        return x.depth, 0

    def affine(self, a: Args, p: dict[str, Any], depth: int) -> tuple[Any, Any]:
        return p["scale"], 0.0 * p["scale"]

    def init(self, a, x, y, rng):
        import numpy as np

        return {"scale": ("params", np.full((x.depth,), a.init, np.float32))}
