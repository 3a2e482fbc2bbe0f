"""Convolutions: `conv`, `dwconv`, `deconv`.

Output size (per axis, PyTorch/Caffe formula): `floor((W + 2P - D(K-1) - 1) / S) + 1`.
`same` pads so the output is `ceil(W / S)`, the extra pixel (if the total is odd) going at
the end, as XLA/TensorFlow/Flax `SAME` do; PyTorch's `padding='same'` agrees for stride 1 and
refuses other strides. `valid` is `p0`. Kernels are stored as Flax stores them:
`(*kernel[::-1], in/groups, out)` (HWIO), bias `(out,)`; initialised like `nnx.Conv`
(LeCun normal kernel, zero bias).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from ..shape import Shape, fmt_size
from ..syntax.binder import REQUIRED, Args, P
from ..syntax.values import BOOL, DEPTH_KERNEL, INT, SIZE, SIZE0
from .base import Op, ShapeCtx, Window, bcast, fold_input_map, needs_spatial, per_axis, register

STRIDE = P("stride", SIZE, (1,), short="s", doc="the stride")
DILATION = P("dilation", SIZE, (1,), short="d", doc="the dilation")
PAD = P("pad", SIZE0, (0,), short="p", flags=(("same", "same"), ("valid", (0,))), doc="the zero padding")
BIAS = P("bias", BOOL, True, flags=(("nobias", False),))


def geometry(a: Args, kernel: tuple[int, ...], rank: int):
    """Kernel, stride, dilation and effective kernel `D(K-1)+1`, per axis (written order)."""
    k, s, d = bcast(kernel, rank), bcast(a.stride, rank), bcast(a.dilation, rank)
    return k, s, d, tuple(di * (ki - 1) + 1 for ki, di in zip(k, d))


def pads(a: Args, x: Shape, y: Shape, eff, s) -> tuple[tuple[int, int], ...]:
    """(before, after) zero padding per axis that turns `x` into `y` (written order)."""
    if a.pad == "same":
        out = []
        for w, o, si, e in zip(x.spatial, y.spatial, s, eff):
            total = max((o - 1) * si + e - w, 0)
            out.append((total // 2, total - total // 2))
        return tuple(out)
    return tuple((pi, pi) for pi in bcast(a.pad, x.rank))


def conv_out(x: Shape, kernel: tuple[int, ...], a: Args, ctx: ShapeCtx, what: str) -> tuple[int, ...]:
    """Output spatial size, or a ShapeError naming the smallest input that would work."""
    needs_spatial(x, ctx, what)
    for v, w in ((kernel, "the kernel"), (a.stride, "the stride"), (a.dilation, "the dilation")):
        per_axis(v, x, w, ctx)
    _, s, d, eff = geometry(a, kernel, x.rank)
    if a.pad == "same":
        return tuple(-(-w // si) for w, si in zip(x.spatial, s))
    p = per_axis(a.pad, x, "the padding", ctx)
    if any(2 * pi + w < e for w, pi, e in zip(x.spatial, p, eff)):
        need = tuple(e - 2 * pi for e, pi in zip(eff, p))
        keep = max(eff)
        dil = " (dilated)" if any(di > 1 for di in d) else ""
        fix = (
            f"pad it (`p{(keep - 1) // 2}` keeps {fmt_size(x.spatial)}), use a smaller kernel, or pool less before it"
            if keep % 2 == 1 and all(si == 1 for si in s)
            else "pad it (or use `same`), use a smaller kernel, or pool less before it"
        )
        raise ctx.error(f"{ctx.text} needs an input of at least {fmt_size(need)}{dil}, but gets {x}", fix)
    return tuple((w + 2 * pi - e) // si + 1 for w, pi, e, si in zip(x.spatial, p, eff, s))


def _check_groups(x: Shape, f: int, g: int, ctx: ShapeCtx) -> None:
    if x.depth % g or f % g:
        bad = []
        if x.depth % g:
            bad.append(f"the input depth {x.depth}")
        if f % g:
            bad.append(f"the filter count {f}")
        raise ctx.error(
            f"groups={g} must divide {' and '.join(bad)}",
            f"choose groups that divide both {x.depth} and {f}",
        )


def lecun_kernel(rng: Any, shape: tuple[int, ...]) -> Any:
    """Flax's default kernel initialiser, LeCun normal (`variance_scaling(1, "fan_in",
    "truncated_normal")`; fan-in = all axes but the last), drawn with NumPy: a truncated
    standard normal on [-2, 2] scaled to variance 1/fan_in. `rng`: a NumPy Generator, or
    when a backend traces the initialisation (`jax.eval_shape(net.init, key)`) its own
    generator, which draws the same distribution with `rng.lecun_normal(shape)`."""
    import numpy as np

    if not isinstance(rng, np.random.Generator):
        return rng.lecun_normal(shape)

    std = np.sqrt(1.0 / math.prod(shape[:-1])) / 0.87962566103423978  # std of N(0,1) cut at ±2
    z = rng.standard_normal(shape)
    bad = np.abs(z) > 2
    while bad.any():
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > 2
    return (z * std).astype(np.float32)


def _bias_init(f: int) -> tuple[str, Any]:
    import numpy as np

    return ("params", np.zeros((f,), np.float32))


class _ConvBase(Op):
    linear = True  # kernel (*K[::-1], D_in / groups, F): output channels last

    def fold_before(self, a: Args, x: Shape, p: dict[str, Any], mul: Any, add: Any) -> dict[str, Any] | None:
        """Exact for groups 1 (each output reads every input channel once per tap), and with
        an offset only if nothing is zero-padded (a padded zero would stand for another value)."""
        pads_any = a.pad == "same" or any(a.pad)
        if self._groups(a, x) != 1 or (pads_any and bool((add != 0).any())):
            return None
        return fold_input_map(p, mul, add)

    def _kernel(self, a: Args) -> tuple[int, ...]:
        return a.filters[1]

    def _filters(self, a: Args, x: Shape) -> int:
        return a.filters[0]

    def _groups(self, a: Args, x: Shape) -> int:
        return a.groups

    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        out = conv_out(x, self._kernel(a), a, ctx, self.name)
        _check_groups(x, self._filters(a, x), self._groups(a, x), ctx)
        if any(o < 1 for o in out):
            raise ctx.error(f"{ctx.text} gives an empty output from {x}", "use a smaller stride")
        return Shape(self._filters(a, x), out)

    def count(self, a: Args, x: Shape, y: Shape) -> tuple[int, int]:
        f, g = self._filters(a, x), self._groups(a, x)
        k = bcast(self._kernel(a), x.rank)
        return f * (x.depth // g) * math.prod(k) + (f if a.bias else 0), 0

    def macs(self, a: Args, x: Shape, y: Shape) -> int:
        k = bcast(self._kernel(a), x.rank)
        return y.size * (x.depth // self._groups(a, x)) * math.prod(k)

    def window(self, a: Args, x: Shape, y: Shape) -> Window:
        _, s, _, eff = geometry(a, self._kernel(a), x.rank)
        p = pads(a, x, y, eff, s)
        return Window(eff, tuple(Fraction(v) for v in s), tuple(Fraction(b) for b, _ in p))

    def init(self, a: Args, x: Shape, y: Shape, key: Any) -> dict[str, tuple[str, Any]]:
        f, g = self._filters(a, x), self._groups(a, x)
        k = bcast(self._kernel(a), x.rank)
        out = {"kernel": ("params", lecun_kernel(key, (*k[::-1], x.depth // g, f)))}
        if a.bias:
            out["bias"] = _bias_init(f)
        return out


@register
class Conv(_ConvBase):
    name = "conv"
    doc = "F filters of size KxK; stride, zero padding (or same/valid), dilation, groups"
    example = "conv 16@3x3 s1 p1"
    params = (
        P("filters", DEPTH_KERNEL, REQUIRED, positional=True, doc="filters and a kernel, like `16@3x3`"),
        STRIDE,
        PAD,
        DILATION,
        P("groups", INT, 1, short="g", doc="the number of groups"),
        BIAS,
    )


@register
class DwConv(_ConvBase):
    name = "dwconv"
    doc = "depthwise convolution: one KxK filter per input channel (groups = depth)"
    example = "dwconv 3x3 s1 p1"
    params = (
        P("kernel", SIZE, REQUIRED, positional=True, doc="a kernel size, like `3x3`"),
        STRIDE,
        PAD,
        DILATION,
        BIAS,
    )

    def _kernel(self, a: Args) -> tuple[int, ...]:
        return a.kernel

    def _filters(self, a: Args, x: Shape) -> int:
        return x.depth

    def _groups(self, a: Args, x: Shape) -> int:
        return x.depth


@register
class Deconv(Op):
    """Transposed convolution, output `(W-1)*S - 2P + K + outpad` as in PyTorch and Caffe.

    (The JAX backend computes it as a convolution of the stride-dilated input with the
    spatially flipped kernel: `backends/jax/lowerings/conv.py`.)
    """

    name = "deconv"
    linear = True  # kernel (*K[::-1], D_in, F): output channels last
    doc = "transposed convolution; output (W-1)*S - 2P + K"
    example = "deconv 64@2x2 s2"
    params = (
        P("filters", DEPTH_KERNEL, REQUIRED, positional=True, doc="filters and a kernel, like `64@2x2`"),
        P("stride", SIZE, (1,), short="s"),
        P("pad", SIZE0, (0,), short="p"),
        P("outpad", SIZE0, (0,), doc="extra output size at the end (PyTorch output_padding)"),
        BIAS,
    )

    def _geom(self, a: Args, rank: int):
        return tuple(bcast(v, rank) for v in (a.filters[1], a.stride, a.pad, a.outpad))

    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        needs_spatial(x, ctx, self.name)
        for v, w in (
            (a.filters[1], "the kernel"),
            (a.stride, "the stride"),
            (a.pad, "the padding"),
            (a.outpad, "outpad"),
        ):
            per_axis(v, x, w, ctx)
        k, s, p, op = self._geom(a, x.rank)
        if any(o >= si for o, si in zip(op, s)):
            raise ctx.error("outpad must be smaller than the stride", "use outpad 0, or 1 with stride 2")
        out = tuple((w - 1) * si - 2 * pi + ki + oi for w, si, pi, ki, oi in zip(x.spatial, s, p, k, op))
        if any(o < 1 for o in out):
            raise ctx.error(f"{ctx.text} gives an empty output from {x}", "use less padding")
        return Shape(a.filters[0], out)

    def count(self, a: Args, x: Shape, y: Shape) -> tuple[int, int]:
        f = a.filters[0]
        return f * x.depth * math.prod(self._geom(a, x.rank)[0]) + (f if a.bias else 0), 0

    def macs(self, a: Args, x: Shape, y: Shape) -> int:
        return x.size * a.filters[0] * math.prod(self._geom(a, x.rank)[0])

    def window(self, a: Args, x: Shape, y: Shape) -> Window:
        # Output j is centred on input coordinate (j + P - (K-1)/2) / S and sees ceil(K/S)
        # inputs; the window's pad is what puts that centre where `Window` expects it.
        k, s, p, _ = self._geom(a, x.rank)
        seen = tuple(-(-ki // si) for ki, si in zip(k, s))
        return Window(
            seen,
            tuple(Fraction(1, si) for si in s),
            tuple(Fraction(n - 1, 2) - (pi - Fraction(ki - 1, 2)) / si for n, ki, si, pi in zip(seen, k, s, p)),
        )

    def init(self, a: Args, x: Shape, y: Shape, key: Any) -> dict[str, tuple[str, Any]]:
        k = self._geom(a, x.rank)[0]
        f = a.filters[0]
        out = {"kernel": ("params", lecun_kernel(key, (*k[::-1], x.depth, f)))}
        if a.bias:
            out["bias"] = _bias_init(f)
        return out
