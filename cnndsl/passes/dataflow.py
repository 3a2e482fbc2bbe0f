"""The dataflow walk, `ir.Walker` (defined with the IR's other traversals in `cnndsl/ir.py`).

Shape inference, the receptive-field trace, `ir.verify`, the JAX forward pass and the ONNX
emitter each subclass it; the backends import it from here.
"""

from __future__ import annotations

from ..ir import Walker

__all__ = ["Walker"]
