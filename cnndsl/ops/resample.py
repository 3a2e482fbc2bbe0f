"""Resampling: `upsample`, `pad`, `adaptiveavgpool`, `adaptivemaxpool`, `fracmaxpool`.

All of them work per spatial axis (1-D, 2-D and 3-D inputs) and keep the depth.

- `upsample K` repeats every pixel K times along each axis (nearest neighbour): `D@WxH`
  -> `D@(K*W)x(K*H)`; `upsample 2x3` doubles the width and triples the height.
- `pad P` adds P zeros on both sides of every axis (`pad 2x1`: 2 columns left and right, 1
  row top and bottom). `reflect` mirrors the input without repeating the border pixel
  (PyTorch `ReflectionPad`, NumPy `reflect`, needs P < size); `edge` repeats the border
  pixel (PyTorch `ReplicationPad`).
- `adaptiveavgpool WxH` / `adaptivemaxpool WxH` pool to a fixed output size with PyTorch's
  bins: along an axis of size `In` pooled to `Out`, output `i` reduces input positions
  `floor(i*In/Out)` up to `ceil((i+1)*In/Out)` (exclusive). Bins tile the input exactly
  when `Out` divides `In`; otherwise neighbouring bins may overlap by one pixel. `Out` may
  exceed `In` (bins then repeat pixels), as in PyTorch.
- `fracmaxpool R` is fractional max pooling (Graham 2014, "Fractional Max-Pooling") with
  Graham's *pseudo-random* regions, fixed once per layer. Per axis: `Out = floor(In / R)`
  (computed exactly: `R` is kept as a fraction), `alpha = In / Out`, and with the offset
  `u` (option `offset=`, default 1/2) the boundaries are
  `a_i = ceil(alpha*(i + u)) - ceil(alpha*u)` for `i = 0..Out`, so `a_0 = 0`,
  `a_Out = In`, and every step is `floor(alpha)` or `ceil(alpha)`. Output `i` is the max
  over `[a_i, a_(i+1))` (disjoint regions that tile the input), or with `overlap` over
  `[a_i, a_(i+1)]` (clipped at the end). The same regions serve every example, channel,
  training step and evaluation.

  How this differs from PyTorch's `FractionalMaxPool2d(kernel_size, output_ratio)`:
  PyTorch draws a fresh random `u` for every example and channel on every call (in eval
  mode too), uses windows of a fixed `kernel_size` that start at
  `floor((i + u)*a) - floor(u*a)` with `a = (In - kernel_size)/(Out - 1)` (the last
  window starts at `In - kernel_size`), and takes `Out = int(In * output_ratio)` in
  floating point. Our regions have sizes `floor(alpha)`/`ceil(alpha)` (+1 with `overlap`),
  depend on nothing random, and make the layer a deterministic function.

Receptive field (`window`): upsampling has jump 1/K and puts output pixel j's centre at
input coordinate `(j + 1/2)/K - 1/2` (half-pixel alignment, so `maxpool 2 -> upsample 2`
lines up with its input, as U-Nets need). For the adaptive and fractional pools, whose bins
vary in size, the field is that of the largest bin with the mean stride `In / Out`.

None of these has parameters or counts MACs (resampling and pooling are not counted).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from ..errors import ArgumentError, Span
from ..shape import Shape, fmt_size
from ..syntax import ast
from ..syntax.binder import REQUIRED, Args, P
from ..syntax.values import BOOL, SIZE, SIZE0, Env, Kind, choice, evaluate, fmt_num
from .base import Op, ShapeCtx, Window, bcast, needs_spatial, per_axis, register

Bins = tuple[tuple[int, int], ...]  # (start, end) per output position along one axis


# --- argument kinds kept exact (fractions), so `floor(In / R)` has no rounding surprises ----
def _fraction_kind(name: str, ok: Any, rule: str) -> Kind:
    def conv(v: ast.Value, env: Env, span: Span) -> Fraction:
        if not isinstance(v, (ast.Num, ast.Var, ast.BinOp, ast.Neg)):
            raise ArgumentError(f"expected {name}", span)
        r = evaluate(v, env)
        if not ok(r):
            raise ArgumentError(f"expected {rule}, got {fmt_num(r)}", span)
        return r

    return Kind(name, conv, fmt=fmt_num)


RATIO = _fraction_kind("a ratio > 1 like 1.5", lambda r: r > 1, "a ratio > 1 (the input is R times the output)")
OFFSET = _fraction_kind("a number in [0, 1)", lambda u: 0 <= u < 1, "a number in [0, 1)")


# --- the shared lowering: reduce each axis over a list of bins ------------------------------


def bins_window(bins: tuple[Bins, ...], x: Shape, y: Shape) -> Window:
    """The receptive-field effect of per-axis bins: the largest bin, mean stride In/Out."""
    kernel = tuple(max(e - s for s, e in b) for b in bins)
    # Centre output 0 on the centre of its bin: centre = (k-1)/2 - pad.
    pad = tuple(Fraction(k - (b[0][1] - b[0][0]), 2) for k, b in zip(kernel, bins))
    stride = tuple(Fraction(w, o) for w, o in zip(x.spatial, y.spatial))
    return Window(kernel, stride, pad)


# --- upsample --------------------------------------------------------------------------------
@register
class Upsample(Op):
    name = "upsample"
    doc = "nearest-neighbour upsampling: repeat each pixel K times along each axis (K or WxH factors)"
    example = "upsample 2"
    params = (P("factor", SIZE, REQUIRED, positional=True, doc="a factor, like `upsample 2` or `upsample 2x1`"),)

    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        needs_spatial(x, ctx, self.name)
        k = per_axis(a.factor, x, "the factor", ctx)
        return x.with_spatial(tuple(w * ki for w, ki in zip(x.spatial, k)))

    def window(self, a: Args, x: Shape, y: Shape) -> Window:
        k = bcast(a.factor, x.rank)
        return Window((1,) * x.rank, tuple(Fraction(1, ki) for ki in k), tuple(Fraction(ki - 1, 2 * ki) for ki in k))


# --- pad -------------------------------------------------------------------------------------
@register
class Pad(Op):
    name = "pad"
    doc = "pad P pixels on both sides of each axis (P or WxH): zeros, or `reflect` / `edge`"
    example = "pad 1"
    params = (
        P("size", SIZE0, REQUIRED, positional=True, doc="a padding, like `pad 1` or `pad 2x1`"),
        P("mode", choice("zeros", "reflect", "edge"), "zeros", flags=(("reflect", "reflect"), ("edge", "edge"))),
    )

    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        needs_spatial(x, ctx, self.name)
        p = per_axis(a.size, x, "the padding", ctx)
        if a.mode == "reflect" and any(pi >= w for pi, w in zip(p, x.spatial)):
            raise ctx.error(
                f"`reflect` padding of {fmt_size(p)} needs an input larger than that on every axis, but gets {x}",
                "pad less, or use `edge` (repeats the border pixel) or zeros",
            )
        return x.with_spatial(tuple(w + 2 * pi for w, pi in zip(x.spatial, p)))

    def window(self, a: Args, x: Shape, y: Shape) -> Window:
        p = bcast(a.size, x.rank)
        return Window((1,) * x.rank, (Fraction(1),) * x.rank, tuple(Fraction(pi) for pi in p))


# --- adaptive pooling ------------------------------------------------------------------------
def adaptive_bins(n_in: int, n_out: int) -> Bins:
    """PyTorch's bins: output i covers [floor(i*In/Out), ceil((i+1)*In/Out))."""
    return tuple((i * n_in // n_out, -(-(i + 1) * n_in // n_out)) for i in range(n_out))


class _Adaptive(Op):
    params = (P("size", SIZE, REQUIRED, positional=True, doc="an output size, like `7x7` or `1`"),)
    how = "mean"

    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        needs_spatial(x, ctx, self.name)
        return x.with_spatial(per_axis(a.size, x, "the output size", ctx))

    def _bins(self, x: Shape, y: Shape) -> tuple[Bins, ...]:
        return tuple(adaptive_bins(w, o) for w, o in zip(x.spatial, y.spatial))

    def window(self, a: Args, x: Shape, y: Shape) -> Window:
        # Without listing the bins (an output size can be huge): bin i spans
        # ceil((i+1)In/Out) - floor(i In/Out) inputs, the largest of which is found by
        # scanning one period (Out / gcd(In, Out)) when short, else bounded by ceil(In/Out)+1.
        kernel, first = [], []
        for w, o in zip(x.spatial, y.spatial):
            period = o // math.gcd(w, o)
            if period <= 4096:
                k = max(-(-(i + 1) * w // o) - i * w // o for i in range(period))
            else:
                k = -(-w // o) + 1
            kernel.append(k)
            first.append(-(-w // o))
        pad = tuple(Fraction(k - f, 2) for k, f in zip(kernel, first))
        return Window(tuple(kernel), tuple(Fraction(w, o) for w, o in zip(x.spatial, y.spatial)), pad)


@register
class AdaptiveAvgPool(_Adaptive):
    name = "adaptiveavgpool"
    doc = "average pooling to a fixed output size WxH (PyTorch's bins)"
    example = "adaptiveavgpool 7x7"


@register
class AdaptiveMaxPool(_Adaptive):
    name = "adaptivemaxpool"
    doc = "max pooling to a fixed output size WxH (PyTorch's bins)"
    example = "adaptivemaxpool 7x7"
    how = "max"


# --- fractional max pooling ------------------------------------------------------------------
def frac_bins(n_in: int, ratio: Fraction, u: Fraction, overlap: bool, n_out: int | None = None) -> Bins:
    """Graham's pseudo-random regions along one axis (see the module docstring); `n_out`:
    the output size when known (a lowering reads the IR's), else `floor(n_in / ratio)`."""
    if n_out is None:
        n_out = math.floor(n_in / ratio)
    alpha = Fraction(n_in, n_out)
    a = [math.ceil(alpha * (i + u)) - math.ceil(alpha * u) for i in range(n_out + 1)]
    return tuple((a[i], min(a[i + 1] + 1, n_in) if overlap else a[i + 1]) for i in range(n_out))


@register
class FracMaxPool(Op):
    name = "fracmaxpool"
    doc = "fractional max pooling (Graham 2014): output floor(input / R), fixed pseudo-random regions"
    example = "fracmaxpool 1.414"
    params = (
        P("ratio", RATIO, REQUIRED, positional=True, doc="a reduction ratio R > 1, like `fracmaxpool 1.5`"),
        P("offset", OFFSET, Fraction(1, 2), doc="the offset u in a_i = ceil(alpha*(i+u))"),
        P("overlap", BOOL, False, flags=(("overlap", True),)),
    )

    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        needs_spatial(x, ctx, self.name)
        out = tuple(math.floor(w / a.ratio) for w in x.spatial)
        if any(o < 1 for o in out):
            need = math.ceil(a.ratio)
            raise ctx.error(
                f"{ctx.text} turns {x} into an empty output {fmt_size(out)}: every axis needs at least {need} pixels",
                "pool less before it, or use a smaller ratio",
            )
        return x.with_spatial(out)

    def _bins(self, a: Args, x: Shape, y: Shape) -> tuple[Bins, ...]:
        return tuple(frac_bins(w, a.ratio, a.offset, a.overlap, o) for w, o in zip(x.spatial, y.spatial))

    def window(self, a: Args, x: Shape, y: Shape) -> Window:
        return bins_window(self._bins(a, x, y), x, y)
