"""Classic fixed filters: `filter sobel | laplacian | sharpen | blur K | gaussian K | gabor K`.

A filter is a depthwise convolution (a correlation, like every `conv`) whose kernel is a
constant: the same kernel is applied to each input channel on its own. The kernel is
stored per channel in `dwconv`'s layout `(*kernel[::-1], 1, D*M)` (M = maps per channel)
in the `fixed` collection, which is never trained; its size counts as non-trainable
parameters. MACs and receptive field are those of a depthwise conv with that kernel.

Kernels (rows are the height axis, top to bottom; columns the width axis, left to right):

- `sobel`: M = 2 maps per channel, in the order (x, y): output channel `2c` is the
  horizontal derivative of input channel `c`, `[[-1,0,1],[-2,0,2],[-1,0,1]]` (positive
  where the image gets brighter to the right), and `2c+1` the vertical one,
  `[[-1,-2,-1],[0,0,0],[1,2,1]]` (positive where it gets brighter downwards, towards
  larger row index). These equal `scipy.ndimage.sobel(axis=W)` / `(axis=H)` and OpenCV's
  `Sobel(dx=1)` / `Sobel(dy=1)`. 2-D only.
- `laplacian`: `[[0,1,0],[1,-4,1],[0,1,0]]` (4-neighbour; `scipy.ndimage.laplace`). 2-D.
- `sharpen`: `[[0,-1,0],[-1,5,-1],[0,-1,0]]` (identity minus the Laplacian). 2-D.
- `blur K`: the box filter, `1/(Kw*Kh)` everywhere. Any number of axes.
- `gaussian K sigma=S`: the normalised product of 1-D Gaussians
  `exp(-t^2 / (2 S^2))`, `t = j - (K-1)/2`, each summing to 1 (as OpenCV's
  `getGaussianKernel` and scipy's `gaussian_filter` with `radius=(K-1)/2`). Without `sigma`,
  each axis is OpenCV's `getGaussianKernel(K, -1)`: for K = 1, 3, 5, 7 its fixed binomial
  taps (3: `[1/4, 1/2, 1/4]`, 5: `[1, 4, 6, 4, 1]/16`, 7: `[1, 3.5, 7, 9, 7, 3.5, 1]/32`),
  otherwise sigma `0.3*((K-1)/2 - 1) + 0.8`. Any number of axes.
- `gabor K theta=T sigma=S lambda=L [gamma=G] [psi=P]`: the real Gabor function
  `exp(-(x'^2 + G^2 y'^2) / (2 S^2)) * cos(2 pi x'/L + P)` with `x' = x cos T + y sin T`,
  `y' = -x sin T + y cos T`, where x runs right and y runs *up* from the kernel centre
  `((Kw-1)/2, (Kh-1)/2)`. So `theta` is measured counter-clockwise from the width axis as
  the image is seen: `theta=0` responds to stripes that vary along the width (vertical
  bars), `theta=90` to horizontal bars. Angles `theta` and `psi` are in degrees (the
  language has no pi); defaults `theta=0`, `gamma=0.5`, `psi=0` (even, cosine phase;
  OpenCV's `getGaborKernel` defaults to psi = 90 degrees and builds its kernel flipped).
  Not normalised. 2-D only.
- `filter kernel=((1,0,-1),(0,0,0),(-1,0,1)) [scale=S]`: a literal kernel, rows top to
  bottom, each row left to right (as printed, as `scipy.ndimage.correlate` reads a 2-D
  array), multiplied by `scale` (default 1; `scale=1/16` for the binomial Gaussian). Rows
  must all have the same length; any sizes, odd or even (an even axis pads its extra zero
  after, as `same` does for every filter). A flat tuple is one row: `kernel=(1,2,1)` is
  3x1 (or a 1-D kernel on a 1-D input); with a size, a flat tuple fills it row by row, so
  `filter kernel=(1,2,1) size=1x3` is a column. 1-D and 2-D inputs.

Padding: `same` (the default) keeps the size: a total of K-1 zeros per axis, half before and
the rest (one more for even K) after, as `conv ... same` at stride 1 and XLA's `SAME`. So a
border pixel sees zeros beyond the edge (`sobel` responds to the image border; write
`pad 1 reflect -> filter sobel valid` to avoid that). `valid` (= `p0`) shrinks each axis by
K-1; `pN` pads N zeros per side.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from ..errors import ArgumentError, Span
from ..shape import Shape, fmt_size
from ..syntax import ast
from ..syntax.binder import Args, P
from ..syntax.values import FLOAT, SIZE, SIZE0, Env, Kind, choice
from .base import Op, ShapeCtx, Window, bcast, needs_spatial, per_axis, register
from .conv import pads

KINDS = ("sobel", "laplacian", "sharpen", "blur", "gaussian", "gabor")
LITERAL_USAGE = "filter kernel=((0,-1,0),(-1,5,-1),(0,-1,0))"
MAX_LITERAL_TAPS = 4096  # a literal is written by hand; anything larger is a mistake (or belongs in `conv`)
FIXED_3X3 = ("sobel", "laplacian", "sharpen")  # no size argument
TWO_D = ("sobel", "laplacian", "sharpen", "gabor")
GABOR_DEFAULTS = {"theta": 0.0, "lambda": None, "gamma": 0.5, "psi": 0.0}  # options only gabor takes
USAGE = {
    "sobel": "filter sobel",
    "laplacian": "filter laplacian",
    "sharpen": "filter sharpen",
    "blur": "filter blur 3",
    "gaussian": "filter gaussian 5 sigma=1",
    "gabor": "filter gabor 7 theta=45 sigma=2 lambda=4",
}


def _positive(v: ast.Value, env: Env, span: Span) -> float:
    x = FLOAT.convert(v, env, span)
    if x <= 0:
        raise ArgumentError(f"expected a number > 0, got {x:g}", span)
    return x


POSITIVE = Kind("a number > 0", _positive, fmt=FLOAT.fmt)


def _literal(v: ast.Value, env: Env, span: Span) -> tuple[tuple[Fraction, ...], ...]:
    """A literal kernel: rows of numbers `((1,0,-1),(0,0,0),(-1,0,1))`, or one row `(1,2,1)`."""
    from ..syntax.values import EXPRS, evaluate, value_text

    def number(x: Any) -> Fraction:
        if not isinstance(x, EXPRS):
            raise ArgumentError(
                "a literal kernel is rows of numbers (1-D or 2-D), like `((1,0,-1),(0,0,0),(-1,0,1))`",
                span,
                notes=[f"got `{value_text(x)}` where a number goes"],
            )
        return evaluate(x, env)

    if isinstance(v, ast.Tuple) and all(isinstance(r, ast.Tuple) for r in v.items):
        rows = tuple(tuple(number(x) for x in r.items) for r in v.items)
    elif isinstance(v, ast.Tuple) and not any(isinstance(r, ast.Tuple) for r in v.items):
        rows = (tuple(number(x) for x in v.items),)
    elif isinstance(v, EXPRS):
        rows = ((number(v),),)
    elif isinstance(v, ast.Tuple):
        raise ArgumentError(
            "a literal kernel's items are all rows `(a, b, ...)` or all numbers, not a mix",
            span,
            hints=["write each row in parentheses: `kernel=((1,2,1),(2,4,2),(1,2,1))`"],
        )
    else:
        raise ArgumentError(
            f"expected a literal kernel like `((1,0,-1),(0,0,0),(-1,0,1))`, got `{value_text(v)}`", span
        )
    widths = [len(r) for r in rows]
    if len(set(widths)) > 1:
        bad = next(i for i, w in enumerate(widths) if w != widths[0])
        raise ArgumentError(
            f"a literal kernel must be rectangular: row 1 has {widths[0]} numbers, row {bad + 1} has {widths[bad]}",
            span,
            notes=["rows are the height axis, top to bottom; each row runs along the width"],
            hints=["give every row the same number of entries (0 where the kernel takes nothing)"],
        )
    if len(rows) * widths[0] > MAX_LITERAL_TAPS:
        raise ArgumentError(
            f"a literal kernel of {len(rows) * widths[0]:,} numbers is over the {MAX_LITERAL_TAPS:,} written by hand",
            span,
            hints=["use `filter blur K` / `filter gaussian K`, or a trained `conv`"],
        )
    return rows


def _literal_fmt(rows: tuple[tuple[Fraction, ...], ...]) -> str:
    from ..syntax.values import fmt_num

    return "(" + ", ".join("(" + ", ".join(fmt_num(x) for x in r) + ")" for r in rows) + ")"


LITERAL = Kind("a literal kernel like ((1,0,-1),(0,0,0),(-1,0,1))", _literal, fmt=_literal_fmt)


# OpenCV's `getGaussianKernel` uses these fixed (binomial) taps for an odd size up to 7 when
# no sigma is given (its documentation's `small_gaussian_tab`); other sizes use its formula.
OPENCV_SMALL_GAUSSIANS: dict[int, tuple[float, ...]] = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
}


def opencv_default_sigma(k: int) -> float:
    """OpenCV's sigma for a size-k Gaussian given none: `0.3*((k-1)/2 - 1) + 0.8`."""
    return 0.3 * ((k - 1) / 2 - 1) + 0.8


