"""Lowering of the fixed filters (`cnndsl/ops/filters.py`): a depthwise convolution with the
constant kernel from the `fixed` collection."""

from __future__ import annotations

from ....ops import REGISTRY
from ..kernels.conv import conv_apply
from .base import lowering


@lowering
def filter_(a, p, x, ctx):
    ones = (1,) * ctx.x.rank
    kernel = p["kernel"].astype(x.dtype)
    return conv_apply(x, kernel, ones, REGISTRY["filter"]._pads(a, ctx.x), ones, ctx.x.depth)
