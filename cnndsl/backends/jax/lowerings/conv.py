"""Lowerings of the convolutions (`cnndsl/ops/conv.py`): `conv` and `dwconv` choose between XLA's
convolution and the CPU kernels (`../kernels/`); `deconv` is XLA's convolution of the
stride-dilated input with the flipped kernel."""

from __future__ import annotations

import math
from typing import Any

from ....ops import REGISTRY
from ....ops.base import bcast, per_channel
from ....ops.conv import geometry, pads
from ....shape import Shape
from ....syntax.binder import Args
from .. import onednn
from .._xla_guard import cpu_lowerings
from ..kernels.conv import conv_apply, conv_col2im_grad, conv_depthwise, conv_patches, conv_shift
from ..kernels.winograd import conv_winograd
from .base import ApplyCtx, Lowering

WINOGRAD_MIN_DEPTH = 128  # inference: Winograd F(4x4, 3x3) for 3x3 convolutions this deep


class ConvLowering(Lowering):
    """`conv` and `dwconv` (the op's geometry: `_kernel`, `_filters`, `_groups`)."""

    impls = ("xla", "patches", "col2im", "shift", "winograd", "depthwise", "onednn")

    def __init__(self, op: str) -> None:
        super().__init__(mixed_precision=True)
        self.op = REGISTRY[op]

    def _depthwise(self, a: Args, x: Shape) -> bool:
        """One filter per input channel (`dwconv`, or `conv` with groups = filters = depth)."""
        return self.op._groups(a, x) == x.depth == self.op._filters(a, x)

    def choose(self, a: Args, x: Shape, y: Shape, train: bool, batch: int) -> str:
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
        (`backends/jax/onednn.py`), every other 2-D layer with groups = 1 runs by oneDNN, in
        both modes (Winograd keeps the inference layers where it pays): CIFAR ResNet-18's
        train step at batch 64 took 1.12 s against 2.19 s with XLA's convolutions (2-core
        Xeon, quiet; PyTorch channels_last 1.13 s; benchmarks/RESULTS.md, session D), and
        oneDNN in place of shift and col2im too made LeNet-5 20-30% faster in every row
        (session E, interleaved: train b128 10.2 -> 7.8 ms, b512 31.3 -> 25.7 ms; inference
        b128 3.27 -> 2.53 ms, b512 11.0 -> 8.05 ms) with ResNet-18 level (1.33 / 1.31 s
        train, 345 / 359 ms inference, within the run's spread).
        `autotune` measures every lowering per layer on the device."""
        if not cpu_lowerings():
            return "xla"
        if self._depthwise(a, x):
            return "depthwise"
        if self.op._groups(a, x) != 1:
            return "xla"
        if not train and self.winograd_pays(a, x, y, batch or 1):
            return "winograd"
        if x.rank == 2 and onednn.available()[0]:
            return "onednn"
        if x.depth * math.prod(bcast(self.op._kernel(a), x.rank)) <= 32:
            return "shift"
        positions = (batch or 1) * math.prod(y.spatial)
        if train and x.depth < 16 and positions <= 32_768:
            return "col2im"
        return "xla"

    def candidates(self, a: Args, x: Shape, y: Shape, train: bool) -> tuple[str, ...]:
        """Winograd only where it applies; oneDNN for 2-D layers where it is installed
        (`backends/jax/onednn.py`, any groups); the others need groups = 1."""
        extra = ("onednn",) if x.rank == 2 and onednn.available()[0] else ()
        if self._depthwise(a, x):
            return ("xla", "depthwise", *extra)
        if self.op._groups(a, x) != 1:
            return ("xla", *extra)
        plain = tuple(impl for impl in self.impls if impl not in ("onednn", "depthwise"))
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
        k, s, d, _ = geometry(a, self.op._kernel(a), x.rank)
        return x.rank == 2 and k == (3, 3) and s == (1, 1) and d == (1, 1) and self.op._groups(a, x) == 1

    def why_not(self, a: Args, x: Shape, impl: str) -> str | None:
        if impl == "onednn":
            ok, reason = onednn.available()
            return (
                f"oneDNN runs 2-D layers only; this one is {x.rank}-D"
                if ok
                else f"the oneDNN kernel is not available: {reason}"
            )
        groups = self.op._groups(a, x)
        if groups != 1:
            return f"grouped convolutions (groups={groups}) run by XLA's convolution (or oneDNN) only"
        if impl == "winograd":  # "`conv_winograd` computes this layer: 2-D, 3x3, ..."
            return f"`{impl}` computes only: " + self.winograd_ok.__doc__.strip().rstrip(".").rpartition(": ")[2]
        return None

    def apply(self, a: Args, p: dict[str, Any], x: Any, ctx: ApplyCtx) -> Any:
        op = self.op
        _, s, d, eff = geometry(a, op._kernel(a), ctx.x.rank)
        padding = pads(a, ctx.x, ctx.y, eff, s)
        impl = ctx.impl or self.choose(a, ctx.x, ctx.y, ctx.train, x.shape[0])
        groups = op._groups(a, ctx.x)
        if impl == "depthwise" and self._depthwise(a, ctx.x) and ctx.accumulate is None:
            y = conv_depthwise(x, p["kernel"], s, padding, d, ctx.y.spatial)
        elif impl == "onednn" and ctx.accumulate is None and onednn.supports(x.ndim, x.dtype):
            y = onednn.conv_onednn(x, p["kernel"], s, padding, d, groups, ctx.y.spatial)
        elif impl == "winograd" and self.winograd_ok(a, ctx.x) and ctx.accumulate is None:
            y = conv_winograd(x, p["kernel"], padding, ctx.y.spatial)
        elif impl == "patches" and groups == 1:
            y = conv_patches(x, p["kernel"], s, padding, d, ctx.y.spatial, ctx.accumulate)
        elif impl == "shift" and groups == 1 and ctx.accumulate is None:
            y = conv_shift(x, p["kernel"], s, padding, d, ctx.y.spatial)
        elif impl == "col2im" and groups == 1 and ctx.accumulate is None:
            y = conv_col2im_grad(x, p["kernel"], s, padding, d, ctx.y.spatial)
        else:
            y = conv_apply(x, p["kernel"], s, padding, d, groups, accumulate=ctx.accumulate)
        return y + per_channel(p["bias"], y) if "bias" in p else y


conv = ConvLowering("conv")
dwconv = ConvLowering("dwconv")


def _deconv(a, p, x, ctx):
    """A convolution of the stride-dilated input with the spatially flipped kernel, padded by
    `K-1-P` before and, after, whatever gives the IR's output (`K-1-P+outpad`, read from `y`
    rather than re-derived)."""
    k, s, pad, _ = REGISTRY["deconv"]._geom(a, ctx.x.rank)
    flip = tuple(slice(None, None, -1) for _ in k)
    padding = tuple(
        (ki - 1 - pi, o + ki - 1 - (w - 1) * si - 1 - (ki - 1 - pi))
        for w, o, ki, si, pi in zip(ctx.x.spatial, ctx.y.spatial, k, s, pad)
    )
    ones = (1,) * len(k)
    y = conv_apply(x, p["kernel"][flip], ones, padding, ones, 1, lhs_dilation=s, accumulate=ctx.accumulate)
    return y + per_channel(p["bias"], y) if "bias" in p else y


deconv = Lowering(_deconv, mixed_precision=True)
