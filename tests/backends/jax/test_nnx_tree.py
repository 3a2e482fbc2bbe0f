"""The NNX module tree of `net.build()`: one submodule per layer, named and nested as the IR
(and the functional variables), equal to the functional apply in training and evaluation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import cnndsl
from cnndsl.backends.jax.model import forward

SPEC = """
block basic(c) { residual { conv c@3x3 p1 nobias -> bn -> relu -> conv c@3x3 p1 nobias -> bn } -> relu }
block stage(c, n) { repeat n { basic(c) } }
input 3@8x6
conv 4@3x3 p1 -> bn -> relu -> stage(4, 2) -> filter sobel -> gap -> dropout 0.5 -> dense 3 -> softmax
"""


# fewer layers for the tests that compile a gradient (seconds each on a busy 2-core machine)
SMALL = """
block basic(c) { residual { conv c@3x3 p1 nobias -> bn } -> relu }
input 3@8x6
conv 4@3x3 p1 -> bn -> basic(4) -> filter sobel -> gap -> dropout 0.5 -> dense 3 -> softmax
"""


@pytest.fixture(scope="module")
def net() -> cnndsl.Net:
    return cnndsl.loads(SPEC)


@pytest.fixture(scope="module")
def small() -> cnndsl.Net:
    return cnndsl.loads(SMALL)


def flat(state: nnx.State) -> dict[tuple[str, ...], np.ndarray]:
    return {tuple(map(str, k)): np.asarray(v[...]) for k, v in nnx.to_flat_state(state)}


def flat_dict(tree: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], np.ndarray]:
    out: dict[tuple[str, ...], np.ndarray] = {}
    for k, v in tree.items():
        out.update(flat_dict(v, (*prefix, k)) if isinstance(v, dict) else {(*prefix, k): np.asarray(v)})
    return out


def variables_of(model: nnx.Module) -> dict:
    """The model's variables as the functional tree (`{"params": {...}, "batch_stats": ...}`)."""
    from cnndsl.backends.jax.model import Fixed

    pure = lambda t: jax.tree.map(lambda v: v, nnx.to_pure_dict(t))  # noqa: E731
    return {
        "params": pure(nnx.state(model, nnx.Param)),
        "batch_stats": pure(nnx.state(model, nnx.BatchStat)),
        "fixed": pure(nnx.state(model, Fixed)),
    }


def test_layers_are_submodules_named_as_in_the_ir(net: cnndsl.Net) -> None:
    model = net.build(rngs=nnx.Rngs(0))
    assert isinstance(model.conv1.kernel, nnx.Param) and model.conv1.kernel[...].shape == (3, 3, 3, 4)
    assert isinstance(model.stage1.basic2.bn1.mean, nnx.BatchStat)
    assert type(model.stage1.basic1.conv1).__name__ == "Conv" and type(model.gap1).__name__ == "Gap"
    for layer in net.layers():
        m = model
        for part in layer.path:
            m = getattr(m, part)
        assert m.node.value is layer
    # the dict views hold the same variables
    assert model.params["stage1"]["basic1"]["conv1"]["kernel"] is model.stage1.basic1.conv1.kernel
    assert model.batch_stats["bn1"]["var"] is model.bn1.var


def test_state_paths_are_the_functional_variables_paths(net: cnndsl.Net) -> None:
    from cnndsl.backends.jax.model import Fixed

    model = net.build(rngs=nnx.Rngs(0))
    variables, _ = net.functional(jax.random.key(0))
    for kind, coll in ((nnx.Param, "params"), (nnx.BatchStat, "batch_stats"), (Fixed, "fixed")):
        ours, theirs = flat(nnx.state(model, kind)), flat_dict(variables[coll])
        assert sorted(ours) == sorted(theirs), coll
        assert all(ours[k].shape == theirs[k].shape for k in ours)
    assert ("stage1", "basic2", "conv2", "kernel") in flat(nnx.state(model, nnx.Param))
    # the same key gives the same initial values as the functional tree
    same = flat(nnx.state(cnndsl.loads(SPEC).build(rngs=nnx.Rngs(params=jax.random.key(0))), nnx.Param))
    assert same.keys() == flat_dict(variables["params"]).keys()


def test_tabulate_lists_every_layer(net: cnndsl.Net) -> None:
    model = net.build(rngs=nnx.Rngs(0))
    model.eval()
    table = nnx.tabulate(model, jnp.zeros((1, 6, 8, 3)), console_kwargs={"width": 200, "force_terminal": False})
    rows = {line.split("│")[1].strip(): line for line in table.splitlines() if line.count("│") > 3}
    assert {"/".join(layer.path) for layer in net.layers()} <= rows.keys()
    assert " Conv " in rows["stage1/basic1/conv1"] and " Bn " in rows["stage1/basic2/bn2"]
    assert "float32[1,3]" in rows["dense1"]  # its output


