"""Merges of several tensors: `add` (element-wise sum), `concat` (along depth) and `mul`
(element-wise product, broadcasting axes of size 1: a `D@1x1` gate scales a `D@WxH` map).

They are not written as layers but as `add { a | b }`, `concat { a | b }`, `mul { a | b }`,
`residual {...}` and `add NAME` / `concat NAME` / `mul NAME`; the IR's merge nodes look their
rule up here. Merges count no MACs (torchvision's counts hold only convolutions and dense layers).
"""

from __future__ import annotations

from ..errors import ShapeError, Span
from ..shape import Shape


class Merge:
    name: str

    def infer(self, shapes: list[Shape], labels: list[str], span: Span | None, residual: bool = False) -> Shape:
        raise NotImplementedError


def _listing(shapes: list[Shape], labels: list[str]) -> list[str]:
    return [f"{lab} outputs {s}" for lab, s in zip(labels, shapes)]


class Add(Merge):
    name = "add"

    def infer(self, shapes, labels, span, residual=False):
        first = shapes[0]
        for s, lab in zip(shapes[1:], labels[1:]):
            if s != first:
                if s.spatial == first.spatial:
                    hint = f"make the depths agree (a 1x1 conv to {first.depth} on one side)"
                elif residual:
                    hint = "the shortcut needs a projection: `residual { ... } project { conv D@1x1 sS }`"
                else:
                    hint = "every branch must keep the same size: check strides and padding, or resize one branch"
                raise ShapeError(
                    f"add: {lab} is {s} but {labels[0]} is {first}",
                    span,
                    notes=_listing(shapes, labels),
                    hints=[hint],
                )
        return first


class Concat(Merge):
    name = "concat"

    def infer(self, shapes, labels, span, residual=False):
        first = shapes[0]
        for s, lab in zip(shapes[1:], labels[1:]):
            if s.spatial != first.spatial:
                raise ShapeError(
                    f"concat: {lab} is {s} but {labels[0]} is {first}",
                    span,
                    notes=_listing(shapes, labels),
                    hints=[
                        "concat joins on depth: every branch must have the same spatial size (check strides and padding)"
                    ],
                )
        return Shape(sum(s.depth for s in shapes), first.spatial)


class Mul(Merge):
    """Squeeze-and-excitation is `mul { identity | adaptiveavgpool 1 -> conv q@1x1 -> relu ->
    conv c@1x1 -> sigmoid }`: the gate's 1x1 broadcasts over the map, at any input size."""

    name = "mul"

    def infer(self, shapes, labels, span, residual=False):
        rank = shapes[0].rank
        for s, lab in zip(shapes[1:], labels[1:]):
            if s.rank != rank:
                raise ShapeError(
                    f"mul: {lab} is {s} but {labels[0]} is {shapes[0]}",
                    span,
                    notes=_listing(shapes, labels),
                    hints=[
                        "the inputs of `mul` need the same number of spatial axes (a gate is `D@1x1`, not a flat `D`)"
                    ],
                )
        axes = [(s.depth, *s.spatial) for s in shapes]
        out = tuple(max(a[i] for a in axes) for i in range(rank + 1))
        for s, lab, a in zip(shapes, labels, axes):
            if any(v not in (1, o) for v, o in zip(a, out)):
                big = next(t for t in shapes if (t.depth, *t.spatial) != a)
                raise ShapeError(
                    f"mul: {lab} is {s}, which cannot be broadcast to {Shape(out[0], out[1:])}",
                    span,
                    notes=_listing(shapes, labels),
                    hints=[
                        (
                            f"each depth and size must equal the others' or be 1 (a gate for {big} is "
                            f"{Shape(big.depth, (1,) * rank)}: `adaptiveavgpool 1` keeps the axes)"
                        )
                    ],
                )
        return Shape(out[0], out[1:])


MERGES: dict[str, Merge] = {"add": Add(), "concat": Concat(), "mul": Mul()}
