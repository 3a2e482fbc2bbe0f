"""`droppath` (cnndsl/ops/stochastic.py): torchvision's `StochasticDepth(p, "row")` in
training (one Bernoulli(1-p) mask per example, survivors scaled by 1/(1-p), so the expected
value is the input), the identity in evaluation; and a rate rising with depth."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import cnndsl
from cnndsl import ir
from cnndsl.backends.jax.model import forward

from .torchref import compiled, rand, rel, run

P = 0.3
N = 4000


def train_out(net: cnndsl.Net, x: np.ndarray, seed: int = 0, dropout: bool = True) -> np.ndarray:
    variables, _ = net.functional(jax.random.key(0))
    y, _ = forward(net.ir, variables, jnp.asarray(x), train=True, key=jax.random.key(seed), dropout=dropout)
    return np.asarray(y)


def test_training_masks_are_per_example_and_scaled():
    net = compiled(f"input 3@4x2\ndroppath {P}")
    x = np.abs(rand(N, 2, 4, 3)) + 0.1  # channels-last, no zeros
    y = train_out(net, x)
    per_example = (y / x).reshape(N, -1)
    kept = per_example[:, 0] != 0
    # one decision for the whole example: all of it kept and scaled as torchvision, or all zero
    np.testing.assert_allclose(per_example[kept], 1 / (1 - P), rtol=1e-6)
    assert np.all(per_example[~kept] == 0)
    sd = np.sqrt(P * (1 - P) / N)
    assert abs(kept.mean() - (1 - P)) < 5 * sd  # keep rate 1 - p
    assert abs(y.mean() / x.mean() - 1) < 5 * sd / (1 - P) * 2  # expected value = the input
    assert not np.array_equal(train_out(net, x, seed=1), y)  # a new key, new masks


def test_identity_in_eval_at_rate_zero_and_without_dropout():
    x = rand(8, 3, 2, 4)
    net = compiled(f"input 3@4x2\ndroppath {P}")
    assert rel(run(net, x), x) == 0.0
    xl = np.moveaxis(x, 1, -1)
    assert np.array_equal(train_out(net, xl, dropout=False), xl)
    assert np.array_equal(train_out(compiled("input 3@4x2\ndroppath 0"), xl), xl)
    with_relu = compiled(f"input 3@4x2\nrelu -> droppath {P}")
    folded, _ = with_relu.for_inference(with_relu.functional(jax.random.key(0))[0])
    assert [la.op for la in folded.layers()] == ["relu"]  # inference drops it, as dropout


def test_residual_drop_path_drops_the_block_per_example():
    net = compiled(f"input 2@3x3\nresidual {{ conv 2@3x3 p1 -> droppath {P} }}")
    x = rand(300, 3, 3, 2)
    variables, apply = net.functional(jax.random.key(0))
    body = np.asarray(apply(variables, jnp.asarray(x))) - x  # eval: the whole body
    y, _ = apply(variables, jnp.asarray(x), train=True, key=jax.random.key(3))
    y = np.asarray(y)
    kept = np.abs(y - x).reshape(len(x), -1).max(axis=1) > 1e-6
    expected = x + body * (kept / (1 - P)).reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert 0.6 < kept.mean() < 0.8


def test_nnx_module_draws_masks_in_training():
    net = compiled(f"input 3@2x2\ndroppath {P}")
    model = net.build(nnx.Rngs(0))
    x = jnp.ones((256, 2, 2, 3))
    model.train()
    kept = np.asarray(model(x)).reshape(256, -1)[:, 0] != 0
    assert 0.5 < kept.mean() < 0.9
    model.eval()
    assert np.array_equal(np.asarray(model(x)), np.asarray(x))


def test_rate_rising_with_depth_as_efficientnet():
    # torchvision EfficientNet: sd_prob = 0.2 * block_index / total_blocks
    text = """
    block mb(c, p) { residual { conv c@3x3 p1 -> droppath p } }
    input 4@8x8
    repeat 2 as i { mb(4, 0.2*i/5) } -> repeat 3 as i { mb(4, 0.2*(2+i)/5) }
    """
    rates = [la.args.rate for la in ir.layers(cnndsl.loads(text).ir.body) if la.op == "droppath"]
    assert rates == pytest.approx([0.2 * k / 5 for k in range(5)])


def test_rate_must_be_below_one():
    with pytest.raises(cnndsl.CnnError) as e:
        cnndsl.loads("input 3@2x2\ndroppath 1")
    assert "[0, 1)" in e.value.message