def test_a_jitted_train_step_equals_the_functional_one(small: cnndsl.Net) -> None:
    """The usual NNX training pattern (split once, jit a pure step, merge inside) gives the
    functional apply's outputs, gradients and BN statistics (dropout off on both sides)."""
    model = small.build(rngs=nnx.Rngs(0))
    model.set_attributes(deterministic=True)
    variables = variables_of(model)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(2), (4, 6, 8, 3)) * 2 + 1

    @jax.jit
    def step(params, rest, x):
        def loss(params):
            m = nnx.merge(graphdef, params, rest, copy=True)  # as for Flax's BatchNorm inside grad
            y = m(x, logits=True)
            return (y**2).mean(), (y, nnx.state(m, nnx.BatchStat))

        return jax.value_and_grad(loss, has_aux=True)(params)

    @jax.jit
    def fun_step(p, x):
        def loss(p):
            y, stats = forward(small.ir, {**variables, "params": p}, x, train=True, dropout=False, logits=True)
            return (y**2).mean(), (y, stats)

        return jax.value_and_grad(loss, has_aux=True)(p)

    (value, (y, stats)), grads = step(params, rest, x)
    (value2, (y2, stats2)), grads2 = fun_step(variables["params"], x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y2), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(float(value), float(value2), rtol=1e-6)
    for ours, theirs in ((flat(grads), flat_dict(grads2)), (flat(stats), flat_dict(stats2))):
        assert ours.keys() == theirs.keys()
        for k in ours:
            np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-5, atol=1e-6, err_msg=str(k))
    assert not np.allclose(flat(stats)[("bn1", "mean")], 0)


def test_eval_and_eager_train_equal_the_functional_apply(small: cnndsl.Net) -> None:
    model = small.build(rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 6, 8, 3)) + 1
    _, apply = small.functional(jax.random.key(0))
    model.eval()
    variables = variables_of(model)
    run = nnx.jit(lambda m, x: m(x))
    np.testing.assert_allclose(
        np.asarray(run(model, x)), np.asarray(jax.jit(apply)(variables, x)), rtol=1e-6, atol=1e-6
    )
    # eager training call: the statistics are written into the model's BatchStat variables
    model.train()
    model.set_attributes(deterministic=True)
    _, stats = jax.jit(lambda v, x: forward(small.ir, v, x, train=True, dropout=False))(variables, x)
    model(x)
    written, expected = flat(nnx.state(model, nnx.BatchStat)), flat_dict(stats)
    assert written.keys() == expected.keys()
    for k in written:
        np.testing.assert_allclose(written[k], expected[k], rtol=1e-5, atol=1e-6, err_msg=str(k))


def test_surgery_replace_the_head_and_a_layer(net: cnndsl.Net) -> None:
    model = net.build(rngs=nnx.Rngs(0))
    model.eval()
    x = jnp.ones((2, 6, 8, 3))
    model.dense1 = nnx.Linear(8, 5, rngs=nnx.Rngs(1))  # 4 channels x 2 Sobel maps -> 5 classes
    y = model(x)
    assert y.shape == (2, 5)
    np.testing.assert_allclose(np.asarray(y.sum(-1)), 1.0, rtol=1e-5)  # the softmax still follows
    assert ("dense1", "kernel") in flat(nnx.state(model, nnx.Param))
    assert flat(nnx.state(model, nnx.Param))[("dense1", "kernel")].shape == (8, 5)

    class Zero(nnx.Module):
        def __call__(self, x):
            return jnp.zeros_like(x)

    model.stage1.basic2.relu2 = Zero()  # the stage's output becomes zeros, so logits = the bias
    np.testing.assert_allclose(np.asarray(model(x, logits=True)), np.broadcast_to(model.dense1.bias[...], (2, 5)))


def test_a_layer_named_like_a_module_attribute_is_refused() -> None:
    net = cnndsl.loads("input 1@4x4\nconv 2@3x3 as eval -> flatten")
    with pytest.raises(cnndsl.CnnError) as e:
        net.build()
    assert e.value.render() == (
        "error: the layer name `eval` clashes with an attribute of an NNX module\n"
        "  = hint: rename the layer or block instance with `as NAME`"
    )


def test_conv_is_cross_correlation_as_documented() -> None:
    """The worked example in docs/language.md: the kernel is not flipped."""
    net = cnndsl.loads("input 1@3x3\nconv 1@2x2 nobias")
    variables, apply = net.functional(jax.random.key(0))
    image = jnp.arange(1.0, 10.0).reshape(1, 3, 3, 1)  # rows 1 2 3 / 4 5 6 / 7 8 9
    kernel = jnp.array([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 2, 1, 1)
    variables["params"]["conv1"]["kernel"] = kernel
    np.testing.assert_array_equal(np.asarray(apply(variables, image))[0, ..., 0], [[37, 47], [67, 77]])
    variables["params"]["conv1"]["kernel"] = kernel[::-1, ::-1]  # flipped: true convolution
    np.testing.assert_array_equal(np.asarray(apply(variables, image))[0, ..., 0], [[23, 33], [53, 63]])
