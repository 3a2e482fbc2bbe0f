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
from .base import (
    BOOL,
    DEPTH_KERNEL,
    INT,
    REQUIRED,
    SIZE,
    SIZE0,
    ApplyCtx,
    Args,
    Op,
    P,
    ShapeCtx,
    Window,
    bcast,
    fold_input_map,
    needs_spatial,
    per_axis,
    per_channel,
    register,
)

STRIDE = P("stride", SIZE, (1,), short="s", doc="the stride")
DILATION = P("dilation", SIZE, (1,), short="d", doc="the dilation")
PAD = P("pad", SIZE0, (0,), short="p", flags=(("same", "same"), ("valid", (0,))), doc="the zero padding")
BIAS = P("bias", BOOL, True, flags=(("nobias", False),))
WINOGRAD_MIN_DEPTH = 128  # inference: Winograd F(4x4, 3x3) for 3x3 convolutions this deep


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


def _dimension_numbers(rank: int) -> tuple[str, str, str]:
    sp = "DHW"[-rank:]
    return (f"N{sp}C", f"{sp}IO", f"N{sp}C")


def lecun_kernel(rng: Any, shape: tuple[int, ...]) -> Any:
    """Flax's default kernel initialiser, LeCun normal (`variance_scaling(1, "fan_in",
    "truncated_normal")`; fan-in = all axes but the last), drawn with NumPy: a truncated
    standard normal on [-2, 2] scaled to variance 1/fan_in. `rng`: a NumPy Generator, or a
    JAX key when traced (`jax.eval_shape(net.init, key)`)."""
    import numpy as np

    if not isinstance(rng, np.random.Generator):
        import jax

        return jax.nn.initializers.lecun_normal()(rng, shape)

    std = np.sqrt(1.0 / math.prod(shape[:-1])) / 0.87962566103423978  # std of N(0,1) cut at ±2
    z = rng.standard_normal(shape)
    bad = np.abs(z) > 2
    while bad.any():
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > 2
    return (z * std).astype(np.float32)


def conv_apply(x: Any, kernel: Any, strides, padding, dilation, groups: int, lhs_dilation=None, accumulate=None) -> Any:
    """`x: (N, *spatial[::-1], C)`; strides, padding and dilation in *written* order;
    `accumulate`: the result dtype of a low-precision convolution (float32)."""
    from jax import lax

    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=tuple(strides)[::-1],
        padding=tuple(padding)[::-1],
        lhs_dilation=None if lhs_dilation is None else tuple(lhs_dilation)[::-1],
        rhs_dilation=tuple(dilation)[::-1],
        dimension_numbers=_dimension_numbers(x.ndim - 2),
        feature_group_count=groups,
        preferred_element_type=accumulate,
    )


def conv_patches(x: Any, kernel: Any, strides, padding, dilation, out_size, accumulate=None) -> Any:
    """The same convolution (groups = 1) as patches + one matmul (im2col).

    Each kernel offset contributes a strided slice of the padded input; the slices are
    concatenated on depth in the kernel's (k..., C) order and multiplied by the kernel
    reshaped to `(prod(k) * C, F)`. XLA runs the matmul (and its gradients) on every core,
    where its CPU convolution uses one. Arguments in *written* order, like `conv_apply`.
    """
    import itertools

    import jax.numpy as jnp

    s, d, out = tuple(strides)[::-1], tuple(dilation)[::-1], tuple(out_size)[::-1]
    k = kernel.shape[:-2]
    xp = jnp.pad(x, ((0, 0), *tuple(padding)[::-1], (0, 0)))
    slices = []
    for offs in itertools.product(*(range(ki) for ki in k)):
        idx = tuple(slice(o * di, o * di + (n - 1) * si + 1, si) for o, di, n, si in zip(offs, d, out, s))
        slices.append(xp[(slice(None), *idx, slice(None))])
    patches = slices[0] if len(slices) == 1 else jnp.concatenate(slices, axis=-1)
    return jnp.matmul(patches, kernel.reshape(-1, kernel.shape[-1]), preferred_element_type=accumulate)


def _with_gradient(primal, bwd) -> Any:
    """`primal(x, kernel)` with the hand-written gradient `bwd((x, kernel), g) -> (dx, dw)`."""
    import jax

    conv = jax.custom_vjp(primal)
    conv.defvjp(lambda x, kernel: (primal(x, kernel), (x, kernel)), bwd)
    return conv


