"""cnndsl: a declarative language for convolutional networks and its compiler.

    import cnndsl
    net = cnndsl.load("examples/lenet5.cnn")
    network = cnndsl.compile(text, passes=cnndsl.passes.PASSES)  # the bare IR (docs/passes.md)
    print(net.summary())
    model = net.build(rngs=flax.nnx.Rngs(0))
    variables, apply = net.functional(jax.random.key(0))

Importing cnndsl does not import JAX; only building or running a network does.
"""

from __future__ import annotations

from .backends.jax._xla_guard import install as _install_xla_guard
from .compiler import compile_text as compile
from .errors import (
    ArgumentError,
    CnnError,
    CnnNameError,
    CnnSyntaxError,
    CnnWarning,
    DataError,
    ShapeError,
    SpecFileError,
)
from .net import Net, load, loads
from .shape import Shape

__version__ = "0.1.0"

_install_xla_guard()

__all__ = [
    "ArgumentError",
    "CnnError",
    "CnnNameError",
    "CnnSyntaxError",
    "CnnWarning",
    "DataError",
    "Net",
    "Shape",
    "ShapeError",
    "SpecFileError",
    "__version__",
    "compile",
    "load",
    "loads",
]
