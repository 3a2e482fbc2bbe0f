"""Element-wise activations (and `softmax`/`logsoftmax`/`glu` over the depth axis)."""

from __future__ import annotations

from typing import Any

from ..shape import Shape
from .base import FLOAT, ApplyCtx, Args, Op, P, ShapeCtx, choice, register


def _simple(name: str, doc: str, fn: str, aliases: tuple[str, ...] = (), final: str | None = None) -> type[Op]:
    """An activation with no arguments whose lowering is `jax.nn.<fn>` (or jnp.<fn>); `final`:
    its `Op.final_activation` trait."""

    def apply(self: Op, a: Args, p: dict[str, Any], x: Any, ctx: ApplyCtx) -> Any:
        import jax
        import jax.numpy as jnp

        return getattr(jax.nn, fn, None)(x) if hasattr(jax.nn, fn) else getattr(jnp, fn)(x)

    attrs = {"name": name, "aliases": aliases, "doc": doc, "apply": apply, "final_activation": final}
    cls = type(name.title(), (Op,), attrs)
    return register(cls)


_simple("relu", "max(x, 0)", "relu")
_simple("relu6", "min(max(x, 0), 6)", "relu6")
_simple("silu", "x * sigmoid(x) (swish)", "silu")
_simple("softplus", "log(1 + exp(x)) (PyTorch `Softplus`, beta 1)", "softplus")
_simple("sigmoid", "1 / (1 + exp(-x))", "sigmoid", final="sigmoid")
_simple("tanh", "hyperbolic tangent", "tanh")
_simple("softmax", "softmax over the depth axis", "softmax", final="softmax")
_simple("logsoftmax", "log-softmax over the depth axis", "log_softmax", final="logsoftmax")


@register
class Identity(Op):
    name = "identity"
    doc = "passes its input through (a branch that keeps x)"

    def apply(self, a, p, x, ctx):
        return x


@register
class LeakyRelu(Op):
    name = "leakyrelu"
    doc = "x if x > 0 else a*x (a = 0.01)"
    example = "leakyrelu 0.1"
    params = (P("slope", FLOAT, 0.01, positional=True),)

    def apply(self, a, p, x, ctx):
        import jax

        return jax.nn.leaky_relu(x, a.slope)


@register
class Elu(Op):
    name = "elu"
    doc = "x if x > 0 else a*(exp(x) - 1) (a = 1)"
    params = (P("alpha", FLOAT, 1.0, positional=True),)

    def apply(self, a, p, x, ctx):
        import jax

        return jax.nn.elu(x, a.alpha)


@register
class PRelu(Op):
    name = "prelu"
    doc = "leaky ReLU with one learned slope (initial 0.01, as Flax `PReLU`)"

    def count(self, a, x, y):
        return 1, 0

    def init(self, a, x, y, rng):
        import numpy as np

        return {"slope": ("params", np.asarray(0.01, np.float32))}

    def apply(self, a, p, x, ctx):
        import jax.numpy as jnp

        return jnp.where(x >= 0, x, p["slope"] * x)


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

    def apply(self, a, p, x, ctx):
        import jax

        return jax.nn.glu(x, axis=-1)


@register
class Gelu(Op):
    name = "gelu"
    doc = "x * Phi(x), Phi the normal CDF (exact, with erf, as PyTorch); `gelu tanh`: the tanh approximation"
    example = "gelu tanh"
    params = (P("approximate", choice("erf", "tanh"), "erf", positional=True),)

    def apply(self, a, p, x, ctx):
        import jax

        return jax.nn.gelu(x, approximate=a.approximate == "tanh")


@register
class HardSigmoid(Op):
    name = "hardsigmoid"
    doc = "relu6(x + 3) / 6 (PyTorch `Hardsigmoid`)"

    def apply(self, a, p, x, ctx):
        import jax

        return jax.nn.relu6(x + 3.0) / 6.0


@register
class HardSwish(Op):
    name = "hardswish"
    doc = "x * relu6(x + 3) / 6 (PyTorch `Hardswish`, MobileNetV3)"

    def apply(self, a, p, x, ctx):
        import jax

        return x * jax.nn.relu6(x + 3.0) / 6.0


@register
class Mish(Op):
    name = "mish"
    doc = "x * tanh(softplus(x)) (PyTorch `Mish`)"

    def apply(self, a, p, x, ctx):
        import jax
        import jax.numpy as jnp

        return x * jnp.tanh(jax.nn.softplus(x))
