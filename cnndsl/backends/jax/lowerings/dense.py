"""Lowerings of the flat-vector layers (`cnndsl/ops/dense.py`, `cnndsl/ops/stochastic.py`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ....errors import ArgumentError
from ....ops import REGISTRY
from ....ops.base import per_channel
from ....syntax.binder import Args
from .base import ApplyCtx, Lowering, lowering


@lowering
def flatten(a, p, x, ctx):
    return x.reshape(x.shape[0], -1)


def _dense(a, p, x, ctx):
    y = jnp.matmul(x, p["kernel"], preferred_element_type=ctx.accumulate)
    return y + per_channel(p["bias"], y) if "bias" in p else y


dense = Lowering(_dense, mixed_precision=True)


class Drop(Lowering):
    """`dropout` and `droppath`: in training (unless `ctx.dropout` is off) each mask value
    (the op's `mask_shape`: per element, per example) keeps its inputs with probability
    `1 - rate`, scaled by `1 / (1 - rate)`, or zeroes them; the identity otherwise."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = REGISTRY[op]

    def apply(self, a: Args, p: dict[str, Any], x: Any, ctx: ApplyCtx) -> Any:
        if not (ctx.train and ctx.dropout) or a.rate == 0.0:
            return x
        if ctx.key is None:
            raise ArgumentError(f"{self.op.name} in training mode needs a random key: pass key=... (or rngs)")
        keep = jax.random.bernoulli(ctx.key, 1.0 - a.rate, self.op.mask_shape(x.shape))
        return jnp.where(keep, x / (1.0 - a.rate), 0.0)


dropout = Drop("dropout")
droppath = Drop("droppath")
