"""Backends and training ask ops' declared traits (`cnndsl/ops/base.py`), never their names:
ops registered here (with a JAX lowering each), unknown to every backend's code, are folded,
skipped as final activations, dropped in inference and shape-checked at trace time by the code
that handles the built-in ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnndsl
from cnndsl import ir
from cnndsl.backends.jax.inference import fold_for_inference
from cnndsl.backends.jax.lowerings import LOWERINGS, Lowering
from cnndsl.backends.jax.model import build, final_activation, forward
from cnndsl.errors import ArgumentError
from cnndsl.ops import REGISTRY
from cnndsl.ops.base import Op, fold_input_map, register
from cnndsl.ops.conv import BIAS, lecun_kernel
from cnndsl.shape import Shape
from cnndsl.syntax.binder import REQUIRED, P
from cnndsl.syntax.values import INT
from cnndsl.training import engine
from cnndsl.training.config import TrainConfig
from cnndsl.training.evaluation import _probabilities


class PointMix(Op):
    """A pointwise linear layer no backend names: `y = x @ kernel + bias` per position."""

    name = "testpointmix"
    params = (P("units", INT, REQUIRED, positional=True), BIAS)
    linear = True

    def infer(self, a, x, ctx):
        return Shape(a.units, x.spatial)

    def count(self, a, x, y):
        return x.depth * a.units + (a.units if a.bias else 0), 0

    def init(self, a, x, y, rng):
        out = {"kernel": ("params", lecun_kernel(rng, (x.depth, a.units)))}
        if a.bias:
            out["bias"] = ("params", np.zeros((a.units,), np.float32))
        return out

    def fold_before(self, a, x, p, mul, add):
        return fold_input_map(p, mul, add)


def _pointmix(a, p, x, ctx):
    y = jnp.matmul(x, p["kernel"])
    return y + p["bias"].reshape((1,) * (y.ndim - 1) + (-1,)) if "bias" in p else y


class Shift(Op):
    """A per-channel affine map from its own argument: `x * 2 + k`."""

    name = "testshift"
    params = (P("k", INT, 1, positional=True),)

    def affine(self, a, p, depth):
        return np.full((depth,), 2.0, np.float32), np.full((depth,), float(a.k), np.float32)


def _final(kind: str) -> type[Op]:
    return type(f"Final{kind}", (Op,), {"name": f"testfinal{kind}", "final_activation": kind})


class Noise(Op):
    """Random in training only: inference drops it, the NNX module forks an RNG stream for it."""

    name = "testnoise"
    random = True


def _noise(a, p, x, ctx):
    if not (ctx.train and ctx.dropout):
        return x
    return x + jax.random.normal(ctx.key, x.shape)


class Wrong(Op):
    """A lowering that disagrees with its own shape rule (drops a row)."""

    name = "testwrong"


# Their JAX lowerings, registered with them (the JAX backend's table is `LOWERINGS`).
DUMMY_LOWERINGS = {
    "testpointmix": Lowering(_pointmix),
    "testshift": Lowering(lambda a, p, x, ctx: x * 2.0 + a.k),
    "testfinalsoftmax": Lowering(lambda a, p, x, ctx: jax.nn.softmax(x)),
    "testfinalsigmoid": Lowering(lambda a, p, x, ctx: jax.nn.sigmoid(x)),
    "testnoise": Lowering(_noise),
    "testwrong": Lowering(lambda a, p, x, ctx: x[:, 1:]),  # disagrees with the shape rule
}


@pytest.fixture(scope="module", autouse=True)
def dummy_ops() -> Iterator[None]:
    classes = (PointMix, Shift, _final("softmax"), _final("sigmoid"), Noise, Wrong)
    for cls in classes:
        register(cls)
    LOWERINGS.update(DUMMY_LOWERINGS)
    yield
    for cls in classes:
        del REGISTRY[cls.name]
        del LOWERINGS[cls.name]


def _x(net: cnndsl.Net, seed: int = 1) -> Any:
    return jax.random.normal(jax.random.key(seed), net.input.array_shape(2))


def _randomized(v: dict) -> dict:
    rng = np.random.default_rng(7)  # on the host: no kernel compiled per shape
    return jax.tree.map(lambda a: np.asarray(a) + 0.3 * rng.normal(size=a.shape).astype(np.float32), v)


@pytest.mark.parametrize(
    "spec, gone",
    [
        ("input 3@5x4\ntestpointmix 4 nobias -> bn -> relu", ["bn"]),  # a map after the linear layer
        ("input 3@5x4\ntestpointmix 4 -> testshift 3", ["testshift"]),
        ("input 3@5x4\ntestshift 2 -> normalize mean=0.5 std=2 -> testpointmix 4", ["testshift", "normalize"]),
        ("input 3@5x4\nconv 4@3x3 -> testshift 1", ["testshift"]),  # a new map folds into a built-in layer
        ("input 3@5x4\ntestnoise -> conv 4@1x1", ["testnoise"]),
    ],
)
def test_new_linear_and_affine_ops_fold(spec: str, gone: list[str]) -> None:
    net = cnndsl.loads(spec)
    v = _randomized(net.init(jax.random.key(0)))
    folded, fv = fold_for_inference(net.ir, v)
    left = [n.op for n in ir.layers(net.ir.body)]
    for op in gone:
        left.remove(op)
    assert [n.op for n in ir.layers(folded.body)] == left
    lin = next(n for n in ir.layers(folded.body) if REGISTRY[n.op].linear)
    assert lin.args.bias and lin.params == sum(np.size(a) for a in fv["params"][lin.name].values())
    x = _x(net)
    run = jax.jit(lambda net, v, x: forward(net, v, x)[0], static_argnums=0)  # one program each, not op by op
    np.testing.assert_allclose(run(folded, fv, x), run(net.ir, v, x), rtol=1e-5, atol=1e-5)


def test_an_offset_before_a_padded_layer_stays() -> None:
    """`fold_before` is the op's call: conv declines an offset it would pad with zeros."""
    net = cnndsl.loads("input 3@5x4\ntestshift 1 -> conv 4@3x3 p1")
    folded, _ = fold_for_inference(net.ir, net.init(jax.random.key(0)))
    assert [n.op for n in ir.layers(folded.body)] == ["testshift", "conv"]


