"""Element-wise activations (and `softmax`/`logsoftmax`/`glu` over the depth axis)."""

from __future__ import annotations

from ..shape import Shape
from ..syntax.binder import Args, P
from ..syntax.values import FLOAT, choice
from .base import Op, ShapeCtx, register


def _simple(name: str, doc: str, aliases: tuple[str, ...] = (), final: str | None = None) -> type[Op]:
    """An activation with no arguments; `final`: its `Op.final_activation` trait."""
    attrs = {"name": name, "aliases": aliases, "doc": doc, "final_activation": final}
    cls = type(name.title(), (Op,), attrs)
    return register(cls)


_simple("relu", "max(x, 0)")
_simple("relu6", "min(max(x, 0), 6)")
_simple("silu", "x * sigmoid(x) (swish)")
_simple("softplus", "log(1 + exp(x)) (PyTorch `Softplus`, beta 1)")
_simple("sigmoid", "1 / (1 + exp(-x))", final="sigmoid")
_simple("tanh", "hyperbolic tangent")
_simple("softmax", "softmax over the depth axis", final="softmax")
_simple("logsoftmax", "log-softmax over the depth axis", final="logsoftmax")


@register
class Identity(Op):
    name = "identity"
    doc = "passes its input through (a branch that keeps x)"


@register
class LeakyRelu(Op):
    name = "leakyrelu"
    doc = "x if x > 0 else a*x (a = 0.01)"
    example = "leakyrelu 0.1"
    params = (P("slope", FLOAT, 0.01, positional=True),)


@register
class Elu(Op):
    name = "elu"
    doc = "x if x > 0 else a*(exp(x) - 1) (a = 1)"
    params = (P("alpha", FLOAT, 1.0, positional=True),)


@register
class PRelu(Op):
    name = "prelu"
    doc = "leaky ReLU with one learned slope (initial 0.01, as Flax `PReLU`)"

    def count(self, a, x, y):
        return 1, 0

    def init(self, a, x, y, rng):
        import numpy as np

        return {"slope": ("params", np.asarray(0.01, np.float32))}


@register
class Glu(Op):
    name = "glu"
    doc = "gated linear unit: splits the depth in halves a, b -> a * sigmoid(b)"

    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        if x.depth % 2:
            raise ctx.error(
                f"`glu` halves the depth, but {x} has an odd depth", "give the layer before it an even depth"
            )
        return x.with_depth(x.depth // 2)


@register
class Gelu(Op):
    name = "gelu"
    doc = "x * Phi(x), Phi the normal CDF (exact, with erf, as PyTorch); `gelu tanh`: the tanh approximation"
    example = "gelu tanh"
    params = (P("approximate", choice("erf", "tanh"), "erf", positional=True),)


@register
class HardSigmoid(Op):
    name = "hardsigmoid"
    doc = "relu6(x + 3) / 6 (PyTorch `Hardsigmoid`)"


@register
class HardSwish(Op):
    name = "hardswish"
    doc = "x * relu6(x + 3) / 6 (PyTorch `Hardswish`, MobileNetV3)"


@register
class Mish(Op):
    name = "mish"
    doc = "x * tanh(softplus(x)) (PyTorch `Mish`)"