def conv_shift(x: Any, kernel: Any, strides, padding, dilation, out_size) -> Any:
    """The convolution as a sum of shifted, scaled copies of the input, one per kernel offset
    and input channel: `y = sum_{k,c} x[shifted by k][..., c] * W[k, c, :]`, which XLA fuses
    into one elementwise loop. For a layer with a tiny contraction (input depth x kernel
    area <= 32: LeNet-5's conv1, 1 x 5x5) that is 7x faster than XLA's convolution on x86-64
    CPUs (2.4 vs 0.33 ms at batch 128; with the weight gradient 3.3 vs 1.2 ms). Gradients are
    XLA's convolution gradients. groups = 1; *written* order arguments.
    """
    import itertools

    import jax
    import jax.numpy as jnp

    s, d, out = tuple(strides)[::-1], tuple(dilation)[::-1], tuple(out_size)[::-1]

    def forward(x, kernel):
        return conv_apply(x, kernel, strides, padding, dilation, 1)

    def conv(x, kernel):
        k, c = kernel.shape[:-2], kernel.shape[-2]
        xp = jnp.pad(x, ((0, 0), *tuple(padding)[::-1], (0, 0)))
        y = None
        for offs in itertools.product(*(range(ki) for ki in k)):
            idx = tuple(slice(o * di, o * di + (n - 1) * si + 1, si) for o, di, n, si in zip(offs, d, out, s))
            window = xp[(slice(None), *idx, slice(None))]
            for ci in range(c):
                term = window[..., ci : ci + 1] * kernel[(*offs, ci)].reshape((1,) * (x.ndim - 1) + (-1,))
                y = term if y is None else y + term
        # A product with the identity (exact) materialises the sum once: otherwise XLA fuses
        # it into every consumer, and the backward pass's fusions (a max-pool gradient, say)
        # each recompute all of it. (`optimization_barrier` does not stop fusion.)
        return jnp.matmul(y, jnp.eye(y.shape[-1], dtype=y.dtype), precision=jax.lax.Precision.HIGHEST)

    def bwd(res, g):
        x, kernel = res
        return jax.vjp(forward, x, kernel)[1](g)

    return _with_gradient(conv, bwd)(x, kernel)


def conv_depthwise(x: Any, kernel: Any, strides, padding, dilation, out_size) -> Any:
    """A depthwise convolution (one filter per channel, `kernel: (*k, 1, C)`) as a sum of
    shifted inputs scaled per channel, `y = sum_k x[shifted by k] * W[k, 0, :]`: one fused
    elementwise loop (9 multiply-adds per output for 3x3). The input gradient is JAX's (the
    transposed slices, fused likewise); the kernel gradient, a per-channel sum over batch and
    positions per offset, is a product with a ones vector (XLA:CPU sums over leading axes
    slowly, as for batch norm), 1.2-2x faster than JAX's own. XLA:CPU's grouped convolution
    runs depthwise layers far below the machine's speed: MobileNetV2's 8x112x112x32 3x3 layer
    takes 352 ms forward by XLA and 5 ms this way, its 8x7x7x960 one 13.5 vs 0.6 ms; forward
    and both gradients 569 vs 176 ms and 95 vs 7 ms (2-core Xeon, shared machine). *Written*
    order arguments, like `conv_apply`.
    """
    import itertools

    import jax
    import jax.numpy as jnp

    s, d, out = tuple(strides)[::-1], tuple(dilation)[::-1], tuple(out_size)[::-1]
    k = kernel.shape[:-2]
    offsets = list(itertools.product(*(range(ki) for ki in k)))

    def shifted(xp, offs):
        idx = tuple(slice(o * di, o * di + (n - 1) * si + 1, si) for o, di, n, si in zip(offs, d, out, s))
        return xp[(slice(None), *idx, slice(None))]

    def pad(x):
        return jnp.pad(x, ((0, 0), *tuple(padding)[::-1], (0, 0)))

    def conv(x, kernel):
        xp = pad(x)
        y = None
        for offs in offsets:
            term = shifted(xp, offs) * kernel[(*offs, 0)].reshape((1,) * (x.ndim - 1) + (-1,))
            y = term if y is None else y + term
        return y

    def bwd(res, g):
        x, kernel = res
        dx = jax.vjp(lambda x: conv(x, kernel), x)[1](g)[0]
        xp, c = pad(x), kernel.shape[-1]
        ones = jnp.ones((1, math.prod(g.shape[:-1])), g.dtype)
        rows = [ones @ (shifted(xp, offs) * g).reshape(-1, c) for offs in offsets]
        return dx, jnp.concatenate(rows, 0).reshape(kernel.shape).astype(kernel.dtype)

    return _with_gradient(conv, bwd)(x, kernel)


