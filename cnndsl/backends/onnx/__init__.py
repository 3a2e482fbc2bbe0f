"""The ONNX backend: a table from op to emitter (`emitters.EMITTERS`), and `export`.

    model = export(net.ir, variables, batch=1)         # an onnx.ModelProto, inference mode
    save(model, "lenet5.onnx")                          # atomic write

`Net.to_onnx` and `cnndsl export SPEC --onnx OUT.onnx` call these. See docs/onnx.md.
"""

from __future__ import annotations

from .emitters import EMITTERS, MERGE_OPS, UNSUPPORTED
from .export import (
    INPUT,
    LAYOUTS,
    OPSET,
    OUTPUT,
    UnsupportedError,
    check_supported,
    export,
    input_shape,
    save,
    unsupported,
)

__all__ = [
    "EMITTERS",
    "INPUT",
    "LAYOUTS",
    "MERGE_OPS",
    "OPSET",
    "OUTPUT",
    "UNSUPPORTED",
    "UnsupportedError",
    "check_supported",
    "export",
    "input_shape",
    "save",
    "unsupported",
]
