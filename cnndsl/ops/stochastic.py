"""`droppath P`: stochastic depth (Huang et al., 2016), per example, in training only.

As torchvision's `StochasticDepth(p, mode="row")`: in training each example's whole tensor is
kept with probability `1 - P` and then divided by `1 - P` (so its expected value is the
input), or zeroed; in evaluation it is the identity. Put it at the end of a residual body
(`residual { ... -> droppath 0.1 }`), where a zero drops the block for that example. A rate
growing with depth is an expression of a `repeat ... as i` index or a block parameter.
"""

from __future__ import annotations

from typing import Any

from ..errors import ArgumentError
from .base import PROB, REQUIRED, ApplyCtx, Args, Op, P, register


@register
class DropPath(Op):
    name = "droppath"
    doc = "stochastic depth: zero each example with probability P in training (scaled by 1/(1-P)); identity in eval"
    example = "droppath 0.2"
    params = (P("rate", PROB, REQUIRED, positional=True, doc="a drop probability in [0, 1), like `droppath 0.2`"),)
    random = True

    def apply(self, a: Args, p: dict[str, Any], x: Any, ctx: ApplyCtx) -> Any:
        if not (ctx.train and ctx.dropout) or a.rate == 0.0:
            return x
        import jax
        import jax.numpy as jnp

        if ctx.key is None:
            raise ArgumentError("droppath in training mode needs a random key: pass key=... (or rngs)")
        keep = jax.random.bernoulli(ctx.key, 1.0 - a.rate, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(keep, x / (1.0 - a.rate), 0.0)
