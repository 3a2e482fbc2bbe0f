"""Registry-driven checks of the JAX lowering table (`cnndsl/backends/jax/lowerings`): every op
and merge kind has a lowering, and each lowering's choices are among its own implementations.

The ops come from the registry (`cnndsl.ops.REGISTRY`); nothing here lists them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnndsl
from cnndsl import ir
from cnndsl.backends.jax.lowerings import LOWERINGS, MERGE_LOWERINGS, Lowering
from cnndsl.backends.jax.model import forward
from cnndsl.errors import CnnNameError
from cnndsl.ops import MERGES, REGISTRY

OPS = sorted({op.name for op in REGISTRY.values()})
INPUTS = ("4@11x9", "3@11x9", "4@13", "4@7x6x5", "6")


def _example(op: str) -> ir.Layer:
    """The op's example on the first input it accepts."""
    for shape in INPUTS:
        try:
            net = cnndsl.loads(f"input {shape}\n{REGISTRY[op].example or op}")
        except cnndsl.CnnError:
            continue
        return next(iter(ir.layers(net.ir.body)))
    raise AssertionError(f"`{REGISTRY[op].example or op}` fits none of {INPUTS}")


def test_every_op_has_a_jax_lowering():
    missing = [op for op in OPS if op not in LOWERINGS]
    unknown = sorted(set(LOWERINGS) - set(OPS))
    assert not missing, f"ops with no JAX lowering: add them to backends/jax/lowerings (LOWERINGS): {missing}"
    assert not unknown, f"the JAX table names ops the registry does not have: {unknown}"
    assert all(isinstance(low, Lowering) for low in LOWERINGS.values())


def test_every_merge_kind_has_a_jax_lowering():
    assert sorted(MERGES) == sorted(MERGE_LOWERINGS)
    xs = [jnp.full((2, 3, 3, 4), 2.0), jnp.full((2, 1, 1, 4), 3.0)]
    np.testing.assert_array_equal(MERGE_LOWERINGS["add"](xs), np.full((2, 3, 3, 4), 5.0))
    np.testing.assert_array_equal(MERGE_LOWERINGS["mul"](xs), np.full((2, 3, 3, 4), 6.0))
    assert MERGE_LOWERINGS["concat"]([xs[0], xs[0]]).shape == (2, 3, 3, 8)


@pytest.mark.parametrize("op", OPS)
def test_choices_are_among_the_implementations(op):
    """The default (per mode and batch) and the autotuner's candidates are `impls` of the
    lowering, the default among the candidates; every candidate computes the layer."""
    low, n = LOWERINGS[op], _example(op)
    assert low.impls and len(set(low.impls)) == len(low.impls)
    net = cnndsl.loads(f"input {n.x}\n{n.text}")
    x = jax.random.normal(jax.random.key(0), n.x.array_shape(2))
    v = net.init(jax.random.key(1))
    for train in (False, True):
        cands = low.candidates(n.args, n.x, n.y, train)
        assert set(cands) <= set(low.impls), (op, cands)
        for batch in (1, 64):
            assert low.choose(n.args, n.x, n.y, train, batch) in cands, (op, train, batch)
    if len(low.impls) > 1:
        want = forward(net.ir, v, x)[0]
        for impl in low.candidates(n.args, n.x, n.y, False):
            got = forward(net.ir, v, x, lowering={"*": impl})[0]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"{op} by {impl}")


def test_an_op_without_a_lowering_is_a_located_error(monkeypatch):
    net = cnndsl.loads("input 3@4x4\nrelu -> tanh")
    monkeypatch.delitem(LOWERINGS, "tanh")
    with pytest.raises(CnnNameError, match=r"the JAX backend has no lowering for `tanh` \(layer `tanh1`\)") as e:
        forward(net.ir, {}, jnp.zeros((1, 4, 4, 3)))
    assert e.value.span is not None and e.value.span.line == 2
