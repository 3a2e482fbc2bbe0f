"""Inference compilation: rewrite a trained network into a cheaper, equivalent one.

    net2, variables2 = fold_for_inference(net, variables)

Passes (each exact up to float rounding; tests/test_inference.py checks every one):
- `drop_dropout`: dropout is the identity in eval mode.
- `fold_batchnorm`: `bn` right after a `conv`, `dwconv`, `deconv` or `dense` in the same chain
  becomes a per-output-channel scale of the kernel and a bias: with `g = scale/sqrt(var+eps)`,
  `k' = k * g`, `b' = (b - mean) * g + beta`.
- `fold_preprocessing`: `scale` and `normalize` right before a `conv` (groups 1) or `dense`
  are a per-channel map `x * m + b`; it folds into that layer as `k' = k * m` (per input
  channel) and `bias' = bias + sum(k * b)`. With an offset (`b != 0`) this is exact only if
  the layer pads nothing (zero padding would then stand for a different raw value), so such
  a layer keeps its preprocessing.

The rewritten IR keeps every remaining layer's name, so variables stay addressable.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from .. import ir
from ..ops.base import REGISTRY, Args, bcast

LINEAR = ("conv", "dwconv", "deconv", "dense")


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

    # -- passes over one chain's items ----------------------------------------------------
    def drop_dropout(self, items: list[ir.Node]) -> list[ir.Node]:
        return [n for n in items if not (isinstance(n, ir.Layer) and (n.op == "dropout" or REGISTRY[n.op].random))]

    def fold_batchnorm(self, items: list[ir.Node]) -> list[ir.Node]:
        out: list[ir.Node] = []
        for n in items:
            prev = out[-1] if out else None
            if isinstance(n, ir.Layer) and n.op == "bn" and isinstance(prev, ir.Layer) and prev.op in LINEAR:
                bn = self.layer_vars(n)
                lin = self.layer_vars(prev)
                g = bn["scale"] / jnp.sqrt(bn["var"] + n.args.eps)
                kernel = lin["kernel"]  # output channels on the last axis for every LINEAR op
                kernel = kernel * g.reshape((1,) * (kernel.ndim - 1) + (-1,))
                bias = lin.get("bias", jnp.zeros_like(g))
                params = {"kernel": kernel, "bias": (bias - bn["mean"]) * g + bn["bias"]}
                self.put_params(prev, params)
                self.drop(n)
                out[-1] = _with_bias(prev, y=n.y, params=prev.params + (0 if prev.args.bias else prev.y.depth))
                continue
            out.append(n)
        return out

    def fold_preprocessing(self, items: list[ir.Node]) -> list[ir.Node]:
        out: list[ir.Node] = []
        pending: list[ir.Layer] = []
        for n in items:
            if isinstance(n, ir.Layer) and n.op in ("scale", "normalize"):
                pending.append(n)
                continue
            if pending and isinstance(n, ir.Layer) and n.op in ("conv", "dense"):
                mul, add = _affine(pending)
                pads = n.op == "conv" and (n.args.pad == "same" or any(n.args.pad))
                if (n.op == "dense" or n.args.groups == 1) and not (pads and bool(jnp.any(add != 0))):
                    lin = self.layer_vars(n)
                    kernel, bias = lin["kernel"], lin.get("bias", jnp.zeros((n.y.depth,), jnp.float32))
                    along_c = (1,) * (kernel.ndim - 2) + (-1, 1)
                    shift = (kernel * add.reshape(along_c)).reshape(-1, kernel.shape[-1]).sum(axis=0)
                    self.put_params(n, {"kernel": kernel * mul.reshape(along_c), "bias": bias + shift})
                    n = _with_bias(n, x=pending[0].x, params=n.params + (0 if n.args.bias else n.y.depth))
                    pending = []
            out.extend(pending)
            pending = []
            out.append(n)
        return out + pending


def _with_bias(n: ir.Layer, **changes: Any) -> ir.Layer:
    args = dict(n.args.items())
    args["bias"] = True
    return dataclasses.replace(n, args=Args(args), **changes)


def _affine(layers: list[ir.Layer]) -> tuple[Any, Any]:
    """`scale`/`normalize` layers in order, as one per-channel map `x * mul + add`."""
    depth = layers[0].x.depth
    mul, add = jnp.ones((depth,), jnp.float32), jnp.zeros((depth,), jnp.float32)
    for n in layers:
        if n.op == "scale":
            m, b = jnp.full((depth,), n.args.factor), jnp.full((depth,), n.args.offset)
        else:
            mean = jnp.asarray(bcast(n.args.mean or (0.0,), depth), jnp.float32)
            std = jnp.asarray(bcast(n.args.std or (1.0,), depth), jnp.float32)
            m, b = 1.0 / std, -mean / std
        mul, add = mul * m, add * m + b
    return mul, add


def fold_for_inference(net: ir.Network, variables: dict) -> tuple[ir.Network, dict]:
    """An equivalent network for eval mode, and its variables (see the module docstring)."""
    f = _Folder(variables)
    body = net.body
    for step in (f.drop_dropout, f.fold_batchnorm, f.fold_preprocessing):
        body = _rewrite(body, step)
    v = {k: t for k, t in f.v.items() if t}
    return dataclasses.replace(net, body=body), v
