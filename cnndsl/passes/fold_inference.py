"""Inference folds: IR rewrites that make a trained network cheaper in eval mode.

    net2 = fold_inference(net, weights)  # passes.INFERENCE_PASSES, in order

Each pass is `(Network, Weights) -> Network` and exact up to float rounding
(tests/backends/jax/test_inference.py checks every one). They decide what changes in the IR
from the ops' declared traits (`cnndsl/ops/base.py`: `Op.random`, `Op.affine`, `Op.linear`,
`Op.fold_after`, `Op.fold_before`), never their names, so a new op with those traits folds.
The arrays are the backend's: `weights` answers what a layer's per-channel map is and folds
one into a linear layer's variables (`backends/jax/inference.py` holds the JAX one).

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
  keeps its preprocessing (`Weights.fold_before` says no).

The rewritten IR keeps every remaining layer's name, so variables stay addressable; a layer
that absorbed a map gains a bias (where its op has a `bias` argument) and its counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeGuard

from .. import ir
from ..ops import REGISTRY
from ..syntax.binder import Args

Map = Any  # a per-channel map `x * mul + add`, as the backend represents it


class Weights(Protocol):
    """What the folds ask of a backend's variables (the IR holds none)."""

    def affine(self, n: ir.Layer) -> Map | None:
        """`n`'s per-channel map in eval mode (`Op.affine` on its variables), or None."""
        ...

    def fold_after(self, linear: ir.Layer, m: Map) -> None:
        """Fold `m`, applied to `linear`'s output, into its variables."""
        ...

    def fold_before(self, linear: ir.Layer, maps: list[Map]) -> bool:
        """Fold `maps`, applied in order to `linear`'s input, into its variables; False (and
        nothing changed) where that is not exact."""
        ...

    def drop(self, n: ir.Layer) -> None:
        """Forget the variables of `n`, which was folded away."""
        ...


InferencePass = Callable[[ir.Network, Weights], ir.Network]


def drop_random(net: ir.Network, weights: Weights) -> ir.Network:
    return ir.rewrite(net, chain=lambda items: [n for n in items if not (_is(n) and REGISTRY[n.op].random)])


def fold_after(net: ir.Network, weights: Weights) -> ir.Network:
    def chain(items: Iterable[ir.Node]) -> list[ir.Node]:
        out: list[ir.Node] = []
        for n in items:
            prev = out[-1] if out else None
            if _is(prev) and REGISTRY[prev.op].linear and _is(n):
                m = weights.affine(n)
                if m is not None:
                    weights.fold_after(prev, m)
                    weights.drop(n)
                    out[-1] = _absorbed(prev, y=n.y)
                    continue
            out.append(n)
        return out

    return ir.rewrite(net, chain=chain)


def fold_before(net: ir.Network, weights: Weights) -> ir.Network:
    def chain(items: Iterable[ir.Node]) -> list[ir.Node]:
        out: list[ir.Node] = []
        pending: list[tuple[ir.Layer, Map]] = []
        for n in items:
            m = weights.affine(n) if _is(n) else None
            if m is not None:
                pending.append((n, m))  # type: ignore[arg-type]
                continue
            if pending and _is(n) and REGISTRY[n.op].linear and weights.fold_before(n, [m for _, m in pending]):
                for p, _ in pending:
                    weights.drop(p)
                n = _absorbed(n, x=pending[0][0].x)
                pending = []
            out.extend(p for p, _ in pending)
            pending = []
            out.append(n)
        return out + [p for p, _ in pending]

    return ir.rewrite(net, chain=chain)


def fold_inference(net: ir.Network, weights: Weights, passes: Iterable[InferencePass] | None = None) -> ir.Network:
    """`net` rewritten by `passes` (default `INFERENCE_PASSES`, all of the above, in order)."""
    if passes is None:
        from . import INFERENCE_PASSES as passes
    for step in passes:
        net = step(net, weights)
    return net


def _is(n: ir.Node | None) -> TypeGuard[ir.Layer]:
    return isinstance(n, ir.Layer)


def _absorbed(n: ir.Layer, **changes: Any) -> ir.Layer:
    """Linear layer `n` after a map folded into it: with a bias (where the op has a `bias`
    argument), `changes` (its new `x` or `y`) and its parameters recounted."""
    op = REGISTRY[n.op]
    args = dict(n.args.items())
    if any(prm.name == "bias" for prm in op.params):
        args["bias"] = True
    n = dataclasses.replace(n, args=Args(args), **changes)
    return dataclasses.replace(n, params=op.count(n.args, n.x, n.y)[0])