def conv_col2im_grad(x: Any, kernel: Any, strides, padding, dilation, out_size) -> Any:
    """XLA's convolution forward and weight gradient, with the *input* gradient as one matmul
    plus a fused shift-and-add (col2im) instead of XLA's transposed convolution.

    XLA:CPU runs that transposed convolution slowly when it has few output channels, i.e. when
    the layer's input depth is small (LeNet-5's conv2: 6 channels, 2.9 ms of a 10 ms train
    step). Here `dP = dy @ W^T` has one column block per kernel offset; block `o` goes back to
    the input positions `o * dilation + j * stride` via `lax.pad` (interior padding places the
    strides), and the blocks are summed. groups = 1; arguments in *written* order.
    """
    import itertools

    import jax
    from jax import lax

    s, d = tuple(strides)[::-1], tuple(dilation)[::-1]
    pad, out = tuple(tuple(p) for p in padding)[::-1], tuple(out_size)[::-1]

    def forward(x, kernel):
        return conv_apply(x, kernel, strides, padding, dilation, 1)

    def bwd(res, g):
        x, kernel = res
        k, c = kernel.shape[:-2], kernel.shape[-2]
        dp = g @ kernel.reshape(-1, kernel.shape[-1]).T  # (N, *out, prod(k) * C)
        size = [n + lo + hi for n, (lo, hi) in zip(x.shape[1:-1], pad)]
        dxp = None
        for i, offs in enumerate(itertools.product(*(range(ki) for ki in k))):
            block = dp[..., i * c : (i + 1) * c]
            cfg = [(0, 0, 0)]
            for o, di, si, n, full in zip(offs, d, s, out, size):
                lo = o * di
                cfg.append((lo, full - lo - ((n - 1) * si + 1), si - 1))
            cfg.append((0, 0, 0))
            part = lax.pad(block, jax.numpy.zeros((), block.dtype), cfg)
            dxp = part if dxp is None else dxp + part
        crop = [(0, 0, 0), *((-lo, -hi, 0) for lo, hi in pad), (0, 0, 0)]
        dx = lax.pad(dxp, jax.numpy.zeros((), dxp.dtype), crop)
        dw = jax.vjp(lambda w: forward(x, w), kernel)[1](g)[0]
        return dx, dw

    return _with_gradient(forward, bwd)(x, kernel)


# Winograd F(4x4, 3x3) (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural
# Networks"): interpolation points 0, ±1, ±2, ∞. Output tile 4x4, input tile 6x6.
_WINOGRAD_BT = (
    (4, 0, -5, 0, 1, 0),
    (0, -4, -4, 1, 1, 0),
    (0, 4, -4, -1, 1, 0),
    (0, -2, -1, 2, 1, 0),
    (0, 2, -1, -2, 1, 0),
    (0, 4, 0, -5, 0, 1),
)
_WINOGRAD_G = (
    (Fraction(1, 4), 0, 0),
    (Fraction(-1, 6), Fraction(-1, 6), Fraction(-1, 6)),
    (Fraction(-1, 6), Fraction(1, 6), Fraction(-1, 6)),
    (Fraction(1, 24), Fraction(1, 12), Fraction(1, 6)),
    (Fraction(1, 24), Fraction(-1, 12), Fraction(1, 6)),
    (0, 0, 1),
)
_WINOGRAD_AT = (
    (1, 1, 1, 1, 1, 0),
    (0, 1, -1, 2, -2, 0),
    (0, 1, 1, 4, 4, 0),
    (0, 1, -1, 8, -8, 1),
)


def _transform(mat: tuple, x: Any, axis: int) -> Any:
    """Contract `x`'s `axis` (size 6) with the constant `mat` (r x 6); the result's axis 0 has
    size r. As a broadcast multiply and a sum, which XLA fuses into one loop: a dot with a
    contraction of 6 is slower on XLA:CPU, and sums of slices compile 5-10x slower."""
    import jax.numpy as jnp
    import numpy as np

    m = np.array(mat, dtype=np.float32)
    x = jnp.moveaxis(x, axis, 0)
    return jnp.sum(m.reshape(m.shape + (1,) * (x.ndim - 1)) * x[None], axis=1)


