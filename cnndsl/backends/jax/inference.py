"""Inference compilation: rewrite a trained network into a cheaper, equivalent one.

    net2, variables2 = fold_for_inference(net, variables)

Passes (each exact up to float rounding; tests/test_inference.py checks every one). They ask
the ops' declared traits (`cnndsl/ops/base.py`: `Op.random`, `Op.affine`, `Op.linear`,
`Op.fold_after`, `Op.fold_before`), never their names, so a new op with those traits folds:
- `drop_random`: an op drawing random numbers only in training (`dropout`, `droppath`) is the
  identity in eval mode.
- `fold_after`: a per-channel map (`Op.affine`: `bn` with its running statistics, `scale`,
  `normalize`, `layerscale`) right after a linear layer (`conv`, `dwconv`, `deconv`, `dense`)
  in the same chain becomes a per-output-channel scale of its kernel and a bias: for `bn`,
  with `g = scale/sqrt(var+eps)`, `k' = k * g`, `b' = (b - mean) * g + beta`.
- `fold_before`: a run of per-channel maps right before a linear layer that accepts it
  (`conv` with groups 1, `dense`) folds into that layer as `k' = k * m` (per input channel)
  and `bias' = bias + sum(k * b)`. With an offset (`b != 0`) this is exact only if the layer
  pads nothing (zero padding would then stand for a different raw value), so such a layer
  keeps its preprocessing.

The rewritten IR keeps every remaining layer's name, so variables stay addressable.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from ... import ir
from ...ops.base import REGISTRY, Args


def _get(tree: dict, path: tuple[str, ...]) -> dict | None:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


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


def _rewrite(chain: ir.Chain, fn) -> ir.Chain:
    """Apply `fn(items) -> items` to every chain, innermost first."""
    items = []
    for n in chain.items:
        if isinstance(n, ir.Group):
            n = dataclasses.replace(n, body=_rewrite(n.body, fn))
        elif isinstance(n, ir.Merge):
            n = dataclasses.replace(n, branches=tuple(_rewrite(b, fn) for b in n.branches))
        items.append(n)
    return ir.Chain(items=tuple(fn(items)))


class _Folder:
    def __init__(self, variables: dict) -> None:
        self.v = {k: dict(t) for k, t in variables.items()}

    def layer_vars(self, n: ir.Layer) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for coll in ("params", "batch_stats"):
            got = _get(self.v.get(coll, {}), n.path)
            if got:
                out.update(got)
        return out

    def put_params(self, n: ir.Layer, params: dict[str, Any]) -> None:
        self.v["params"] = _set(self.v.get("params", {}), n.path, params)

    def drop(self, n: ir.Layer) -> None:
        for coll in list(self.v):
            self.v[coll] = _set(self.v[coll], n.path, None)

    def affine(self, n: ir.Node) -> tuple[Any, Any] | None:
        """`n`'s per-channel map in eval mode (`Op.affine`), or None."""
        if not isinstance(n, ir.Layer):
            return None
        got = REGISTRY[n.op].affine(n.args, self.layer_vars(n), n.x.depth)
        if got is None:
            return None
        mul, add = (jnp.broadcast_to(jnp.asarray(v, jnp.float32), (n.x.depth,)) for v in got)
        return mul, add

    def folded(self, n: ir.Layer, params: dict[str, Any], **changes: Any) -> ir.Layer:
        """`n` with its new variables (a bias now, where the op has a `bias` argument)."""
        self.put_params(n, params)
        op = REGISTRY[n.op]
        args = dict(n.args.items())
        if any(prm.name == "bias" for prm in op.params):
            args["bias"] = True
        n = dataclasses.replace(n, args=Args(args), **changes)
        return dataclasses.replace(n, params=op.count(n.args, n.x, n.y)[0])

    # -- passes over one chain's items ----------------------------------------------------
    def drop_random(self, items: list[ir.Node]) -> list[ir.Node]:
        return [n for n in items if not (isinstance(n, ir.Layer) and REGISTRY[n.op].random)]

    def fold_after(self, items: list[ir.Node]) -> list[ir.Node]:
        out: list[ir.Node] = []
        for n in items:
            prev = out[-1] if out else None
            if isinstance(prev, ir.Layer) and REGISTRY[prev.op].linear:
                m = self.affine(n)
                if m is not None:
                    params = REGISTRY[prev.op].fold_after(prev.args, self.layer_vars(prev), *m)
                    self.drop(n)
                    out[-1] = self.folded(prev, params, y=n.y)
                    continue
            out.append(n)
        return out

    def fold_before(self, items: list[ir.Node]) -> list[ir.Node]:
        out: list[ir.Node] = []
        pending: list[tuple[ir.Layer, tuple[Any, Any]]] = []
        for n in items:
            m = self.affine(n)
            if m is not None:
                pending.append((n, m))  # type: ignore[arg-type]
                continue
            if pending and isinstance(n, ir.Layer) and REGISTRY[n.op].linear:
                mul, add = _compose([m for _, m in pending])
                params = REGISTRY[n.op].fold_before(n.args, n.x, self.layer_vars(n), mul, add)
                if params is not None:
                    for p, _ in pending:
                        self.drop(p)
                    n = self.folded(n, params, x=pending[0][0].x)
                    pending = []
            out.extend(p for p, _ in pending)
            pending = []
            out.append(n)
        return out + [p for p, _ in pending]


def _compose(maps: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    """Per-channel maps `x * m + b` applied in order, as one."""
    mul, add = maps[0]
    for m, b in maps[1:]:
        mul, add = mul * m, add * m + b
    return mul, add


def fold_for_inference(net: ir.Network, variables: dict) -> tuple[ir.Network, dict]:
    """An equivalent network for eval mode, and its variables (see the module docstring)."""
    f = _Folder(variables)
    body = net.body
    for step in (f.drop_random, f.fold_after, f.fold_before):
        body = _rewrite(body, step)
    v = {k: t for k, t in f.v.items() if t}
    return dataclasses.replace(net, body=body), v
