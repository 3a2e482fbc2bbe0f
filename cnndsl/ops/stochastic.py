"""`droppath P`: stochastic depth (Huang et al., 2016), per example, in training only.

As torchvision's `StochasticDepth(p, mode="row")`: in training each example's whole tensor is
kept with probability `1 - P` and then divided by `1 - P` (so its expected value is the
input), or zeroed; in evaluation it is the identity. Put it at the end of a residual body
(`residual { ... -> droppath 0.1 }`), where a zero drops the block for that example. A rate
growing with depth is an expression of a `repeat ... as i` index or a block parameter.
"""

from __future__ import annotations

from ..syntax.binder import REQUIRED, P
from ..syntax.values import PROB
from .base import register
from .dense import Dropout


@register
class DropPath(Dropout):
    name = "droppath"
    doc = "stochastic depth: zero each example with probability P in training (scaled by 1/(1-P)); identity in eval"
    example = "droppath 0.2"
    params = (P("rate", PROB, REQUIRED, positional=True, doc="a drop probability in [0, 1), like `droppath 0.2`"),)

    def mask_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """One keep-or-drop per example: the whole tensor of an example goes or stays."""
        return (shape[0],) + (1,) * (len(shape) - 1)
