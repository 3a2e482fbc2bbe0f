"""A small ONNX graph builder: nodes, initializers and value info, with unique tensor names.

Node names are what Netron shows: a layer's main node is named by its path as the user knows
it (`stage2/basic1/conv1`), helper nodes of the same layer `stage2/basic1/conv1/Transpose`.
Tensor names only need to be unique; they follow the node names where they can.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ...shape import Shape

Dim = int | str  # a fixed size, or a symbolic one ("N" for a dynamic batch)


class Graph:
    """Collects one ONNX graph. Every tensor holds float32 unless made by `ints`."""

    def __init__(self, batch: Dim) -> None:
        self.batch = batch
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.value_info: list[onnx.ValueInfoProto] = []
        self._taken: set[str] = set()
        self._node_names: set[str] = set()

    def unique(self, name: str) -> str:
        """`name`, or `name_1`, `name_2`, ... if a tensor of that name exists already."""
        return _fresh(name, self._taken)

    def _node_name(self, name: str) -> str:
        return _fresh(name, self._node_names)

    def const(self, name: str, value: Any, dtype: Any = np.float32) -> str:
        """An initializer holding `value` (float32 unless `dtype`); returns its tensor name."""
        tensor = self.unique(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(np.asarray(value, dtype)), tensor))
        return tensor

    def ints(self, name: str, values: Any) -> str:
        """An int64 initializer (shapes, pads, axes)."""
        return self.const(name, np.asarray(values, np.int64).reshape(-1), np.int64)

    def node(self, op_type: str, inputs: list[str], name: str, *, outputs: int = 1, doc: str = "", **attrs: Any) -> Any:
        """Add a node named `name`; returns its output tensor name (a list if `outputs` > 1)."""
        node_name = self._node_name(name)
        outs = [self.unique(node_name if outputs == 1 else f"{node_name}:{i}") for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=node_name, doc_string=doc or None, **attrs))
        return outs[0] if outputs == 1 else outs

    def dims(self, shape: Shape, channels_last: bool = False) -> list[Dim]:
        """The array dimensions of `shape` with the batch: `(N, D, *spatial[::-1])` (channels
        first, the layout inside the graph) or `(N, *spatial[::-1], D)`."""
        sp = list(shape.spatial[::-1])
        return [self.batch, *sp, shape.depth] if channels_last else [self.batch, shape.depth, *sp]

    def record(self, tensor: str, shape: Shape) -> None:
        """Value info for a layer's output: its shape from the IR (channels first)."""
        self.value_info.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, self.dims(shape)))


def _fresh(name: str, taken: set[str]) -> str:
    """`name`, or `name_1`, `name_2`, ... the first not in `taken`; recorded there."""
    out, i = name, 0
    while out in taken:
        i += 1
        out = f"{name}_{i}"
    taken.add(out)
    return out