def winograd_kernel(kernel: Any) -> Any:
    """`(3, 3, C, F)` -> the transformed kernel `G g G^T`, `(36, C, F)`, as one product with
    `G ⊗ G` (36 x 9): faster on XLA:CPU than an einsum with `G` (contractions of 3) or than
    elementwise sums."""
    import numpy as np

    g = np.array(_WINOGRAD_G, dtype=np.float64)
    return (np.kron(g, g).astype(np.float32) @ kernel.reshape(9, -1)).reshape(36, *kernel.shape[2:])


def _winograd(x: Any, u: Any, padding, out_size) -> Any:
    """The F(4x4, 3x3) convolution of `x` (N, H, W, C) with the transformed kernel `u`
    (36, C, F); `padding` ((before, after) per axis) and `out_size` in *written* order.
    Padding after the input is whatever the tiles need (`lax.pad`, negative = crop)."""
    import jax.numpy as jnp
    from jax import lax

    m, a = 4, 6
    (plw, _), (plh, _) = (tuple(p) for p in padding)
    out_w, out_h = out_size
    n, h, w, c = x.shape
    th, tw = -(-out_h // m), -(-out_w // m)  # tiles per column and per row
    cfg = [(0, 0, 0), (plh, m * th + 2 - h - plh, 0), (plw, m * tw + 2 - w - plw, 0), (0, 0, 0)]
    xp = lax.pad(x, jnp.zeros((), x.dtype), cfg)
    # columns first, then rows, so that v's frequencies come out (row, column) like u's
    cols = jnp.stack([xp[:, :, j : j + m * (tw - 1) + 1 : m] for j in range(a)])  # (6, n, H', tw, c)
    r = _transform(_WINOGRAD_BT, cols, 0)
    rows = jnp.stack([r[:, :, i : i + m * (th - 1) + 1 : m] for i in range(a)])  # (6, 6, n, th, tw, c)
    v = _transform(_WINOGRAD_BT, rows, 0).reshape(a * a, n * th * tw, c)
    f = u.shape[-1]
    mm = jnp.einsum("kpc,kcf->kpf", v, u).reshape(a, a, n, th, tw, f)
    y = _transform(_WINOGRAD_AT, _transform(_WINOGRAD_AT, mm, 1), 1)  # (4 row, 4 col, n, th, tw, f)
    y = y.transpose(2, 3, 0, 4, 1, 5).reshape(n, m * th, m * tw, f)
    return y[:, :out_h, :out_w]


def conv_winograd(x: Any, kernel: Any, padding, out_size) -> Any:
    """A 2-D 3x3 convolution, stride 1, dilation 1, groups 1, by Winograd's minimal filtering
    F(4x4, 3x3): 36 multiplies per 16 outputs instead of 144, i.e. 4x fewer MACs, done as 36
    independent `(tiles, C) @ (C, F)` matmuls between elementwise input and output transforms.

    The transforms cost memory traffic (the transformed input is 2.25x the input, the
    transformed kernel 4x the kernel), so this pays where channels are deep, images small and
    batches not tiny (`_ConvBase.winograd_pays`): at batch 64 on a 2-core AVX2 CPU 256@8x8 ran
    2-2.8x faster than XLA's convolution, but 64@32x32 1.8x slower. Rounding differs from the
    direct convolution by ~1e-5 of the output's magnitude in float32 (the constants 4, 5, 8
    and 1/24 amplify it).

    Gradient (written out: differentiating through the tile slices gives pads that XLA:CPU
    runs 4-10x slower than the convolution): the input gradient of a stride-1 3x3 convolution
    is again one, of the output gradient with the flipped, transposed kernel, so it is
    Winograd too; the kernel gradient is XLA's. Arguments in *written* order, like
    `conv_apply`.
    """
    import jax

    (lw, hw), (lh, hh) = (tuple(p) for p in padding)

    def forward(x, kernel):
        return _winograd(x, winograd_kernel(kernel), padding, out_size)

    def bwd(res, g):
        x, kernel = res
        h, w = x.shape[1:3]
        # dx[j] = sum_k' g[j + lo - 2 + k'] * flip(W)[k']^T: a correlation of g padded by
        # 2 - lo before (or, for lo > 2, computed from lo - 2 outputs earlier and cropped).
        flipped = kernel[::-1, ::-1].swapaxes(2, 3)
        skip_w, skip_h = max(lw - 2, 0), max(lh - 2, 0)
        pads = ((max(2 - lw, 0), max(2 - hw, 0)), (max(2 - lh, 0), max(2 - hh, 0)))
        dx = _winograd(g, winograd_kernel(flipped), pads, (w + skip_w, h + skip_h))[:, skip_h:, skip_w:]
        dw = jax.vjp(lambda k: conv_apply(x, k, (1, 1), padding, (1, 1), 1), kernel)[1](g)[0]
        return dx, dw

    return _with_gradient(forward, bwd)(x, kernel)


def _onednn_available() -> bool:
    from ..backends.jax import onednn

    return onednn.available()[0]


def _onednn_supports(x: Any) -> bool:
    """The oneDNN lowering takes 2-D float32 layers where oneDNN is installed; else XLA."""
    from ..backends.jax import onednn

    return onednn.supports(x.ndim, x.dtype)


def _bias_init(f: int) -> tuple[str, Any]:
    import numpy as np

    return ("params", np.zeros((f,), np.float32))


class _ConvBase(Op):
    mixed_precision = True
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

    lowerings = ("xla", "patches", "col2im", "shift", "winograd", "depthwise", "onednn")

    def _depthwise(self, a: Args, x: Shape) -> bool:
        """One filter per input channel (`dwconv`, or `conv` with groups = filters = depth)."""
        return self._groups(a, x) == x.depth == self._filters(a, x)

    def lowering(self, a: Args, x: Shape, y: Shape, train: bool, batch: int | None = None) -> str:
        """Default: `shift` (`conv_shift`) when input depth x kernel area <= 32; for
        inference, `winograd` (`conv_winograd`) for 3x3 stride-1 layers where it pays
        (`winograd_pays`); else XLA's convolution, and to train a layer with fewer
        than 16 input channels and at most 32,768 output positions in the batch (N x H x W),
        its input gradient by col2im (`conv_col2im_grad`). Measured on 2-core x86-64 CPUs with
        YNNPACK fusions off (cnndsl's XLA guard; benchmarks/RESULTS.md): LeNet-5's train step
        at batch 128 goes from 11.3 ms (XLA everywhere) to 7.6 ms with col2im for conv2 and
        5.4 ms with shift for conv1; at batch 512 col2im is slower than XLA (42.0 vs 33.9 ms),
        hence the bound. CIFAR ResNet-18 inference at batch 64 (AVX2 EPYC): 606 -> 499 ms with
        Winograd for the 128- and 256-channel layers (stages 2 and 3); at 64 channels
        (32x32) and for the 512-channel 4x4 layers at batch 64 it is no faster.
        XLA's convolution beat patches + matmul on every LeNet-5 and ResNet-18 layer. Off
        the CPU, or with YNNPACK fusions on, XLA's convolution (where these were not measured,
        or measured slower). Depthwise layers (one filter per channel) run as
        `conv_depthwise` on the CPU, in both modes: XLA:CPU's grouped convolution is 20-70x
        slower forward there. Where the optional oneDNN kernel is installed
        (`backends/onednn.py`), training runs the remaining 2-D layers by oneDNN: CIFAR
        ResNet-18's train step at batch 64 took 1.12 s against 2.19 s with XLA's convolutions
        (2-core Xeon, quiet; PyTorch channels_last 1.13 s; benchmarks/RESULTS.md, session D).
        `autotune` measures every
        lowering per layer on the device."""
        from ..backends.jax._xla_guard import cpu_lowerings

        if not cpu_lowerings():
            return "xla"
        if self._depthwise(a, x):
            return "depthwise"
        if self._groups(a, x) != 1:
            return "xla"
        if x.depth * math.prod(bcast(self._kernel(a), x.rank)) <= 32:
            return "shift"
        if not train and self.winograd_pays(a, x, y, batch or 1):
            return "winograd"
        positions = (batch or 1) * math.prod(y.spatial)
        if train and x.depth < 16 and positions <= 32_768:
            return "col2im"
        if train and x.rank == 2 and _onednn_available():
            return "onednn"
        return "xla"

    def candidate_lowerings(self, a: Args, x: Shape, y: Shape, train: bool) -> tuple[str, ...]:
        """Winograd only where it applies; oneDNN for 2-D layers where it is installed
        (`backends/onednn.py`, any groups); the others need groups = 1."""
        from ..backends.jax import onednn

        extra = ("onednn",) if x.rank == 2 and onednn.available()[0] else ()
        if self._depthwise(a, x):
            return ("xla", "depthwise", *extra)
        if self._groups(a, x) != 1:
            return ("xla", *extra)
        plain = tuple(impl for impl in self.lowerings if impl not in ("onednn", "depthwise"))
        return (*(impl for impl in plain if impl != "winograd" or self.winograd_ok(a, x)), *extra)

    def winograd_pays(self, a: Args, x: Shape, y: Shape, batch: int) -> bool:
        """Where Winograd beat XLA's convolution for inference on a 2-core AVX2 CPU (in training,
        with its gradient, it was level at best: 256@8x8 122 vs 123 ms, 128@16x16 173 vs 156
        ms, so it is not a training default): deep
        layers (>= 128 channels in and out), enough output positions (batch x H x W >= 8 x
        filters) that the 4x larger transformed kernel is not what dominates, and an input
        small enough (<= 16 MiB) that the 2.25x larger transformed input stays in cache."""
        if not self.winograd_ok(a, x) or min(x.depth, y.depth) < WINOGRAD_MIN_DEPTH:
            return False
        positions = batch * math.prod(y.spatial)
        return positions >= 8 * y.depth and batch * math.prod(x.spatial) * x.depth * 4 <= 16 * 2**20

    def winograd_ok(self, a: Args, x: Shape) -> bool:
        """`conv_winograd` computes this layer: 2-D, 3x3, stride 1, dilation 1, groups 1."""
        k, s, d, _ = geometry(a, self._kernel(a), x.rank)
        return x.rank == 2 and k == (3, 3) and s == (1, 1) and d == (1, 1) and self._groups(a, x) == 1

    def apply(self, a: Args, p: dict[str, Any], x: Any, ctx: ApplyCtx) -> Any:
        _, s, d, eff = geometry(a, self._kernel(a), ctx.x.rank)
        padding = pads(a, ctx.x, ctx.y, eff, s)
        impl = ctx.impl or self.lowering(a, ctx.x, ctx.y, ctx.train, batch=x.shape[0])
        if impl == "depthwise" and self._depthwise(a, ctx.x) and ctx.accumulate is None:
            y = conv_depthwise(x, p["kernel"], s, padding, d, ctx.y.spatial)
        elif impl == "onednn" and ctx.accumulate is None and _onednn_supports(x):
            from ..backends.jax.onednn import conv_onednn

            y = conv_onednn(x, p["kernel"], s, padding, d, self._groups(a, ctx.x), ctx.y.spatial)
        elif impl == "winograd" and self.winograd_ok(a, ctx.x) and ctx.accumulate is None:
            y = conv_winograd(x, p["kernel"], padding, ctx.y.spatial)
        elif impl == "patches" and self._groups(a, ctx.x) == 1:
            y = conv_patches(x, p["kernel"], s, padding, d, ctx.y.spatial, ctx.accumulate)
        elif impl == "shift" and self._groups(a, ctx.x) == 1 and ctx.accumulate is None:
            y = conv_shift(x, p["kernel"], s, padding, d, ctx.y.spatial)
        elif impl == "col2im" and self._groups(a, ctx.x) == 1 and ctx.accumulate is None:
            y = conv_col2im_grad(x, p["kernel"], s, padding, d, ctx.y.spatial)
        else:
            y = conv_apply(x, p["kernel"], s, padding, d, self._groups(a, ctx.x), accumulate=ctx.accumulate)
        return y + per_channel(p["bias"], y) if "bias" in p else y


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

    Lowered as a convolution of the stride-dilated input with the spatially flipped kernel,
    padded by `K-1-P` (plus `outpad` at the end).
    """

    name = "deconv"
    mixed_precision = True
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

    def apply(self, a: Args, p: dict[str, Any], x: Any, ctx: ApplyCtx) -> Any:
        k, s, pad, _ = self._geom(a, ctx.x.rank)
        flip = tuple(slice(None, None, -1) for _ in k)
        # Before: K-1-P; after: whatever makes the stride-dilated input ((W-1)*S + 1) give the
        # IR's output (K-1-P+outpad, read from `y` rather than re-derived).
        padding = tuple(
            (ki - 1 - pi, o + ki - 1 - (w - 1) * si - 1 - (ki - 1 - pi))
            for w, o, ki, si, pi in zip(ctx.x.spatial, ctx.y.spatial, k, s, pad)
        )
        ones = (1,) * len(k)
        y = conv_apply(x, p["kernel"][flip], ones, padding, ones, 1, lhs_dilation=s, accumulate=ctx.accumulate)
        return y + per_channel(p["bias"], y) if "bias" in p else y