def _gaussian_1d(k: int, sigma: float | None) -> Any:
    """k taps summing to 1, as `cv2.getGaussianKernel(k, sigma or -1)`."""
    import numpy as np

    if sigma is None and k in OPENCV_SMALL_GAUSSIANS:
        return np.array(OPENCV_SMALL_GAUSSIANS[k])
    t = np.arange(k) - (k - 1) / 2
    s = opencv_default_sigma(k) if sigma is None else sigma
    g = np.exp(-(t**2) / (2 * s**2))
    return g / g.sum()


def _rows(a: Args, kernel: tuple[int, ...] | None) -> tuple[tuple[Fraction, ...], ...]:
    """A literal kernel's rows, a flat tuple given with a size laid out row by row into it."""
    rows = a.kernel
    if len(rows) == 1 and a.size is not None and len(a.size) == 2:
        w, h = a.size
        return tuple(rows[0][r * w : (r + 1) * w] for r in range(h))
    return rows


def kernel_maps(a: Args, kernel: tuple[int, ...]) -> Any:
    """The filter's maps as a float64 array `(M, *kernel[::-1])` (array order: rows first)."""
    import numpy as np

    if a.kernel is not None:
        return (np.array(_rows(a, kernel), float).reshape(kernel[::-1]) * float(a.scale))[None]
    if a.kind == "sobel":
        gx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
        return np.stack([gx, gx.T])
    if a.kind == "laplacian":
        return np.array([[[0, 1, 0], [1, -4, 1], [0, 1, 0]]], float)
    if a.kind == "sharpen":
        return np.array([[[0, -1, 0], [-1, 5, -1], [0, -1, 0]]], float)
    if a.kind == "blur":
        return np.full((1, *kernel[::-1]), 1.0 / math.prod(kernel))
    if a.kind == "gaussian":
        out = np.ones(())
        for k in kernel[::-1]:  # array order, so the outer product is (.., H, W)
            out = np.multiply.outer(out, _gaussian_1d(k, a.sigma))
        return out[None]
    # gabor: x to the right, y up, from the centre; array row r has y = centre - r.
    kw, kh = kernel
    x = np.arange(kw) - (kw - 1) / 2
    y = (kh - 1) / 2 - np.arange(kh)
    x, y = np.meshgrid(x, y)  # (kh, kw)
    th, psi = math.radians(a.theta), math.radians(a.psi)
    xr = x * math.cos(th) + y * math.sin(th)
    yr = -x * math.sin(th) + y * math.cos(th)
    env = np.exp(-(xr**2 + a.gamma**2 * yr**2) / (2 * a.sigma**2))
    return (env * np.cos(2 * math.pi * xr / a["lambda"] + psi))[None]


