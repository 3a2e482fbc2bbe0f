"""Checks that a compiled network's IR agrees with what JAX actually builds and runs.

Shared by `test_zoo.py` and `test_composition.py`. Everything here is abstract
(`jax.eval_shape`): no weights are initialised and nothing is computed, so it is cheap even
for VGG-16.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import cnndsl
from cnndsl import ir
from cnndsl.backends.jax.model import forward, init_variables


def _size(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _at(tree: dict, path: tuple[str, ...]) -> dict:
    for part in path:
        tree = tree.get(part, {})
    return tree


def check_against_jax(net: cnndsl.Net, batch: int = 2) -> None:
    """Assert, without computing anything:

    - every layer's and merge's inferred output shape equals its value's shape when the
      forward pass is traced by `jax.eval_shape` (seen through the forward's `observe` hook),
      and every block instance outputs what its last node does;
    - every layer's variables hold exactly the IR's parameter count for it, and the totals
      split into trainable (`params`) and non-trainable (`batch_stats`, `fixed`) as the IR says;
    - the training-mode forward returns BN-statistic updates shaped like `batch_stats`;
    - the NNX module (`net.build`) holds the same number of trainable parameters and, traced
      in eval mode, returns the network's output shape.
    """
    variables = jax.eval_shape(lambda k: init_variables(net.ir, k), jax.random.key(0))
    x = jax.ShapeDtypeStruct(net.input.array_shape(batch), jnp.float32)
    seen: dict[int, tuple[int, ...]] = {}

    def observe(node: ir.Node, y: jax.Array) -> None:
        seen[id(node)] = tuple(y.shape)

    jax.eval_shape(lambda v, x: forward(net.ir, v, x, observe=observe)[0], variables, x)

    checked = 0
    for _, node in ir.walk(net.ir.body):
        if isinstance(node, (ir.Layer, ir.Merge, ir.MergeRef)):
            assert node.y is not None
            assert seen[id(node)] == node.y.array_shape(batch), f"{node.name}: IR {node.y}, JAX {seen[id(node)]}"
            checked += 1
        elif isinstance(node, ir.Group):
            assert node.y == ir.chain_output(node.body, None), node.name
    assert checked == len(seen)

    for layer in ir.layers(net.ir.body):
        held = sum(_size(_at(coll, layer.path)) for coll in variables.values())
        assert held == layer.params + layer.fixed, f"{layer.name}: variables {held}, IR {layer.params + layer.fixed}"
    trainable = _size(variables.get("params", {}))
    fixed = _size(variables.get("batch_stats", {})) + _size(variables.get("fixed", {}))
    assert (trainable, fixed) == (net.params["trainable"], net.params["non_trainable"])

    def train_step(v, x):
        return forward(net.ir, v, x, train=True, key=jax.random.key(1))

    y, updates = jax.eval_shape(train_step, variables, x)
    assert tuple(y.shape) == net.output.array_shape(batch)
    stats = variables.get("batch_stats", {})
    assert jax.tree.structure(updates) == jax.tree.structure(stats)
    assert [u.shape for u in jax.tree.leaves(updates)] == [s.shape for s in jax.tree.leaves(stats)]

    model = nnx.eval_shape(lambda: net.build(nnx.Rngs(0)))
    assert _size(nnx.state(model, nnx.Param)) == net.params["trainable"]
    graphdef, state = nnx.split(model)

    def run_module(state, x):
        m = nnx.merge(graphdef, state)
        m.eval()
        return m(x)

    assert tuple(jax.eval_shape(run_module, state, x).shape) == net.output.array_shape(batch)


def synthetic_variables(net: cnndsl.Net, seed: int = 0) -> dict:
    """Variables shaped like `net.init`'s, filled from numpy in well under a second.

    `init_variables` compiles a random-number kernel per distinct weight shape on CPU (10 to
    40 s for an ImageNet model), too slow to run for every zoo model. These are uniform with
    LeCun's variance (1/fan-in) for kernels, and BN-like for vectors (scale and variance 1,
    biases and means 0), so activations stay in range through deep networks.
    """
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(lambda k: init_variables(net.ir, k), jax.random.key(0))

    def fill(path, leaf):
        name = path[-1].key
        if len(leaf.shape) >= 2:
            bound = math.sqrt(3 / math.prod(leaf.shape[:-1]))
            return (rng.random(leaf.shape, dtype=np.float32) * 2 - 1) * np.float32(bound)
        return np.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, np.float32)

    return jax.tree_util.tree_map_with_path(fill, abstract)
