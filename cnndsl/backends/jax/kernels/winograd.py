"""Winograd's minimal filtering F(4x4, 3x3) for 2-D 3x3 stride-1 convolutions, in JAX (the conv
lowering's `winograd`; where it pays: `lowerings/conv.py`)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .conv import conv_apply, with_gradient

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
    m = np.array(mat, dtype=np.float32)
    x = jnp.moveaxis(x, axis, 0)
    return jnp.sum(m.reshape(m.shape + (1,) * (x.ndim - 1)) * x[None], axis=1)


def winograd_kernel(kernel: Any) -> Any:
    """`(3, 3, C, F)` -> the transformed kernel `G g G^T`, `(36, C, F)`, as one product with
    `G ⊗ G` (36 x 9): faster on XLA:CPU than an einsum with `G` (contractions of 3) or than
    elementwise sums."""
    g = np.array(_WINOGRAD_G, dtype=np.float64)
    return (np.kron(g, g).astype(np.float32) @ kernel.reshape(9, -1)).reshape(36, *kernel.shape[2:])


def _winograd(x: Any, u: Any, padding, out_size) -> Any:
    """The F(4x4, 3x3) convolution of `x` (N, H, W, C) with the transformed kernel `u`
    (36, C, F); `padding` ((before, after) per axis) and `out_size` in *written* order.
    Padding after the input is whatever the tiles need (`lax.pad`, negative = crop)."""
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
    batches not tiny (`lowerings.conv.ConvLowering.winograd_pays`): at batch 64 on a 2-core AVX2 CPU 256@8x8 ran
    2-2.8x faster than XLA's convolution, but 64@32x32 1.8x slower. Rounding differs from the
    direct convolution by ~1e-5 of the output's magnitude in float32 (the constants 4, 5, 8
    and 1/24 amplify it).

    Gradient (written out: differentiating through the tile slices gives pads that XLA:CPU
    runs 4-10x slower than the convolution): the input gradient of a stride-1 3x3 convolution
    is again one, of the output gradient with the flipped, transposed kernel, so it is
    Winograd too; the kernel gradient is XLA's. Arguments in *written* order, like
    `conv_apply`.
    """
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

    return with_gradient(forward, bwd)(x, kernel)
