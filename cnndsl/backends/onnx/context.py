"""What an ONNX emitter sees of one layer: its arguments, the IR's shapes, its variables.

Inside the graph tensors are channels first, `(N, D, *spatial[::-1])`, the layout of ONNX's
`Conv` and pooling operators; `export` transposes the input and output once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import ir
from ...errors import DataError
from ...shape import Shape
from ...syntax.binder import Args
from .graph import Dim, Graph


class Emit:
    """One layer being emitted. `x` is its input tensor; `xs`/`ys` are the IR's shapes.

    Helper nodes get `node(...)`, the node that makes the layer's output `out(...)`: it is
    named by the layer's path, so Netron shows `stage2/basic1/conv1`.
    """

    def __init__(self, g: Graph, layer: ir.Layer, x: str, variables: dict[str, Any], doc: str) -> None:
        assert layer.x is not None and layer.y is not None, "run the passes first"
        self.g = g
        self.layer = layer
        self.a: Args = layer.args
        self.x = x
        self.xs: Shape = layer.x
        self.ys: Shape = layer.y
        self.name = "/".join(layer.path)
        self.doc = doc
        self._vars = variables

    # -- variables and constants ------------------------------------------------------------
    def var(self, key: str) -> np.ndarray:
        """The layer's variable `key` (from params, batch_stats or fixed) as float32."""
        if key not in self._vars:
            raise DataError(
                f"the variables have no `{key}` for layer `{'.'.join(self.layer.path)}`",
                self.layer.span,
                hints=["pass the variables of this network (`net.init(key)` or trained weights)"],
            )
        return np.asarray(self._vars[key], np.float32)

    def has(self, key: str) -> bool:
        return key in self._vars

    def const(self, suffix: str, value: Any, dtype: Any = np.float32) -> str:
        return self.g.const(f"{self.name}/{suffix}", value, dtype)

    def ints(self, suffix: str, values: Any) -> str:
        return self.g.ints(f"{self.name}/{suffix}", values)

    def channel(self, suffix: str, v: Any, shape: Shape | None = None) -> str:
        """A per-channel vector `(D,)` as a constant broadcasting over `(N, D, *spatial)`."""
        s = self.xs if shape is None else shape
        v = np.asarray(v, np.float32).reshape(-1)
        return self.const(suffix, v.reshape(v.shape + (1,) * s.rank))

    # -- nodes ----------------------------------------------------------------------------
    def node(self, op_type: str, inputs: list[str], *, outputs: int = 1, **attrs: Any) -> Any:
        """A helper node, named `<layer path>/<op type>`."""
        return self.g.node(op_type, inputs, f"{self.name}/{op_type}", outputs=outputs, **attrs)

    def out(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        """The node whose output is the layer's output, named by the layer's path."""
        return self.g.node(op_type, inputs, self.name, doc=self.doc, **attrs)

    # -- geometry (array order: the written spatial order reversed) -------------------------
    def dims(self, shape: Shape) -> list[Dim]:
        return self.g.dims(shape)

    def static_dims(self, shape: Shape) -> list[int]:
        """`dims` with the batch as 0 (for `Reshape`, where 0 copies the input's size)."""
        return [0, shape.depth, *shape.spatial[::-1]]


def array_order(v: tuple[Any, ...]) -> list[int]:
    """Per-axis values in written order (width first) -> ONNX's order (height first), as ints."""
    return [int(t) for t in v[::-1]]
