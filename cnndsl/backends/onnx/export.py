"""IR + variables -> an ONNX model (inference mode), by one walk over the IR's dataflow.

Layout: the graph takes and returns arrays exactly as `apply` does, channels last
(`D@WxH` is `(N, H, W, D)`), and transposes once after the input and once before a spatial
output; inside, tensors are channels first (`(N, D, H, W)`), the layout of ONNX's `Conv`.
`layout="nchw"` makes the input and output channels first instead (no transposes).

Every layer's output tensor gets value info from the IR's shape; node names are layer paths
with `/` (the compile table's `stage2.basic1.conv1` is the node `stage2/basic1/conv1`), and
each layer's main node carries the layer as written and its place in the file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from ... import __version__, ir, nested
from ...errors import ArgumentError, CnnError, DataError
from ...ir import Walker
from ...ops import REGISTRY
from .context import Emit
from .emitters import EMITTERS, MERGE_OPS, UNSUPPORTED
from .graph import Graph

OPSET = 17  # LayerNormalization and every operator used here exist at 17; ORT >= 1.12 runs it
IR_VERSION = 8  # the ONNX IR version that goes with opset 17
INPUT, OUTPUT = "input", "output"
LAYOUTS = ("nhwc", "nchw")
PROTOBUF_LIMIT = 2**31 - 1  # bytes in one serialised protobuf message


class UnsupportedError(CnnError):
    """A layer that a backend cannot express."""


def unsupported(net: ir.Network) -> list[ir.Layer]:
    """The layers of `net` that the ONNX backend cannot emit (empty when it can export all)."""
    return [n for n in ir.layers(net.body) if n.op not in EMITTERS]


def check_supported(net: ir.Network) -> None:
    """Raise an `UnsupportedError` at the first layer the ONNX backend cannot express."""
    bad = unsupported(net)
    if not bad:
        return
    first = bad[0]
    reason = UNSUPPORTED.get(first.op, "this backend has no emitter for it")
    others = [
        f"also `{n.text}` ({n.name}) at {n.span}" + "".join(f" in `{s.text}` at {s.span}" for s in n.sites[:1])
        for n in bad[1:4]
    ]
    if len(bad) > 4:
        others.append(f"and {len(bad) - 4} more")
    sites = [f"in `{s.text}` at {s.span}" for s in first.sites]
    raise UnsupportedError(
        f"`{first.text}` ({first.name}) cannot be exported to ONNX: {reason}",
        first.span,
        source=net.source,
        notes=[*sites, *others],
        hints=[f"layers ONNX export does not support: {', '.join(f'`{op}`' for op in sorted(UNSUPPORTED)) or 'none'}"],
    )


def _layer_vars(variables: dict, path: tuple[str, ...]) -> dict[str, Any]:
    """A layer's variables from every collection (params, batch_stats, fixed)."""
    out: dict[str, Any] = {}
    for coll in ("params", "batch_stats", "fixed"):
        out.update(nested.leaves_at(variables.get(coll, {}), path))
    return out


def _fixed_defaults(n: ir.Layer) -> dict[str, Any]:
    """A layer's constants (`fixed` collection: filter kernels), for variables saved without
    them (they are never trained, so the op's own values are the right ones)."""
    init = REGISTRY[n.op].init(n.args, n.x, n.y, np.random.default_rng(0))
    return {k: v for k, (coll, v) in init.items() if coll == "fixed"}


def _where(net: ir.Network, n: ir.Layer | ir.Merge | ir.MergeRef) -> str:
    """`examples/resnet18.cnn:8:14, in basic(64) at 17:15`."""
    where = f"{net.source.path}:{n.span}" if net.source.path else str(n.span)
    return where + "".join(f", in {s.text} at {s.span}" for s in n.sites)


def _doc(net: ir.Network, n: ir.Layer) -> str:
    return f"{n.text}  ({_where(net, n)}) · {n.x} -> {n.y}"


def _merge_doc(net: ir.Network, n: ir.Merge | ir.MergeRef, count: int) -> str:
    what = f"{n.kind} `{n.label}`" if isinstance(n, ir.MergeRef) else f"{n.kind} of {count} branches"
    return f"{'residual ' if getattr(n, 'residual', False) else ''}{what}  ({_where(net, n)}) · -> {n.y}"