@register
class Filter(Op):
    name = "filter"
    doc = (
        "a classic fixed kernel on each channel: sobel (2 maps per channel: x then y), laplacian, "
        "sharpen, blur K, gaussian K sigma=S, gabor K theta=T sigma=S lambda=L; keeps the size (same)"
    )
    example = "filter gaussian 5 sigma=1"
    params = (
        P("kind", choice(*KINDS), None, positional=True, doc="a filter: " + ", ".join(KINDS) + " (or `kernel=`)"),
        P("size", SIZE, None, positional=True, doc="a kernel size, like `5` or `5x3`"),
        P("pad", SIZE0, "same", short="p", flags=(("same", "same"), ("valid", (0,)))),
        P("sigma", POSITIVE, None, doc="the Gaussian's standard deviation in pixels"),
        P("theta", FLOAT, GABOR_DEFAULTS["theta"], doc="the Gabor orientation in degrees"),
        P("lambda", POSITIVE, GABOR_DEFAULTS["lambda"], doc="the Gabor wavelength in pixels"),
        P("gamma", POSITIVE, GABOR_DEFAULTS["gamma"], doc="the Gabor aspect ratio"),
        P("psi", FLOAT, GABOR_DEFAULTS["psi"], doc="the Gabor phase offset in degrees"),
        P("kernel", LITERAL, None, doc="a literal kernel: rows top to bottom, like `((1,0,-1),(0,0,0),(-1,0,1))`"),
        P("scale", FLOAT, 1, doc="multiplies a literal kernel, like `scale=1/16`"),
    )

    def _check_args(self, a: Args, ctx: ShapeCtx) -> None:
        if a.kernel is not None or a.kind is None:
            return self._check_literal(a, ctx)
        usage = f"usage: `{USAGE[a.kind]}`"
        if a.scale != 1:
            raise ArgumentError(
                f"`scale` is an option of a literal kernel, not `filter {a.kind}`",
                ctx.span,
                hints=[f"usage: `{LITERAL_USAGE} scale=1/2`"],
            )
        if a.kind in FIXED_3X3 and a.size not in (None, (3,), (3, 3)):
            raise ArgumentError(
                f"`filter {a.kind}` is always 3x3, got size {fmt_size(a.size)}", ctx.span, hints=[usage]
            )
        if a.kind not in FIXED_3X3 and a.size is None:
            raise ArgumentError(f"`filter {a.kind}` needs a kernel size", ctx.span, hints=[usage])
        given = [n for n, d in GABOR_DEFAULTS.items() if a[n] != d]
        if a.kind != "gabor" and given:
            raise ArgumentError(
                f"`{given[0]}` is an option of `filter gabor`, not `filter {a.kind}`", ctx.span, hints=[usage]
            )
        if a.sigma is not None and a.kind not in ("gaussian", "gabor"):
            raise ArgumentError(
                f"`sigma` is an option of `filter gaussian` and `filter gabor`, not `filter {a.kind}`",
                ctx.span,
                hints=[usage],
            )
        if a.kind == "gabor" and (a.sigma is None or a["lambda"] is None):
            missing = " and ".join(f"`{n}=`" for n in ("sigma", "lambda") if a[n] is None)
            raise ArgumentError(f"`filter gabor` needs {missing}", ctx.span, hints=[usage])

    def _check_literal(self, a: Args, ctx: ShapeCtx) -> None:
        usage = f"usage: `{LITERAL_USAGE}`"
        if a.kernel is None:
            raise ArgumentError(
                "`filter` needs a kind (" + ", ".join(KINDS) + ") or a literal `kernel=`",
                ctx.span,
                hints=["e.g. `filter sobel`, `filter gaussian 5`, or `" + LITERAL_USAGE + "`"],
            )
        if a.kind is not None:
            raise ArgumentError(f"`kernel=` is a filter of its own: leave out `{a.kind}`", ctx.span, hints=[usage])
        given = [n for n, d in GABOR_DEFAULTS.items() if a[n] != d] + (["sigma"] if a.sigma is not None else [])
        if given:
            raise ArgumentError(f"`{given[0]}` is not an option of a literal kernel", ctx.span, hints=[usage])
        rows = a.kernel
        if a.size is not None:
            taps = len(rows) * len(rows[0])
            want = a.size if len(a.size) > 1 else (a.size[0], 1)
            if len(want) != 2 or math.prod(want) != taps or (len(rows) > 1 and (len(rows[0]), len(rows)) != want):
                raise ArgumentError(
                    f"the size {fmt_size(a.size)} does not fit the literal kernel "
                    f"({len(rows[0])}x{len(rows)}: {len(rows)} row{'s' if len(rows) > 1 else ''} "
                    f"of {len(rows[0])}, width x height)",
                    ctx.span,
                    hints=["leave the size out (the rows give it), or give a flat tuple that fills WxH row by row"],
                )

    def _kernel(self, a: Args, rank: int) -> tuple[int, ...]:
        if a.kernel is not None:
            rows = _rows(a, None)
            return (len(rows[0]),) if rank == 1 and len(rows) == 1 else (len(rows[0]), len(rows))
        return bcast(a.size, rank) if a.size is not None else (3,) * rank

    def _maps(self, a: Args) -> int:
        return 2 if a.kind == "sobel" else 1

    def _pads(self, a: Args, x: Shape) -> tuple[tuple[int, int], ...]:
        """Stride 1, so `same` keeps the grid: conv's padding rule with the output grid = `x`'s."""
        return pads(a, x, x, self._kernel(a, x.rank), (1,) * x.rank)

    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        self._check_args(a, ctx)
        needs_spatial(x, ctx, f"filter {a.kind}" if a.kernel is None else "a literal filter kernel")
        if a.kernel is not None and len(self._kernel(a, x.rank)) != x.rank:
            rows = _rows(a, None)
            raise ctx.error(
                f"a {len(rows[0])}x{len(rows)} literal kernel is 2-D, but gets {x}",
                "a literal kernel is 1-D (one row) or 2-D; `filter blur K` and `filter gaussian K` take any rank",
            )
        if a.kernel is not None and a.size is not None:
            a = Args({**dict(a.items()), "size": None})  # the size was checked against the rows
        if a.kind in TWO_D and x.rank != 2:
            raise ctx.error(
                f"`filter {a.kind}` works on images (D@WxH), but gets {x}",
                "`filter blur K` and `filter gaussian K` work on any number of axes",
            )
        if a.size is not None:
            per_axis(a.size, x, "the kernel", ctx)
        if a.pad != "same":
            per_axis(a.pad, x, "the padding", ctx)
        k = self._kernel(a, x.rank)
        pads = self._pads(a, x)
        out = tuple(w + b + e - ki + 1 for w, (b, e), ki in zip(x.spatial, pads, k))
        if any(o < 1 for o in out):
            need = tuple(ki - b - e for ki, (b, e) in zip(k, pads))
            raise ctx.error(
                f"{ctx.text} needs an input of at least {fmt_size(need)}, but gets {x}",
                "use `same` padding (the default), a smaller kernel, or pool less before it",
            )
        return Shape(x.depth * self._maps(a), out)

    def count(self, a: Args, x: Shape, y: Shape) -> tuple[int, int]:
        return 0, y.depth * math.prod(self._kernel(a, x.rank))

    def macs(self, a: Args, x: Shape, y: Shape) -> int:
        return y.size * math.prod(self._kernel(a, x.rank))

    def window(self, a: Args, x: Shape, y: Shape) -> Window:
        k = self._kernel(a, x.rank)
        return Window(k, (Fraction(1),) * x.rank, tuple(Fraction(b) for b, _ in self._pads(a, x)))

    def init(self, a: Args, x: Shape, y: Shape, rng: Any) -> dict[str, tuple[str, Any]]:
        import numpy as np

        maps = kernel_maps(a, self._kernel(a, x.rank))  # (M, *k[::-1])
        per_channel = np.moveaxis(maps, 0, -1)[..., None, :]  # (*k[::-1], 1, M)
        tiled = np.tile(per_channel, (1,) * x.rank + (1, x.depth))  # channel c*M + m = map m
        return {"kernel": ("fixed", np.asarray(tiled, np.float32))}