def test_a_new_softmax_is_the_final_activation_everywhere() -> None:
    net = cnndsl.loads("input 6\ndense 3 -> testfinalsoftmax")
    head = cnndsl.loads("input 6\ndense 3")
    v = net.init(jax.random.key(0))
    x = _x(net)
    assert final_activation(net.ir) is net.ir.body.items[-1]
    logits = forward(net.ir, v, x, logits=True)[0]
    np.testing.assert_allclose(logits, forward(head.ir, v, x)[0], rtol=1e-6)
    np.testing.assert_allclose(build(net.ir)(x, logits=True).shape, logits.shape)
    task = engine.make_task(net.ir, TrainConfig())
    assert task.logits and task.final is net.ir.body.items[-1] and "on logits" in task.explain()
    with pytest.raises(ArgumentError, match="ends with `testfinalsoftmax`"):
        engine.make_task(net.ir, TrainConfig(loss="bce"))


def test_a_new_sigmoid_gives_bce_probabilities() -> None:
    net = cnndsl.loads("input 6\ndense 3 -> testfinalsigmoid")
    v = net.init(jax.random.key(0))
    x = _x(net)
    assert final_activation(net.ir) is None  # not skipped by `logits=True`
    task = engine.make_task(net.ir, TrainConfig(loss="bce"))
    assert not task.logits and task.final is net.ir.body.items[-1] and "probabilities" in task.explain()
    got = _probabilities(net, v, np.asarray(x), "bce")  # taken as probabilities, no second sigmoid
    np.testing.assert_allclose(got, forward(net.ir, v, x)[0], rtol=1e-6)


def test_a_new_random_op_gets_a_key_in_the_module() -> None:
    net = cnndsl.loads("input 3@4x4\ntestnoise")
    model = build(net.ir)
    assert model.rngs is not None
    x = _x(net)
    assert not np.allclose(model(x), x)  # training mode: noise added with the forked key
    model.eval()
    np.testing.assert_array_equal(model(x), x)


def test_a_lowering_that_disagrees_with_the_ir_shape_is_caught_at_trace_time() -> None:
    net = cnndsl.loads("input 3@4x5\nrelu -> testwrong as bad")
    with pytest.raises(AssertionError, match=r"layer `bad` \(op `testwrong`.*\(2, 4, 4, 3\).*3@4x5.*\(2, 5, 4, 3\)"):
        jax.eval_shape(lambda x: forward(net.ir, {}, x)[0], jax.ShapeDtypeStruct(net.input.array_shape(2), jnp.float32))
