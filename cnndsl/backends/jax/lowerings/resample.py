"""Lowerings of the resampling layers (`cnndsl/ops/resample.py`); adaptive and fractional
pooling reduce each axis over the op's bins (`reduce_bins`)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from ....ops import REGISTRY
from ....ops.base import bcast
from ....ops.resample import Bins
from .base import Lowering, lowering


def _reduce_axis(x: Any, axis: int, bins: Bins, how: str) -> Any:
    """Max or mean of `x` over `bins` along array `axis` (one output per bin)."""
    starts = np.array([s for s, _ in bins])
    lens = np.array([e - s for s, e in bins])
    out, k = len(bins), int(lens.max())
    reduce = jnp.max if how == "max" else jnp.mean
    before, after = x.shape[:axis], x.shape[axis + 1 :]
    if (lens == k).all() and (starts == np.arange(out) * k).all() and out * k == x.shape[axis]:
        # The bins tile the axis: a reshape, no gather.
        return reduce(x.reshape(*before, out, k, *after), axis=axis + 1)
    # Gather each bin's positions as an (out, k) block; short bins repeat their last index.
    idx = starts[:, None] + np.minimum(np.arange(k)[None, :], lens[:, None] - 1)
    g = jnp.take(x, idx.reshape(-1), axis=axis).reshape(*before, out, k, *after)
    if how == "max" or (lens == k).all():
        return reduce(g, axis=axis + 1)
    lead, trail = (1,) * axis, (1,) * len(after)
    mask = (np.arange(k)[None, :] < lens[:, None]).reshape(*lead, out, k, *trail)
    total = jnp.where(mask, g, jnp.zeros((), x.dtype)).sum(axis=axis + 1)
    return total / jnp.asarray(lens.reshape(*lead, out, *trail), x.dtype)


def reduce_bins(x: Any, bins: tuple[Bins, ...], how: str) -> Any:
    """`x: (N, *spatial[::-1], D)`; `bins` per axis in written order; `how`: max or mean.

    A rectangular bin's max (mean) is the max (mean) along one axis of the maxes (means)
    along the others, so the axes are reduced one after another.
    """
    rank = len(bins)
    for i, b in enumerate(bins):
        x = _reduce_axis(x, rank - i, b, how)  # written axis i is array axis rank - i
    return x


@lowering
def upsample(a, p, x, ctx):
    k = bcast(a.factor, ctx.x.rank)[::-1]  # array order
    sp = ctx.x.array_shape()[:-1]
    # (N, h, 1, w, 1, D) broadcast to (N, h, kh, w, kw, D), then merged to the IR's `y`.
    split = [x.shape[0]] + [d for n in sp for d in (n, 1)] + [x.shape[-1]]
    wide = [x.shape[0]] + [d for n, ki in zip(sp, k) for d in (n, ki)] + [x.shape[-1]]
    y = jnp.broadcast_to(x.reshape(split), wide)
    return y.reshape(ctx.y.array_shape(x.shape[0]))


@lowering
def pad(a, p, x, ctx):
    widths = [(0, 0), *((pi, pi) for pi in bcast(a.size, ctx.x.rank)[::-1]), (0, 0)]
    return jnp.pad(x, widths, mode="constant" if a.mode == "zeros" else a.mode)


def _adaptive(name: str) -> Lowering:
    """Adaptive pooling: the op's bins for the IR's `x` and `y`, reduced by its `how` (max, mean)."""
    op = REGISTRY[name]
    return Lowering(lambda a, p, x, ctx: reduce_bins(x, op._bins(ctx.x, ctx.y), op.how))


adaptiveavgpool = _adaptive("adaptiveavgpool")
adaptivemaxpool = _adaptive("adaptivemaxpool")


@lowering
def fracmaxpool(a, p, x, ctx):
    return reduce_bins(x, REGISTRY["fracmaxpool"]._bins(a, ctx.x, ctx.y), "max")