class _Emitter(Walker[str]):
    rebuild = False

    def __init__(self, net: ir.Network, g: Graph, variables: dict) -> None:
        self.net = net
        self.g = g
        self.variables = variables

    def layer(self, n: ir.Layer, x: str) -> tuple[ir.Layer, str]:
        v = _layer_vars(self.variables, n.path)
        if n.fixed and not nested.leaves_at(self.variables.get("fixed", {}), n.path):
            v = {**_fixed_defaults(n), **v}
        y = EMITTERS[n.op](Emit(self.g, n, x, v, _doc(self.net, n)))
        self.g.record(y, n.y)
        return n, y

    def merge(self, n: ir.Merge | ir.MergeRef, xs: list[str], labels: list[str]) -> tuple[Any, str]:
        name = "/".join(n.path)
        op = MERGE_OPS[n.kind]  # every kind is in the table (tests/backends/onnx checks)
        doc = _merge_doc(self.net, n, len(xs))
        if op == "Concat":
            y = self.g.node("Concat", xs, name, axis=1, doc=doc)
        else:
            y = xs[0]
            for i, x in enumerate(xs[1:], 1):
                last = i == len(xs) - 1
                y = self.g.node(op, [y, x], name if last else f"{name}/{op}", doc=doc if last else "")
        self.g.record(y, n.y)
        return n, y


def export(
    net: ir.Network,
    variables: dict,
    *,
    batch: int = 1,
    dynamic_batch: bool = False,
    layout: str = "nhwc",
    opset: int = OPSET,
) -> onnx.ModelProto:
    """The network in inference mode as an ONNX model (see the module docstring).

    `batch` fixes the batch size; `dynamic_batch=True` makes it a symbolic `N`. Raises an
    `UnsupportedError` (a `CnnError` at the first layer it cannot express) before building.
    """
    if layout not in LAYOUTS:
        raise ArgumentError(f"unknown layout `{layout}`", hints=["use `nhwc` (as `apply` takes) or `nchw`"])
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ArgumentError(f"the batch size must be a whole number >= 1, got {batch!r}")
    if opset < OPSET:
        raise ArgumentError(f"ONNX export needs opset {OPSET} or later, got {opset}")
    check_supported(net)
    out_shape = net.output
    assert out_shape is not None, "run the passes first"
    g = Graph("N" if dynamic_batch else batch)
    g.unique(INPUT)
    g.unique(OUTPUT)
    channels_last = layout == "nhwc"
    x = INPUT
    if channels_last and net.input.rank:
        r = net.input.rank
        x = g.node("Transpose", [x], "input/to_channels_first", perm=[0, r + 1, *range(1, r + 1)])
    try:
        _, y = _Emitter(net, g, variables).run(net.body, x)
    except CnnError as e:
        raise e.with_source(net.source) from None
    if channels_last and out_shape.rank:
        r = out_shape.rank
        perm = [0, *range(2, r + 2), 1]
        g.nodes.append(helper.make_node("Transpose", [y], [OUTPUT], name="output/to_channels_last", perm=perm))
    else:
        g.nodes.append(helper.make_node("Identity", [y], [OUTPUT], name="output"))
    graph = helper.make_graph(
        g.nodes,
        net.name,
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, g.dims(net.input, channels_last))],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, g.dims(out_shape, channels_last))],
        initializer=g.initializers,
        value_info=g.value_info,
        doc_string=f"{net.name}: input {net.input} -> {out_shape} ({layout}), exported by cnndsl {__version__}",
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="cnndsl",
        producer_version=__version__,
        ir_version=IR_VERSION,
    )
    helper.set_model_props(
        model, {"cnndsl.network": net.name, "cnndsl.layout": layout, "cnndsl.source": net.source.path or ""}
    )
    size = sum(t.ByteSize() for t in g.initializers)
    if size >= PROTOBUF_LIMIT:
        raise DataError(
            f"`{net.name}` has {size / 2**30:.1f} GiB of weights: over the 2 GiB that one ONNX file can hold",
            net.input_span,
            source=net.source,
            hints=["ONNX's external-data format would be needed; cnndsl does not write it yet"],
        )
    return model


def input_shape(net: ir.Network, batch: int, layout: str = "nhwc") -> tuple[int, ...]:
    """The array shape the exported graph takes at `batch`."""
    g = Graph(batch)
    return tuple(int(d) for d in g.dims(net.input, channels_last=layout == "nhwc"))


def save(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Write `model` to `path` atomically (a temporary file in the same folder, renamed)."""
    p = Path(path)
    if not p.parent.is_dir():
        raise DataError(f"cannot write {p}: the folder {p.parent} does not exist", hints=["create it first"])
    data = model.SerializeToString()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p
