"""Inference compilation: a trained network and its variables, rewritten for eval mode.

    net2, variables2 = fold_for_inference(net, variables)

The IR rewrites are passes (`cnndsl/passes/fold_inference.py`, listed in
`passes.INFERENCE_PASSES`: drop the training-only random layers, fold per-channel maps into
adjacent linear layers); this module is their `Weights`: it reads each layer's variables, asks
the ops for its per-channel map (`Op.affine`) and the folded kernel and bias (`Op.fold_after`,
`Op.fold_before`), and returns the variables of the layers that remain, under the same names.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from ... import ir, nested
from ...ops.base import REGISTRY
from ...passes import INFERENCE_PASSES
from ...passes.fold_inference import InferencePass, fold_inference


def _set(tree: dict, path: tuple[str, ...], value: dict | None) -> dict:
    """A copy of `tree` with the layer at `path` replaced (or removed when value is None)."""
    if not path:
        return value  # type: ignore[return-value]
    out = dict(tree)
    if len(path) == 1:
        if value is None:
            out.pop(path[0], None)
        else:
            out[path[0]] = value
        return out
    sub = _set(tree.get(path[0], {}), path[1:], value)
    if sub:
        out[path[0]] = sub
    else:
        out.pop(path[0], None)  # nothing left below: no empty scopes in the variables
    return out


class _Folder:
    """`passes.fold_inference.Weights` over a variables tree (`params`, `batch_stats`, ...)."""

    def __init__(self, variables: dict) -> None:
        self.v = {k: dict(t) for k, t in variables.items()}

    def layer_vars(self, n: ir.Layer) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for coll in ("params", "batch_stats"):
            got = nested.at(self.v.get(coll, {}), n.path)
            if got:
                out.update(got)
        return out

    def put_params(self, n: ir.Layer, params: dict[str, Any]) -> None:
        self.v["params"] = _set(self.v.get("params", {}), n.path, params)

    def drop(self, n: ir.Layer) -> None:
        for coll in list(self.v):
            self.v[coll] = _set(self.v[coll], n.path, None)

    def affine(self, n: ir.Layer) -> tuple[Any, Any] | None:
        got = REGISTRY[n.op].affine(n.args, self.layer_vars(n), n.x.depth)
        if got is None:
            return None
        mul, add = (jnp.broadcast_to(jnp.asarray(v, jnp.float32), (n.x.depth,)) for v in got)
        return mul, add

    def fold_after(self, linear: ir.Layer, m: tuple[Any, Any]) -> None:
        self.put_params(linear, REGISTRY[linear.op].fold_after(linear.args, self.layer_vars(linear), *m))

    def fold_before(self, linear: ir.Layer, maps: list[tuple[Any, Any]]) -> bool:
        mul, add = _compose(maps)
        params = REGISTRY[linear.op].fold_before(linear.args, linear.x, self.layer_vars(linear), mul, add)
        if params is None:
            return False
        self.put_params(linear, params)
        return True


def _compose(maps: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    """Per-channel maps `x * m + b` applied in order, as one."""
    mul, add = maps[0]
    for m, b in maps[1:]:
        mul, add = mul * m, add * m + b
    return mul, add


def fold_for_inference(
    net: ir.Network, variables: dict, passes: tuple[InferencePass, ...] = INFERENCE_PASSES
) -> tuple[ir.Network, dict]:
    """An equivalent network for eval mode, and its variables: `passes` (by default all the
    inference passes) with this module's `Weights` over `variables`."""
    f = _Folder(variables)
    net = fold_inference(net, f, passes)
    return net, {k: t for k, t in f.v.items() if t}
