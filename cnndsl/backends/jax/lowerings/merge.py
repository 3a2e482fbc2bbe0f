"""Lowerings of the merges (`cnndsl/ops/merge.py`): `fn(xs) -> y` over the branches' outputs."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp


def add(xs: list[Any]) -> Any:
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def concat(xs: list[Any]) -> Any:
    return jnp.concatenate(xs, axis=-1)


def mul(xs: list[Any]) -> Any:
    """Broadcasts axes of size 1 (a `D@1x1` gate scales a `D@WxH` map)."""
    out = xs[0]
    for x in xs[1:]:
        out = out * x
    return out
