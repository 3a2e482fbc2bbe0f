"""Lowerings of the preprocessing layers (`cnndsl/ops/preprocess.py`)."""

from __future__ import annotations

import numpy as np

from ....ops.base import per_channel
from ....ops.preprocess import BT601
from .base import lowering


@lowering
def scale(a, p, x, ctx):
    y = x * a.factor
    return y + a.offset if a.offset else y


@lowering
def normalize(a, p, x, ctx):
    if a.mean is not None:
        x = x - per_channel(np.asarray(a.mean, x.dtype), x)
    if a.std is not None:
        x = x / per_channel(np.asarray(a.std, x.dtype), x)
    return x


@lowering
def grayscale(a, p, x, ctx):
    r, g, b = (x[..., i : i + 1] for i in range(3))
    return BT601[0] * r + BT601[1] * g + BT601[2] * b
