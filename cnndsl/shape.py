"""Tensor shapes in the language's `D@WxH` notation.

`Shape(depth=3, spatial=(640, 480))` is a 640-wide, 480-tall, 3-channel image and prints as
`3@640x480`. `spatial` is kept in *written* order (width first); JAX arrays are
channels-last with the spatial axes reversed: `D@WxH` is an array `(N, H, W, D)`, `D@L` is
`(N, L, D)`, `D@WxHxT` is `(N, T, H, W, D)`. A flat vector has `spatial == ()` and prints
as its length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Shape:
    depth: int
    spatial: tuple[int, ...] = ()

    @property
    def rank(self) -> int:
        """Number of spatial axes: 0 for a flat vector, 1 for `D@L`, 2 for `D@WxH`."""
        return len(self.spatial)

    @property
    def is_flat(self) -> bool:
        return not self.spatial

    @property
    def size(self) -> int:
        """Number of elements per example."""
        return self.depth * math.prod(self.spatial)

    def array_shape(self, batch: int | None = None) -> tuple[int, ...]:
        """The JAX array shape: `(N, *reversed(spatial), D)` (N omitted when None)."""
        dims = (*self.spatial[::-1], self.depth)
        return dims if batch is None else (batch, *dims)

    @staticmethod
    def from_array_shape(dims: tuple[int, ...]) -> Shape:
        """Inverse of `array_shape` for a batched array shape `(N, ..., D)`."""
        return Shape(depth=dims[-1], spatial=tuple(dims[1:-1][::-1]))

    def with_spatial(self, spatial: tuple[int, ...]) -> Shape:
        return Shape(self.depth, tuple(spatial))

    def with_depth(self, depth: int) -> Shape:
        return Shape(depth, self.spatial)

    def __str__(self) -> str:
        if not self.spatial:
            return str(self.depth)
        return f"{self.depth}@{fmt_size(self.spatial)}"


def fmt_size(dims: tuple[int, ...] | tuple[object, ...]) -> str:
    """`(5, 3)` -> `5x3`."""
    return "x".join(str(d) for d in dims)
