"""Merges of several tensors: `add` (element-wise sum) and `concat` (along depth).

They are not written as layers but as `add { a | b }`, `concat { a | b }`, `residual {...}`
and `add NAME` / `concat NAME`; the IR's merge nodes look their rule up here.
"""

from __future__ import annotations

from typing import Any

from ..errors import ShapeError, Span
from ..shape import Shape


class Merge:
    name: str

    def infer(self, shapes: list[Shape], labels: list[str], span: Span | None, residual: bool = False) -> Shape:
        raise NotImplementedError

    def apply(self, xs: list[Any]) -> Any:
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

    def apply(self, xs):
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


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
                    hints=["concat joins on depth: every branch must have the same spatial size (check strides and padding)"],
                )
        return Shape(sum(s.depth for s in shapes), first.spatial)

    def apply(self, xs):
        import jax.numpy as jnp

        return jnp.concatenate(xs, axis=-1)


MERGES: dict[str, Merge] = {"add": Add(), "concat": Concat()}
