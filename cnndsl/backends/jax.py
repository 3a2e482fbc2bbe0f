"""The JAX/Flax backend: variables from the IR, a pure forward pass, and an NNX module.

Variables are nested dicts keyed by layer path, split into collections as in Flax:
`{"params": ..., "batch_stats": ..., "fixed": ...}` (the last holds constant filter
kernels; it is never trained). The forward pass walks the IR once at trace time and calls
each op's lowering (`Op.apply`); under `jax.jit` nothing of this Python runs per step.

    variables, apply = functional(net, jax.random.key(0))
    y = apply(variables, x)                                  # eval: x (N, H, W, D)
    y, batch_stats = apply(variables, x, train=True, key=k)  # train: BN batch stats, dropout
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._xla_guard import install as _install_xla_guard

_install_xla_guard(warn=True)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from .. import ir  # noqa: E402
from ..errors import ArgumentError, ShapeError  # noqa: E402
from ..ops import MERGES, REGISTRY  # noqa: E402
from ..ops.base import ApplyCtx  # noqa: E402
from ..passes.dataflow import Walker  # noqa: E402

COLLECTIONS = ("params", "batch_stats", "fixed")
FINAL_ACTIVATIONS = ("softmax", "logsoftmax")


def _put(tree: dict, path: tuple[str, ...], key: str, value: Any) -> None:
    for part in path:
        tree = tree.setdefault(part, {})
    tree[key] = value


def _get(tree: dict, path: tuple[str, ...]) -> dict:
    for part in path:
        tree = tree.get(part, {})
    return tree


def init_variables(net: ir.Network, key: jax.Array) -> dict[str, dict]:
    """Fresh variables for every layer, initialised as Flax's layers do by default.

    Values are drawn on the host with NumPy, from generators seeded by `key` and the
    layer's position (deterministic; the same distributions as Flax, not the same bits),
    and moved to the device in one transfer: drawing each shape with `jax.random` compiled
    a kernel per shape and took seconds for LeNet on CPU.
    """
    import numpy as np

    traced = isinstance(key, jax.core.Tracer)  # under jit/eval_shape: draw with jax.random
    if not traced:
        data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
        seed = np.asarray(data).ravel().tolist()
    out: dict[str, dict] = {}
    for i, n in enumerate(ir.layers(net.body)):
        assert n.x is not None and n.y is not None, "run the passes first"
        rng = jax.random.fold_in(key, i) if traced else np.random.default_rng([*seed, i])
        for name, (coll, value) in REGISTRY[n.op].init(n.args, n.x, n.y, rng).items():
            _put(out.setdefault(coll, {}), n.path, name, value)
    return jax.device_put(out)


class _Forward(Walker[jax.Array]):
    rebuild = False

    def __init__(
        self,
        variables: dict,
        train: bool,
        key: jax.Array | None,
        skip: ir.Layer | None,
        dropout: bool,
        observe: Callable[[ir.Node, jax.Array], None] | None = None,
        lowering: dict[str, str] | None = None,
        remat: bool = False,
        dtype: Any = None,
        frozen: frozenset[tuple[str, ...]] = frozenset(),
    ) -> None:
        self.frozen = frozen
        self.remat = remat
        self.dtype = dtype
        self.observe = observe
        self.lowering = lowering or {}
        self.variables = variables
        self.train = train
        self.dropout = dropout
        self.key = key
        self.skip = skip
        self.updates: dict[str, dict] = {}
        self.count = 0

    def layer(self, n: ir.Layer, x: jax.Array) -> tuple[ir.Layer, jax.Array]:
        self.count += 1
        if n is self.skip:
            return n, x
        p: dict[str, Any] = {}
        for coll in COLLECTIONS:
            p.update(_get(self.variables.get(coll, {}), n.path))
        key = None if self.key is None else jax.random.fold_in(self.key, self.count)
        impl = self.lowering.get(n.name) or self.lowering.get("*")
        if impl not in REGISTRY[n.op].lowerings:
            impl = None
        train = self.train and n.path not in self.frozen
        ctx = ApplyCtx(train=train, key=key, x=n.x, y=n.y, dropout=self.dropout, impl=impl)
        op = REGISTRY[n.op]
        if self.dtype is not None and op.mixed_precision:
            x = x.astype(self.dtype)
            p = {k: v.astype(self.dtype) if k == "kernel" else v for k, v in p.items()}
            ctx.accumulate = jnp.float32
        y = op.apply(n.args, p, x, ctx)
        for name, value in ctx.updates.items():
            _put(self.updates, n.path, name, value)
        if self.observe is not None:
            self.observe(n, y)
        return n, y

    def group_body(self, n: ir.Group, x: jax.Array, env: dict) -> tuple[ir.Chain, jax.Array]:
        if not self.remat:
            return super().group_body(n, x, env)
        start = self.count

        def body(variables: dict, key: jax.Array | None, x: jax.Array) -> tuple[jax.Array, dict]:
            sub = _Forward(
                variables, self.train, key, None, self.dropout, None, self.lowering, False, self.dtype, self.frozen
            )
            sub.count = start
            return sub.run(n.body, x, {})[1], sub.updates

        # Activations inside the block are recomputed in the backward pass, not stored.
        y, updates = jax.checkpoint(body)(self.variables, self.key, x)
        self.count += sum(1 for _ in ir.layers(n.body))
        self.updates = _merge_trees(self.updates, updates)
        return n.body, y

    def merge(self, n, xs, labels):
        y = MERGES[n.kind].apply(xs)
        if self.observe is not None:
            self.observe(n, y)
        return n, y


def final_activation(net: ir.Network) -> ir.Layer | None:
    """The trailing `softmax`/`logsoftmax` layer, if the network ends with one."""
    last = net.body.items[-1] if net.body.items else None
    return last if isinstance(last, ir.Layer) and last.op in FINAL_ACTIVATIONS else None


def forward(
    net: ir.Network,
    variables: dict,
    x: jax.Array,
    *,
    train: bool = False,
    key: jax.Array | None = None,
    logits: bool = False,
    dropout: bool = True,
    observe: Callable[[ir.Node, jax.Array], None] | None = None,
    lowering: dict[str, str] | None = None,
    remat: bool = False,
    dtype: Any = None,
    frozen: frozenset[tuple[str, ...]] = frozenset(),
) -> tuple[jax.Array, dict]:
    """`x: (N, *spatial[::-1], D)` -> (output, batch-stat updates by layer path).

    `train=True` uses batch statistics in BN (and returns their updates) and, unless
    `dropout=False`, applies dropout with `key`. `logits=True` leaves out a trailing
    softmax/logsoftmax (for losses that take logits). `observe(node, value)` is called
    with every layer's and merge's output at trace time (for tests and debugging).
    `lowering` maps layer names (or `"*"`, every layer that has it) to one of the op's
    `lowerings`, overriding its default choice (e.g. `{"*": "xla"}`). `remat=True` wraps
    every block instance in `jax.checkpoint`: its activations are recomputed in the backward
    pass instead of stored (less memory, more compute). `dtype=jnp.bfloat16` computes
    convolutions and dense layers in bfloat16 with float32 accumulation (other layers and
    all variables stay float32). Layers whose path is in `frozen` run in inference mode even
    when `train=True` (BN normalises with its running statistics and does not update them),
    as Keras does for non-trainable layers: a frozen feature extractor computes the same
    features in training as at test time.
    """
    want = net.input.array_shape()
    if tuple(x.shape[1:]) != want:
        raise ShapeError(
            f"the input array has shape {tuple(x.shape)}, but `input {net.input}` needs (N, {', '.join(map(str, want))})",
            net.input_span,
            hints=["arrays are channels-last: `D@WxH` is (N, H, W, D)"],
        ).with_source(net.source)
    skip = final_activation(net) if logits else None
    walker = _Forward(variables, train, key, skip, dropout, observe, lowering, remat, dtype, frozenset(frozen))
    _, y = walker.run(net.body, x)
    return y, walker.updates


def _merge_trees(base: dict, new: dict) -> dict:
    out = dict(base)
    for k, v in new.items():
        out[k] = _merge_trees(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


def functional(
    net: ir.Network,
    key: jax.Array,
    *,
    lowering: dict[str, str] | None = None,
    remat: bool = False,
    dtype: Any = None,
) -> tuple[dict, Callable[..., Any]]:
    """A pure (variables, apply) pair for plain JAX: jit, grad and vmap work on `apply`."""
    variables = init_variables(net, key)

    def apply(variables: dict, x: jax.Array, *, train: bool = False, key: jax.Array | None = None, logits: bool = False):
        y, updates = forward(net, variables, x, train=train, key=key, logits=logits, lowering=lowering, remat=remat, dtype=dtype)
        if not train:
            return y
        return y, _merge_trees(variables.get("batch_stats", {}), updates)

    return variables, apply


class Fixed(nnx.Variable):
    """A constant (non-trainable) kernel: `nnx.Param` filters leave it out."""


_VARIABLE_TYPES = {"params": nnx.Param, "batch_stats": nnx.BatchStat, "fixed": Fixed}


def _to_nnx(tree: dict, coll: str) -> nnx.Dict:
    return nnx.Dict({k: _to_nnx(v, coll) if isinstance(v, dict) else _VARIABLE_TYPES[coll](v) for k, v in tree.items()})


def _values(tree: nnx.Dict) -> dict:
    # Not `tree.items()`: `nnx.tabulate` wraps the methods of every object in the model
    # (recursing on `items`) and tags each with an `_nnx_tabulate_id` entry.
    return {k: _values(v) if isinstance(v := tree[k], nnx.Dict) else v[...] for k in tree if not k.startswith("_nnx")}


class _Spec:
    """Holds the IR as a static attribute, compared by identity (cheap to hash under jit)."""

    __slots__ = ("net",)

    def __init__(self, net: ir.Network) -> None:
        self.net = net

    def __hash__(self) -> int:
        return id(self.net)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Spec) and other.net is self.net


class Model(nnx.Module):
    """A Flax NNX module built eagerly from the IR (every shape is already known).

    Variables live in `model.params`, `model.batch_stats`, `model.fixed` (nested `nnx.Dict`
    by layer path: `model.params["conv1"]["kernel"]`). Like Flax's own layers the module
    starts in training mode; `model.eval()` / `model.train()` switch BN and dropout.
    """

    def __init__(self, net: ir.Network, *, rngs: nnx.Rngs) -> None:
        self.spec = _Spec(net)
        variables = init_variables(net, rngs.params())
        for coll in COLLECTIONS:
            setattr(self, coll, _to_nnx(variables.get(coll, {}), coll))
        self.rngs = rngs.fork() if any(n.op == "dropout" for n in ir.layers(net.body)) else None
        self.use_running_average = False
        self.deterministic = False

    def __call__(self, x: jax.Array, *, logits: bool = False) -> jax.Array:
        """`x: (N, *spatial[::-1], D)` -> the network's output."""
        train = not self.use_running_average
        dropout = train and not self.deterministic
        key = None
        if dropout and self.rngs is not None:
            key = self.rngs.dropout() if "dropout" in self.rngs else self.rngs.default()
        variables = {c: _values(getattr(self, c)) for c in COLLECTIONS}
        y, updates = forward(self.spec.net, variables, x, train=train, key=key, logits=logits, dropout=dropout)
        if train:
            self._write_stats(self.batch_stats, updates)
        return y

    def _write_stats(self, tree: nnx.Dict, updates: dict) -> None:
        for k, v in updates.items():
            if isinstance(v, dict):
                self._write_stats(tree[k], v)
            else:
                tree[k][...] = v


def build(net: ir.Network, rngs: nnx.Rngs | None = None) -> Model:
    if rngs is None:
        rngs = nnx.Rngs(0)
    if not isinstance(rngs, nnx.Rngs):
        raise ArgumentError("build(rngs=...) takes an `nnx.Rngs`, like `nnx.Rngs(0)`")
    return Model(net, rngs=rngs)


def lower(net: ir.Network, x: jax.Array | None = None) -> Any:
    """The jitted eval forward, lowered for `x` (or zeros of batch 1): for HLO inspection."""
    variables = init_variables(net, jax.random.key(0))
    x = jnp.zeros(net.input.array_shape(1), jnp.float32) if x is None else x
    return jax.jit(lambda v, x: forward(net, v, x)[0]).lower(variables, x)
