"""Flat-vector layers: `flatten`, `dense` (alias `fc`), `dropout`.

`flatten` reads the array in its (H, W, D) channels-last order, so `D@WxH` becomes a vector
of `D*W*H` with depth varying fastest (PyTorch's flatten of NCHW varies width fastest: weights
moved between the two need a permutation).
"""

from __future__ import annotations

from typing import Any

from ..shape import Shape
from ..syntax.binder import REQUIRED, Args, P
from ..syntax.values import INT, PROB
from .base import COLLAPSE, Op, ShapeCtx, fold_input_map, register
from .conv import BIAS, _bias_init, lecun_kernel


@register
class Flatten(Op):
    name = "flatten"
    doc = "D@WxH -> D*W*H (channels-last order)"

    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        return Shape(x.size)

    def window(self, a, x, y):
        return COLLAPSE


@register
class Dense(Op):
    name = "dense"
    aliases = ("fc",)
    doc = "fully connected layer with N outputs"
    example = "dense 120"
    params = (P("units", INT, REQUIRED, positional=True, doc="a number of outputs, like `dense 120`"), BIAS)

    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        if not x.is_flat:
            raise ctx.error(
                f"`dense` needs a flat vector, but gets {x}",
                f"add `flatten` before `dense` (giving {x.size}), or `gap` to average each channel (giving {x.depth})",
            )
        return Shape(a.units)

    def count(self, a, x, y):
        return x.depth * a.units + (a.units if a.bias else 0), 0

    def macs(self, a, x, y):
        return x.depth * a.units

    def window(self, a, x, y):
        return COLLAPSE

    def init(self, a, x, y, key):
        out = {"kernel": ("params", lecun_kernel(key, (x.depth, a.units)))}
        if a.bias:
            out["bias"] = _bias_init(a.units)
        return out

    linear = True  # kernel (D_in, units)

    def fold_before(self, a: Args, x: Shape, p: dict[str, Any], mul: Any, add: Any) -> dict[str, Any]:
        return fold_input_map(p, mul, add)  # every output reads every input once: always exact


@register
class Dropout(Op):
    name = "dropout"
    doc = "zero a fraction P of the inputs while training (scaled by 1/(1-P)); identity in eval"
    example = "dropout 0.5"
    params = (P("rate", PROB, REQUIRED, positional=True, doc="a drop probability in [0, 1), like `dropout 0.5`"),)
    random = True

    def mask_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """One keep-or-drop per element."""
        return shape
