"""Registry-driven conformance of every op with its own declaration, on its `example`:

- the shape rule (`infer`) equals what the lowering computes (`jax.eval_shape`, eval and
  training mode), and the counted parameters (`count`) equal the built variables' sizes;
- the declared traits hold: a linear op's kernel has the output channels last and folds a
  per-channel map after it (and before it, where it says so) exactly; an `affine` op's map is
  what its eval-mode lowering computes; a final activation is one of the kinds training knows.

The ops come from the registry; nothing here lists them. (JAX against ONNX per op is
tests/backends/onnx/test_ops.py; against PyTorch, tests/interop.)
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnndsl
from cnndsl import ir
from cnndsl.backends.jax.model import apply_layer, init_variables
from cnndsl.ops import REGISTRY

OPS = sorted({op.name for op in REGISTRY.values()})
# Inputs tried for an op's example; every one it accepts is tested (1-D, 2-D, 3-D, flat).
INPUTS = ("4@11x9", "3@11x9", "4@13", "4@7x6x5", "6")
FINAL_KINDS = (None, "softmax", "logsoftmax", "sigmoid")


def _layers(op: str) -> list[tuple[ir.Layer, dict, dict]]:
    """The op's example after each input it accepts: the layer, its variables by name, and
    their sizes by collection."""
    out = []
    for shape in INPUTS:
        try:
            net = cnndsl.loads(f"input {shape}\n{REGISTRY[op].example or op}")
        except cnndsl.CnnError:
            continue
        (n,) = ir.layers(net.ir.body)
        v = init_variables(net.ir, jax.random.key(0))
        own = {k: a for tree in v.values() for k, a in tree.get(n.name, {}).items()}
        out.append((n, own, {c: {k: a.size for k, a in t.get(n.name, {}).items()} for c, t in v.items()}))
    assert out, f"`{REGISTRY[op].example or op}` fits none of the inputs {INPUTS}: give `{op}` an example that does"
    return out


@pytest.mark.parametrize("op", OPS)
def test_shape_rule_and_counts_equal_the_lowering(op: str) -> None:
    for n, p, sizes in _layers(op):
        x = jax.ShapeDtypeStruct(n.x.array_shape(2), jnp.float32)
        for train in (False, True):
            key = jax.random.key(1) if train else None
            y = jax.eval_shape(functools.partial(apply_layer, n, train=train, key=key), p, x)[0]
            assert y.shape == n.y.array_shape(2), f"`{n.text}` on {n.x}, train={train}"
        params = sum(sizes.get("params", {}).values())
        fixed = sum(sum(sizes.get(c, {}).values()) for c in ("batch_stats", "fixed"))
        assert (n.params, n.fixed) == (params, fixed), f"`{n.text}` on {n.x}: counted vs built {sizes}"


def _run(n: ir.Layer, p: dict, x) -> np.ndarray:
    return np.asarray(apply_layer(n, p, x, train=False)[0])


def _along_last(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape((1,) * (ndim - 1) + (-1,))


@pytest.mark.parametrize("op", OPS)
def test_declared_traits_hold(op: str) -> None:
    o = REGISTRY[op]
    assert o.final_activation in FINAL_KINDS
    rng = np.random.default_rng(0)
    for n, p, _ in _layers(op)[:1]:  # one input is enough for the arithmetic
        # non-trivial variables (fresh BN statistics are the identity map); variances stay > 0
        p = {k: v * rng.uniform(0.5, 1.5, v.shape).astype(v.dtype) + (k != "var") * 0.1 for k, v in p.items()}
        if o.linear:
            assert p["kernel"].shape[-1] == n.y.depth, f"`{n.text}`: output channels are not the kernel's last axis"
        m = o.affine(n.args, p, n.x.depth)
        if m is None and not o.linear:
            continue
        x = rng.normal(size=n.x.array_shape(2)).astype(np.float32)
        if m is not None:  # the declared map is what the lowering computes
            mul, add = (np.broadcast_to(np.asarray(v, np.float32), (n.x.depth,)) for v in m)
            np.testing.assert_allclose(
                _run(n, p, x), x * _along_last(mul, x.ndim) + _along_last(add, x.ndim), 1e-5, 1e-5
            )
        if o.linear:
            mul = rng.uniform(0.5, 2.0, n.y.depth).astype(np.float32)
            add = rng.normal(size=n.y.depth).astype(np.float32)
            y = _run(n, p, x)
            got = _run(n, o.fold_after(n.args, p, mul, add), x)
            np.testing.assert_allclose(got, y * _along_last(mul, y.ndim) + _along_last(add, y.ndim), 1e-4, 1e-4)
            mul = rng.uniform(0.5, 2.0, n.x.depth).astype(np.float32)
            for add in (np.zeros(n.x.depth, np.float32), rng.normal(size=n.x.depth).astype(np.float32)):
                folded = o.fold_before(n.args, n.x, p, mul, add)
                if folded is not None:
                    want = _run(n, p, x * _along_last(mul, x.ndim) + _along_last(add, x.ndim))
                    np.testing.assert_allclose(_run(n, folded, x), want, 1e-4, 1e-4 * math.sqrt(n.x.depth))
