"""Convolution kernels of the JAX backend, in JAX: XLA's own (`conv_apply`) and the CPU
alternatives the conv lowering chooses between (`lowerings/conv.py`): patches (im2col), shift,
depthwise and col2im. Every function takes `x: (N, *spatial[::-1], C)`, an HWIO kernel and
strides, padding, dilation and the IR's output size in *written* order (width first).
Measurements: docs/performance.md and benchmarks/RESULTS.md.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax


def _dimension_numbers(rank: int) -> tuple[str, str, str]:
    sp = "DHW"[-rank:]
    return (f"N{sp}C", f"{sp}IO", f"N{sp}C")


def conv_apply(x: Any, kernel: Any, strides, padding, dilation, groups: int, lhs_dilation=None, accumulate=None) -> Any:
    """`x: (N, *spatial[::-1], C)`; strides, padding and dilation in *written* order;
    `accumulate`: the result dtype of a low-precision convolution (float32)."""
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
    s, d, out = tuple(strides)[::-1], tuple(dilation)[::-1], tuple(out_size)[::-1]
    k = kernel.shape[:-2]
    xp = jnp.pad(x, ((0, 0), *tuple(padding)[::-1], (0, 0)))
    slices = []
    for offs in itertools.product(*(range(ki) for ki in k)):
        idx = tuple(slice(o * di, o * di + (n - 1) * si + 1, si) for o, di, n, si in zip(offs, d, out, s))
        slices.append(xp[(slice(None), *idx, slice(None))])
    patches = slices[0] if len(slices) == 1 else jnp.concatenate(slices, axis=-1)
    return jnp.matmul(patches, kernel.reshape(-1, kernel.shape[-1]), preferred_element_type=accumulate)


def with_gradient(primal, bwd) -> Any:
    """`primal(x, kernel)` with the hand-written gradient `bwd((x, kernel), g) -> (dx, dw)`."""
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

    return with_gradient(conv, bwd)(x, kernel)


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

    return with_gradient(conv, bwd)(x, kernel)


def conv_col2im_grad(x: Any, kernel: Any, strides, padding, dilation, out_size) -> Any:
    """XLA's convolution forward and weight gradient, with the *input* gradient as one matmul
    plus a fused shift-and-add (col2im) instead of XLA's transposed convolution.

    XLA:CPU runs that transposed convolution slowly when it has few output channels, i.e. when
    the layer's input depth is small (LeNet-5's conv2: 6 channels, 2.9 ms of a 10 ms train
    step). Here `dP = dy @ W^T` has one column block per kernel offset; block `o` goes back to
    the input positions `o * dilation + j * stride` via `lax.pad` (interior padding places the
    strides), and the blocks are summed. groups = 1; arguments in *written* order.
    """
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

    return with_gradient(forward, bwd)(x, kernel)
