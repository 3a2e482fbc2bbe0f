"""Lowerings of the activations (`cnndsl/ops/activation.py`): `jax.nn` functions."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from .base import Lowering, lowering


def _elementwise(fn: Callable) -> Lowering:
    """An activation with no arguments: `fn(x)`."""
    return Lowering(lambda a, p, x, ctx: fn(x))


relu = _elementwise(jax.nn.relu)
relu6 = _elementwise(jax.nn.relu6)
silu = _elementwise(jax.nn.silu)
softplus = _elementwise(jax.nn.softplus)
sigmoid = _elementwise(jax.nn.sigmoid)
tanh = _elementwise(jax.nn.tanh)
softmax = _elementwise(jax.nn.softmax)
logsoftmax = _elementwise(jax.nn.log_softmax)


@lowering
def identity(a, p, x, ctx):
    return x


@lowering
def leakyrelu(a, p, x, ctx):
    return jax.nn.leaky_relu(x, a.slope)


@lowering
def elu(a, p, x, ctx):
    return jax.nn.elu(x, a.alpha)


@lowering
def prelu(a, p, x, ctx):
    return jnp.where(x >= 0, x, p["slope"] * x)


@lowering
def glu(a, p, x, ctx):
    return jax.nn.glu(x, axis=-1)


@lowering
def gelu(a, p, x, ctx):
    return jax.nn.gelu(x, approximate=a.approximate == "tanh")


@lowering
def hardsigmoid(a, p, x, ctx):
    return jax.nn.relu6(x + 3.0) / 6.0


@lowering
def hardswish(a, p, x, ctx):
    return x * jax.nn.relu6(x + 3.0) / 6.0


@lowering
def mish(a, p, x, ctx):
    return x * jnp.tanh(jax.nn.softplus(x))
