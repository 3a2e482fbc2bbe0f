"""Preprocessing inside the model: `scale`, `normalize`, `grayscale`.

They let a network take raw 0-255 pixels, so the exported model carries its own input
conventions. None has parameters (the constants are part of the layer as written) or
counts MACs (element-wise work, like normalisation).

- `scale A [offset=B]`: `x * A + B` (Keras `Rescaling`); `scale 1/255` maps 0-255 to 0-1,
  `scale 1/127.5 offset=-1` to -1..1. Any shape.
- `normalize mean=(m...) std=(s...)`: `(x - mean) / std` per channel (the depth axis; the
  elements of a flat vector), with one value for all channels or one per channel;
  `std` > 0. Either may be left out (mean 0, std 1). The values are in the units of the
  input: after `scale 1/255` ImageNet's are `mean=(0.485, 0.456, 0.406)
  std=(0.229, 0.224, 0.225)`.
- `grayscale`: RGB to luma with ITU-R BT.601 weights, `0.299 R + 0.587 G + 0.114 B`
  (channels in R, G, B order; as PIL's `convert("L")` and OpenCV's `RGB2GRAY`). 3@WxH ->
  1@WxH.
"""

from __future__ import annotations

from typing import Any

from ..errors import ArgumentError
from ..shape import Shape
from ..syntax.binder import REQUIRED, Args, P
from ..syntax.values import FLOAT, FLOATS
from .base import Op, ShapeCtx, bcast, needs_spatial, register

BT601 = (0.299, 0.587, 0.114)


@register
class Scale(Op):
    name = "scale"
    doc = "x * A + B (default B = 0): `scale 1/255` maps pixels 0-255 to 0-1"
    example = "scale 1/255"
    params = (
        P("factor", FLOAT, REQUIRED, positional=True, doc="a factor, like `scale 1/255`"),
        P("offset", FLOAT, 0.0, doc="a constant added after scaling"),
    )

    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        if a.factor == 0:
            raise ArgumentError(
                "`scale 0` sets every value to the offset",
                ctx.span,
                hints=["give a non-zero factor, like `scale 1/255`, or remove the layer"],
            )
        return x

    def affine(self, a: Args, p: dict[str, Any], depth: int) -> tuple[Any, Any]:
        import numpy as np

        return np.full((depth,), a.factor, np.float32), np.full((depth,), a.offset, np.float32)


@register
class Normalize(Op):
    name = "normalize"
    doc = "(x - mean) / std per channel; one value or one per channel"
    example = "normalize mean=(0.485, 0.456, 0.406) std=(0.229, 0.224, 0.225)"
    params = (
        P("mean", FLOATS, None, doc="the mean, one value or one per channel"),
        P("std", FLOATS, None, doc="the standard deviation, one value or one per channel"),
    )

    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        if a.mean is None and a.std is None:
            raise ArgumentError(
                "`normalize` needs `mean=` and/or `std=`",
                ctx.span,
                hints=[f"usage: `{self.example}`"],
            )
        for name in ("mean", "std"):
            v = a[name]
            if v is not None and len(v) not in (1, x.depth):
                raise ctx.error(
                    f"`normalize` got {len(v)} values for `{name}`, but its input {x} has {x.depth} channel"
                    + ("s" if x.depth != 1 else ""),
                    f"give one value for all channels or {x.depth}, one per channel",
                )
        if a.std is not None and any(s <= 0 for s in a.std):
            bad = next(s for s in a.std if s <= 0)
            raise ArgumentError(f"`std` must be > 0, got {bad:g}", ctx.span, hints=["a standard deviation is positive"])
        return x

    def affine(self, a: Args, p: dict[str, Any], depth: int) -> tuple[Any, Any]:
        """`x / std - mean / std`."""
        import numpy as np

        mean = np.asarray(bcast(a.mean or (0.0,), depth), np.float32)
        std = np.asarray(bcast(a.std or (1.0,), depth), np.float32)
        return 1.0 / std, -mean / std


@register
class Grayscale(Op):
    name = "grayscale"
    doc = "RGB -> luma, 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601): 3@WxH -> 1@WxH"

    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        needs_spatial(x, ctx, self.name)
        if x.depth != 3:
            hint = {
                1: "the input already has one channel: remove `grayscale`",
                4: "RGBA is not supported: give the network RGB (3 channels)",
            }.get(x.depth, "`grayscale` converts RGB images (3 channels, R, G, B order)")
            raise ctx.error(f"`grayscale` needs 3 channels (R, G, B), but gets {x}", hint)
        return x.with_depth(1)
