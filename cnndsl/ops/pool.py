"""Window pooling: `maxpool`, `avgpool`, `minpool`, `sumpool`; global `gap`, `gmp`.

Output `floor((W + 2P - K) / S) + 1`, or with `ceil` `ceil(...) + 1` minus one if the last
window would start inside the right padding (PyTorch `ceil_mode`, Caffe's default). The
stride defaults to the window. Max/min pooling pads with -inf/+inf; `avgpool` divides by
the window size including zero padding (PyTorch `count_include_pad=True`, Flax's default)
but not the part of a `ceil` window that hangs past the padding, as PyTorch does.
"""

from __future__ import annotations

from fractions import Fraction

from ..shape import Shape, fmt_size
from ..syntax.binder import REQUIRED, Args, P
from ..syntax.values import BOOL, SIZE, SIZE0
from .base import COLLAPSE, Op, ShapeCtx, Window, bcast, needs_spatial, per_axis, register


def pool_geometry(a: Args, x: Shape):
    """Window, stride, pad and extra end padding of `ceil` mode, per axis (written order)."""
    k = bcast(a.window, x.rank)
    s = bcast(a.stride, x.rank) if a.stride is not None else k
    p = bcast(a.pad, x.rank)
    out, extra = [], []
    for w, ki, si, pi in zip(x.spatial, k, s, p):
        span = w + 2 * pi - ki
        o = (-(-span // si) if a.ceil else span // si) + 1
        if a.ceil and (o - 1) * si >= w + pi:
            o -= 1
        out.append(o)
        extra.append(max((o - 1) * si + ki - (w + 2 * pi), 0))
    return k, s, p, tuple(out), tuple(extra)


def pool_padding(a: Args, x: Shape, y: Shape):
    """Window, stride and (before, after) padding per axis (written order) that take `x` to
    the IR's `y`: what a lowering needs, reading the output size instead of re-deriving it
    (the end padding grows by the overhang of a `ceil` window)."""
    k = bcast(a.window, x.rank)
    s = bcast(a.stride, x.rank) if a.stride is not None else k
    p = bcast(a.pad, x.rank)
    padding = tuple(
        (pi, pi + max((o - 1) * si + ki - (w + 2 * pi), 0)) for w, o, ki, si, pi in zip(x.spatial, y.spatial, k, s, p)
    )
    return k, s, padding


class _Pool(Op):
    params = (
        P("window", SIZE, REQUIRED, positional=True, doc="a window size, like `2` or `3x3`"),
        P("stride", SIZE, None, short="s"),
        P("pad", SIZE0, (0,), short="p"),
        P("ceil", BOOL, False, flags=(("ceil", True),)),
    )
    init_value = 0.0

    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        needs_spatial(x, ctx, self.name)
        k = per_axis(a.window, x, "the window", ctx)
        if a.stride is not None:
            per_axis(a.stride, x, "the stride", ctx)
        p = per_axis(a.pad, x, "the padding", ctx)
        if any(2 * pi > ki for pi, ki in zip(p, k)):
            raise ctx.error(
                f"padding {fmt_size(p)} is more than half the window {fmt_size(k)}",
                "a pooling window must overlap the input: pad at most half the window",
            )
        if any(w + 2 * pi < ki for w, pi, ki in zip(x.spatial, p, k)):
            need = tuple(ki - 2 * pi for ki, pi in zip(k, p))
            raise ctx.error(
                f"{ctx.text} needs an input of at least {fmt_size(need)}, but gets {x}",
                "use a smaller window, pad the input, or pool less before it",
            )
        return x.with_spatial(pool_geometry(a, x)[3])

    def window(self, a: Args, x: Shape, y: Shape) -> Window:
        k, s, p, _, _ = pool_geometry(a, x)
        return Window(k, tuple(Fraction(v) for v in s), tuple(Fraction(v) for v in p))

    def describe(self, a: Args) -> str:
        parts = [self.name, fmt_size(a.window)]
        if a.stride is not None and a.stride != a.window:
            parts.append("s" + fmt_size(a.stride))
        if a.pad != (0,):
            parts.append("p" + fmt_size(a.pad))
        if a.ceil:
            parts.append("ceil")
        return " ".join(parts)


@register
class MaxPool(_Pool):
    name = "maxpool"
    doc = "max over KxK windows; stride defaults to K"
    example = "maxpool 2"


@register
class MinPool(_Pool):
    name = "minpool"
    doc = "min over KxK windows"
    example = "minpool 2"


@register
class SumPool(_Pool):
    name = "sumpool"
    doc = "sum over KxK windows"
    example = "sumpool 2"


@register
class AvgPool(_Pool):
    name = "avgpool"
    doc = "mean over KxK windows (zero padding counted, as in PyTorch)"
    example = "avgpool 2"


class _Global(Op):
    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        needs_spatial(x, ctx, self.name)
        return Shape(x.depth)

    def window(self, a: Args, x: Shape, y: Shape) -> str:
        return COLLAPSE


@register
class GlobalAvgPool(_Global):
    name = "gap"
    doc = "global average pooling: D@WxH -> D"


@register
class GlobalMaxPool(_Global):
    name = "gmp"
    doc = "global max pooling: D@WxH -> D"
