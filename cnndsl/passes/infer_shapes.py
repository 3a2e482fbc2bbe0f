"""Fill every node's output shape (and each layer's input shape) from the `input` line.

Each layer's rule is its op's `infer`; merges use `ops.merge`. A failure raises the op's
`ShapeError`, which names the layer that produced the input and carries `err.partial`, the
network annotated up to the failure.
"""

from __future__ import annotations

import dataclasses

from .. import ir
from ..errors import CnnError, ShapeError
from ..ops import MERGES, REGISTRY
from ..ops.base import ShapeCtx
from ..shape import Shape
from ..syntax.values import MAX_VALUE

Value = tuple[Shape, str]  # a shape and who produced it, for messages


class _Infer(ir.Walker[Value]):
    def layer(self, n: ir.Layer, x: Value) -> tuple[ir.Layer, Value]:
        shape, producer = x
        ctx = ShapeCtx(span=n.span, text=n.text, producer=producer, x=shape)
        try:
            y = REGISTRY[n.op].infer(n.args, shape, ctx)
            if y.size > MAX_VALUE:
                raise ctx.error(
                    _too_big(f"`{n.text}`", y),
                    "check the sizes and factors that lead here: a tensor this large cannot be computed",
                )
        except CnnError as e:
            e.notes += [f"in `{s.text}` called at {s.span}" for s in reversed(n.sites)]
            raise
        return dataclasses.replace(n, x=shape, y=y), (y, _who(n))

    def merge(self, n, xs, labels):
        try:
            y = MERGES[n.kind].infer([s for s, _ in xs], labels, n.span, residual=getattr(n, "residual", False))
            if y.size > MAX_VALUE:
                raise ShapeError(
                    _too_big(f"`{n.kind}`", y), n.span, notes=[f"its inputs are {', '.join(str(s) for s, _ in xs)}"]
                )
        except CnnError as e:
            e.notes += [f"in `{s.text}` called at {s.span}" for s in reversed(n.sites)]
            raise
        return dataclasses.replace(n, y=y), (y, f"`{n.kind}` at {n.span}")

    def save(self, n, x):
        return dataclasses.replace(n, y=x[0])

    def group(self, n, x):
        return dataclasses.replace(n, y=x[0])


def _too_big(what: str, y: Shape) -> str:
    return f"{what} would output {y}: {y.size:,} values per example, more than 10^15"


def _who(n: ir.Layer) -> str:
    return f"`{n.text}` at {n.span}"


def infer_shapes(net: ir.Network) -> ir.Network:
    try:
        body, _ = _Infer().run(net.body, (net.input, f"the `input` line at {net.input_span}"))
    except CnnError as e:
        e.partial = dataclasses.replace(net, body=e.partial)  # type: ignore[attr-defined]
        raise
    return dataclasses.replace(net, body=body)
