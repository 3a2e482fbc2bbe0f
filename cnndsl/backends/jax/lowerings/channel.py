"""Lowerings of the channel operations (`cnndsl/ops/channel.py`)."""

from __future__ import annotations

from ....ops.base import per_channel
from .base import lowering


@lowering
def slice_(a, p, x, ctx):
    start, stop = a.range
    return x[..., start:stop]


@lowering
def shuffle(a, p, x, ctx):
    g = a.groups
    lead, d = x.shape[:-1], x.shape[-1]
    return x.reshape(*lead, g, d // g).swapaxes(-1, -2).reshape(*lead, d)


@lowering
def layerscale(a, p, x, ctx):
    return x * per_channel(p["scale"], x)
