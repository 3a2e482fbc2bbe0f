"""Lowerings of window and global pooling (`cnndsl/ops/pool.py`): `lax.reduce_window` with the
padding that takes the IR's `x` to its `y` (`pool_padding`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from jax import lax

from ....ops.pool import pool_padding
from .base import Lowering, lowering


def _reduce_window(x: Any, init: float, op: Any, k, s, padding) -> Any:
    return lax.reduce_window(
        x,
        np.asarray(init, x.dtype),
        op,
        (1, *tuple(k)[::-1], 1),
        (1, *tuple(s)[::-1], 1),
        ((0, 0), *tuple(padding)[::-1], (0, 0)),
    )


def _tiles(x: Any, k) -> Any | None:
    """`x` reshaped to (N, H/kh, kh, W/kw, kw, C) when windows tile it exactly, else None."""
    sp = x.shape[1:-1]
    kr = tuple(k)[::-1]
    if any(n % ki for n, ki in zip(sp, kr)):
        return None
    dims = [x.shape[0]]
    for n, ki in zip(sp, kr):
        dims += [n // ki, ki]
    return x.reshape(*dims, x.shape[-1])


def _max(x, k, s, padding):
    if tuple(s) == tuple(k) and all(p == (0, 0) for p in padding):
        t = _tiles(x, k)
        if t is not None:  # non-overlapping windows: reshape + max is faster on CPU
            return t.max(axis=tuple(range(2, t.ndim - 1, 2)))
    return _reduce_window(x, -float("inf"), lax.max, k, s, padding)


def _min(x, k, s, padding):
    return _reduce_window(x, float("inf"), lax.min, k, s, padding)


def _sum(x, k, s, padding):
    return _reduce_window(x, 0.0, lax.add, k, s, padding)


def _avg(x, k, s, padding):
    total = _reduce_window(x, 0.0, lax.add, k, s, padding)
    pad = [b for b, _ in padding]
    extra = [after - before for before, after in padding]  # ceil-mode overhang
    if not any(extra):
        return total / float(np.prod(k))
    # Divisor per output position: window cells inside the input or its zero padding,
    # not in the overhang (PyTorch).
    counts = None
    for n, ki, si, pi, ei in zip(reversed(x.shape[1:-1]), k, s, pad, extra):
        inside = np.ones(n + 2 * pi + ei)
        inside[n + 2 * pi :] = 0
        c = np.array([inside[i * si : i * si + ki].sum() for i in range((len(inside) - ki) // si + 1)])
        counts = c if counts is None else np.multiply.outer(counts, c)
    counts = np.asarray(counts, np.float32).T  # written order -> array order
    return total / counts[None, ..., None]


def _pool(reduce: Callable[..., Any]) -> Lowering:
    def apply(a, p, x, ctx):
        k, s, padding = pool_padding(a, ctx.x, ctx.y)
        return reduce(x, k, s, padding)

    return Lowering(apply)


maxpool = _pool(_max)
minpool = _pool(_min)
sumpool = _pool(_sum)
avgpool = _pool(_avg)


@lowering
def gap(a, p, x, ctx):
    return x.mean(axis=tuple(range(1, x.ndim - 1)))


@lowering
def gmp(a, p, x, ctx):
    return x.max(axis=tuple(range(1, x.ndim - 1)))
