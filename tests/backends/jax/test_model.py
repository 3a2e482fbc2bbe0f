"""The JAX/Flax backend against hand-written Flax and against `jax.eval_shape`."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import HealthCheck, assume, given, settings

import cnndsl
from cnndsl import ir
from cnndsl.backends.jax.model import forward

from ...conftest import EXAMPLES
from ...strategies import chains


class HandLeNet(nnx.Module):
    """LeNet-5 as a Flax user writes it by hand."""

    def __init__(self, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(1, 6, (5, 5), padding="VALID", rngs=rngs)
        self.conv2 = nnx.Conv(6, 16, (5, 5), padding="VALID", rngs=rngs)
        self.fc1 = nnx.Linear(400, 120, rngs=rngs)
        self.fc2 = nnx.Linear(120, 84, rngs=rngs)
        self.fc3 = nnx.Linear(84, 10, rngs=rngs)

    def __call__(self, x):
        x = nnx.max_pool(nnx.relu(self.conv1(x)), (2, 2), (2, 2))
        x = nnx.max_pool(nnx.relu(self.conv2(x)), (2, 2), (2, 2))
        x = x.reshape(x.shape[0], -1)
        x = nnx.relu(self.fc1(x))
        x = nnx.relu(self.fc2(x))
        return nnx.softmax(self.fc3(x))


def test_compiled_lenet_equals_hand_written_flax():
    hand = HandLeNet(nnx.Rngs(1))
    net = cnndsl.load(EXAMPLES / "lenet5.cnn")
    model = net.build(rngs=nnx.Rngs(2))
    pairs = {"conv1": hand.conv1, "conv2": hand.conv2, "dense1": hand.fc1, "dense2": hand.fc2, "dense3": hand.fc3}
    for name, layer in pairs.items():
        for v in ("kernel", "bias"):
            ours = model.params[name][v]
            assert ours[...].shape == getattr(layer, v)[...].shape
            ours[...] = getattr(layer, v)[...]
    x = jax.random.normal(jax.random.key(0), (8, 32, 32, 1))
    np.testing.assert_allclose(model(x), hand(x), rtol=1e-5, atol=1e-6)
    variables, apply = net.functional(jax.random.key(3))
    variables = {"params": jax.tree.map(lambda v: v[...], nnx.to_pure_dict(nnx.state(model, nnx.Param)))}
    np.testing.assert_allclose(jax.jit(apply)(variables, x), hand(x), rtol=1e-5, atol=1e-6)


def test_default_initialisers_match_flax():
    net = cnndsl.loads("input 3@8x8\nconv 4@3x3 -> flatten -> dense 5")
    model = net.build(rngs=nnx.Rngs(0))
    k = np.asarray(model.params["conv1"]["kernel"][...])
    assert k.shape == (3, 3, 3, 4)
    assert abs(k.std() - 1 / math.sqrt(27)) < 0.06  # LeCun normal: std = 1/sqrt(fan_in)
    assert not np.asarray(model.params["conv1"]["bias"][...]).any()


def per_layer_shapes(net: cnndsl.Net, batch: int = 2) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """(name, IR shape as an array shape, eval_shape's shape) for every layer and merge."""
    seen: list[tuple[ir.Node, tuple[int, ...]]] = []
    variables = jax.eval_shape(net.init, jax.random.key(0))
    x = jax.ShapeDtypeStruct(net.input.array_shape(batch), jnp.float32)

    def run(v, x):
        return forward(net.ir, v, x, observe=lambda n, y: seen.append((n, y.shape)))[0]

    jax.eval_shape(run, variables, x)
    return [(n.name, n.y.array_shape(batch), shape) for n, shape in seen]


def count_leaves(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", ["lenet5"])
def test_every_layer_matches_eval_shape(name):
    net = cnndsl.load(EXAMPLES / f"{name}.cnn")
    rows = per_layer_shapes(net)
    assert len(rows) == len(net.layers())
    for layer, ours, theirs in rows:
        assert ours == theirs, layer
    assert count_leaves(jax.eval_shape(net.init, jax.random.key(0))) == net.params["total"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(chains())
def test_random_chains_agree_with_eval_shape(text):
    try:
        net = cnndsl.loads(text)
    except cnndsl.ShapeError:
        assume(False)
        return
    for name, ours, theirs in per_layer_shapes(net):
        assert ours == theirs, (name, text)
    assert count_leaves(jax.eval_shape(net.init, jax.random.key(0))) == net.params["total"], text


# --- the functional pair and the module --------------------------------------------------
BN_NET = "input 3@8x6\nconv 4@3x3 p1 nobias -> bn -> relu -> dropout 0.5 -> gap -> dense 3 -> softmax"


def test_functional_pair_jits_grads_and_vmaps():
    net = cnndsl.loads(BN_NET)
    variables, apply = net.functional(jax.random.key(0))
    assert set(variables) == {"params", "batch_stats"}
    x = jax.random.normal(jax.random.key(1), (5, 6, 8, 3))
    y = jax.jit(apply)(variables, x)
    assert y.shape == (5, 3)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    logits = apply(variables, x, logits=True)
    np.testing.assert_allclose(jax.nn.softmax(logits), y, rtol=1e-5, atol=1e-6)

    def loss(params, stats, x, key):
        out, new_stats = apply({"params": params, "batch_stats": stats}, x, train=True, key=key, logits=True)
        return -jax.nn.log_softmax(out)[:, 0].mean(), new_stats

    (val, new_stats), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        variables["params"], variables["batch_stats"], x, jax.random.key(2)
    )
    assert np.isfinite(val)
    assert jax.tree.structure(grads) == jax.tree.structure(variables["params"])
    assert not np.allclose(new_stats["bn1"]["mean"], 0.0)
    per_example = jax.vmap(lambda xi: apply(variables, xi[None])[0])(x)
    np.testing.assert_allclose(per_example, y, rtol=1e-5, atol=1e-6)


def test_dropout_in_training_needs_a_key_and_is_off_in_eval():
    net = cnndsl.loads("input 10\ndropout 0.5")
    variables, apply = net.functional(jax.random.key(0))
    x = jnp.ones((2, 10))
    np.testing.assert_array_equal(apply(variables, x), x)
    with pytest.raises(cnndsl.CnnError, match="needs a random key"):
        apply(variables, x, train=True)
    y, _ = apply(variables, x, train=True, key=jax.random.key(1))
    assert set(np.unique(np.asarray(y))) <= {0.0, 2.0}


def test_nnx_module_train_and_eval_modes():
    net = cnndsl.loads(BN_NET)
    model = net.build(rngs=nnx.Rngs(0, dropout=1))
    x = jax.random.normal(jax.random.key(1), (4, 6, 8, 3)) + 3.0
    before = np.asarray(model.batch_stats["bn1"]["mean"][...]).copy()
    model.train()
    model(x)
    after = np.asarray(model.batch_stats["bn1"]["mean"][...])
    assert not np.allclose(before, after)
    model.eval()
    y1, y2 = model(x), model(x)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_array_equal(after, model.batch_stats["bn1"]["mean"][...])
    # the module works under nnx.jit and its state splits into params / stats
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    assert count_leaves(params) == net.params["trainable"]
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(model, x), y1, rtol=1e-5, atol=1e-6)


def test_wrong_input_array_is_a_clear_error():
    net = cnndsl.load(EXAMPLES / "lenet5.cnn")
    variables, apply = net.functional(jax.random.key(0))
    with pytest.raises(cnndsl.ShapeError, match=r"\(N, 32, 32, 1\)"):
        apply(variables, jnp.zeros((2, 1, 32, 32)))


def test_non_square_conv_matches_lax_with_width_height_order():
    net = cnndsl.loads("input 2@9x5\nconv 3@3x1 s2x1 p1x0")  # kernel 3 wide, 1 tall
    variables, apply = net.functional(jax.random.key(0))
    k = variables["params"]["conv1"]["kernel"]
    assert k.shape == (1, 3, 2, 3)  # (kh, kw, in, out)
    x = jax.random.normal(jax.random.key(1), (1, 5, 9, 2))
    ref = jax.lax.conv_general_dilated(x, k, (1, 2), ((0, 0), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(apply(variables, x), ref, rtol=1e-5, atol=1e-6)
    assert str(net.output) == "3@5x5"


def test_avgpool_ceil_divides_like_pytorch():
    # PyTorch AvgPool1d(2, 2, ceil_mode=True) on [1,2,3] -> [1.5, 3.0] (last window clipped)
    net = cnndsl.loads("input 1@3\navgpool 2 ceil")
    variables, apply = net.functional(jax.random.key(0))
    y = apply(variables, jnp.array([1.0, 2.0, 3.0]).reshape(1, 3, 1))
    np.testing.assert_allclose(y.ravel(), [1.5, 3.0])
    # count_include_pad: padding zeros count, AvgPool1d(3, 1, padding=1) on [3,3] -> [2, 2]
    net = cnndsl.loads("input 1@2\navgpool 3 s1 p1")
    variables, apply = net.functional(jax.random.key(0))
    np.testing.assert_allclose(apply(variables, jnp.full((1, 2, 1), 3.0)).ravel(), [2.0, 2.0])


def test_deconv_matches_the_pytorch_formula_numerically():
    # ConvTranspose1d(1, 1, 3, stride=2, padding=1) with kernel [1, 2, 3] on [1, 1]:
    # full output [1, 2, 3+1, 2, 3] cropped by 1 each side -> [2, 4, 2]
    net = cnndsl.loads("input 1@2\ndeconv 1@3 s2 p1 nobias")
    variables, apply = net.functional(jax.random.key(0))
    variables["params"]["deconv1"]["kernel"] = jnp.array([1.0, 2.0, 3.0]).reshape(3, 1, 1)
    y = apply(variables, jnp.ones((1, 2, 1)))
    np.testing.assert_allclose(y.ravel(), [2.0, 4.0, 2.0])


def test_xla_guard_keeps_constant_weight_matmul_finite():
    """jaxlib 0.10.2 on CPU returned NaN here (YNNPACK fusion); cnndsl sets XLA_FLAGS."""
    x = jnp.ones((128, 1024))
    assert np.isfinite(jax.jit(lambda x: (x @ jnp.ones((1024, 64))).sum())(x))
    net = cnndsl.loads("input 1024\ndense 64")
    variables, apply = net.functional(jax.random.key(0))
    variables["params"]["dense1"]["kernel"] = jnp.ones((1024, 64))
    assert float(jax.jit(lambda x: apply(variables, x).sum())(x)) == pytest.approx(128 * 1024 * 64)


def test_nnx_tabulate_works_on_the_built_model():
    """Flax's own summary runs on cnndsl's module (it wraps `nnx.Dict` methods while tracing)."""
    from flax import nnx

    model = cnndsl.load(EXAMPLES / "lenet5.cnn").build(rngs=nnx.Rngs(0))
    table = nnx.tabulate(model, jnp.zeros((1, 32, 32, 1)))
    assert "61,706" in table
    assert model(jnp.zeros((2, 32, 32, 1))).shape == (2, 10)  # the model still works after
