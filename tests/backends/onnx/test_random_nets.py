"""Property: for random valid networks (tests/strategies.py), the ONNX export passes the
full checker and onnxruntime equals JAX. Few examples in the default run; `slow` runs more."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import cnndsl

from ...strategies import chains
from .parity import TOLERANCE, compare


def _check(text: str, dynamic: bool) -> None:
    try:
        net = cnndsl.loads(text)
    except cnndsl.CnnError:
        assume(False)
        return
    diff, _ = compare(net, batch=3, dynamic_batch=dynamic)
    assert diff <= TOLERANCE, f"{text!r}: ONNX differs from JAX by {diff:.2e} (relative)"


SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.filter_too_much, HealthCheck.too_slow]}


@settings(max_examples=6, **SETTINGS)
@given(chains(), st.booleans())
def test_random_networks_match_jax(text, dynamic):
    _check(text, dynamic)


@pytest.mark.slow
@settings(max_examples=200, **SETTINGS)
@given(chains(), st.booleans())
def test_random_networks_match_jax_many(text, dynamic):
    _check(text, dynamic)
