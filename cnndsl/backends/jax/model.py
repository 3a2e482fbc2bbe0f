"""The JAX/Flax backend: variables from the IR, a pure forward pass, and an NNX module.

Variables are nested dicts keyed by layer path, split into collections as in Flax:
`{"params": ..., "batch_stats": ..., "fixed": ...}` (the last holds constant filter
kernels; it is never trained). The forward pass walks the IR once at trace time and calls
each op's lowering (`lowerings.LOWERINGS`); under `jax.jit` nothing of this Python runs per step.

    variables, apply = functional(net, jax.random.key(0))
    y = apply(variables, x)                                  # eval: x (N, H, W, D)
    y, batch_stats = apply(variables, x, train=True, key=k)  # train: BN batch stats, dropout
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ._xla_guard import install as _install_xla_guard

_install_xla_guard(warn=True)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from ... import ir, nested  # noqa: E402
from ...errors import ArgumentError, CnnNameError, ShapeError, did_you_mean  # noqa: E402
from ...ir import Walker  # noqa: E402
from ...ops import REGISTRY  # noqa: E402
from ...ops.base import CLASS_NORMALISERS  # noqa: E402
from .lowerings import LOWERINGS, MERGE_LOWERINGS, ApplyCtx, Lowering  # noqa: E402

COLLECTIONS = ("params", "batch_stats", "fixed")
LOGIT_SKIPPED = CLASS_NORMALISERS  # the `Op.final_activation`s that `logits=True` leaves out


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
        rng = _TracedRng(jax.random.fold_in(key, i)) if traced else np.random.default_rng([*seed, i])
        for name, (coll, value) in REGISTRY[n.op].init(n.args, n.x, n.y, rng).items():
            nested.put(out.setdefault(coll, {}), n.path, name, value)
    return jax.device_put(out)


class _TracedRng:
    """What `Op.init` draws from when the initialisation is traced (`jax.eval_shape(net.init,
    key)`, `jax.jit`): the distributions of its NumPy draws, by `jax.random`."""

    def __init__(self, key: jax.Array) -> None:
        self.key = key

    def lecun_normal(self, shape: tuple[int, ...]) -> jax.Array:
        return jax.nn.initializers.lecun_normal()(self.key, shape)


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
            p.update(nested.at(self.variables.get(coll, {}), n.path) or {})
        impl = self.lowering.get(n.name) or self.lowering.get("*")
        train = self.train and n.path not in self.frozen
        y, updates = apply_layer(
            n, p, x, train=train, dropout=self.dropout, key=self._key(), impl=impl, dtype=self.dtype
        )
        for name, value in updates.items():
            nested.put(self.updates, n.path, name, value)
        if self.observe is not None:
            self.observe(n, y)
        return n, y

    def _key(self) -> jax.Array | None:
        """This layer's key: the call's key folded with the layer's position (same in the NNX tree)."""
        return None if self.key is None else jax.random.fold_in(self.key, self.count)

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
        y = MERGE_LOWERINGS[n.kind](xs)
        if self.observe is not None:
            self.observe(n, y)
        return n, y


def apply_layer(
    n: ir.Layer,
    p: dict[str, jax.Array],
    x: jax.Array,
    *,
    train: bool,
    dropout: bool = True,
    key: jax.Array | None = None,
    impl: str | None = None,
    dtype: Any = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One layer's lowering on `x` with its variables `p` (by name): (output, state updates).
    The functional forward and the NNX module tree both call this, so they cannot drift."""
    low = lowering_of(n)
    ctx = ApplyCtx(train=train, key=key, x=n.x, y=n.y, dropout=dropout, impl=impl if impl in low.impls else None)
    if dtype is not None and low.mixed_precision:
        x = x.astype(dtype)
        p = {k: v.astype(dtype) if k == "kernel" else v for k, v in p.items()}
        ctx.accumulate = jnp.float32
    y = low.apply(n.args, p, x, ctx)
    _check_lowered(n, x, y)
    return y, ctx.updates


def lowering_of(n: ir.Layer) -> Lowering:
    """The JAX lowering of layer `n`'s op; a located error if this backend has none."""
    low = LOWERINGS.get(n.op)
    if low is None:
        raise CnnNameError(
            f"the JAX backend has no lowering for `{n.op}` (layer `{n.name}`)",
            n.span,
            hints=["add one to `cnndsl/backends/jax/lowerings` (the `LOWERINGS` table)"],
        )
    return low


def _check_lowered(n: ir.Layer, x: jax.Array, y: jax.Array) -> None:
    """At trace time (free at run time): a lowering's output has the IR's shape. A mismatch
    is a bug in the op's lowering or shape rule, never the user's, hence no CnnError."""
    if tuple(x.shape) != n.x.array_shape(x.shape[0]):
        return  # the input was changed by model surgery (a replaced layer in the NNX tree): no claim
    want = n.y.array_shape(x.shape[0])
    if tuple(y.shape) != want:
        raise AssertionError(
            f"internal error: the lowering of layer `{n.name}` (op `{n.op}`, `{n.text}`) returned an array "
            f"of shape {tuple(y.shape)}, but the IR says {n.y}, i.e. {want} (input {tuple(x.shape)}, IR {n.x})"
        )


def final_activation(net: ir.Network, kinds: tuple[str, ...] = LOGIT_SKIPPED) -> ir.Layer | None:
    """The network's last layer if it is a final activation of one of `kinds` (its op's
    `Op.final_activation` trait; by default softmax-like, which `logits=True` skips)."""
    last = net.body.items[-1] if net.body.items else None
    if isinstance(last, ir.Layer) and REGISTRY[last.op].final_activation in kinds:
        return last
    return None


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
    lowering's `impls`, overriding its default choice (e.g. `{"*": "xla"}`). `remat=True` wraps
    every block instance in `jax.checkpoint`: its activations are recomputed in the backward
    pass instead of stored (less memory, more compute). `dtype=jnp.bfloat16` computes
    convolutions and dense layers in bfloat16 with float32 accumulation (other layers and
    all variables stay float32). Layers whose path is in `frozen` run in inference mode even
    when `train=True` (BN normalises with its running statistics and does not update them),
    as Keras does for non-trainable layers: a frozen feature extractor computes the same
    features in training as at test time.
    """
    _check_input(net, x)
    check_lowering(net, lowering)
    skip = final_activation(net) if logits else None
    walker = _Forward(variables, train, key, skip, dropout, observe, lowering, remat, dtype, frozenset(frozen))
    _, y = walker.run(net.body, x)
    return y, walker.updates


def check_lowering(net: ir.Network, lowering: Any) -> None:
    """Refuse an override `{layer name or "*": lowering}` that would be ignored: an unknown
    layer or lowering (did you mean), a lowering the named layer's op does not have, or one
    that does not compute this layer (`Lowering.candidates`: it would silently fall back).
    `"*"` needs a lowering some layer has; layers without it keep their default. Runs in
    Python before tracing (under `jax.jit` once per trace, never per step)."""
    if not lowering:
        return
    if not isinstance(lowering, dict):
        raise ArgumentError(
            f"`lowering` is a dict {{layer name: lowering}}, got {type(lowering).__name__}",
            hints=['e.g. `lowering={"conv2": "xla"}` or `lowering={"*": "xla"}`'],
        )
    layers = {n.name: n for n in ir.layers(net.body)}
    declared: dict[str, list[str]] = {}  # every lowering of any op -> the ops that have it
    for op, low in LOWERINGS.items():
        for impl in low.impls:
            declared.setdefault(impl, []).append(op)
    used = sorted({impl for n in layers.values() for impl in lowering_of(n).impls})
    for name, impl in lowering.items():
        if not isinstance(name, str) or not isinstance(impl, str):
            raise ArgumentError(
                f"`lowering` maps layer names to lowering names (text), got {name!r}: {impl!r}",
                hints=['e.g. `lowering={"conv2": "xla"}`'],
            )
        if name != "*" and name not in layers:
            raise CnnNameError(
                f"`lowering` names no layer `{name}`",
                notes=["the network's layers: " + _listed(list(layers))],
                hints=did_you_mean(name, [*layers, "*"]) or ['`"*"` sets every layer that has the lowering'],
            )
        if impl not in declared:
            raise CnnNameError(
                f"unknown lowering `{impl}` for `{name}`",
                notes=["lowerings: " + ", ".join(f"`{k}`" for k in sorted(declared))],
                hints=did_you_mean(impl, declared),
            )
        if name == "*":
            if impl not in used:
                raise ArgumentError(
                    f'`lowering={{"*": "{impl}"}}`: no layer of `{net.name}` has the lowering `{impl}`',
                    notes=[_owners(impl, declared), "this network's layers have " + ", ".join(f"`{k}`" for k in used)],
                )
            continue
        n = layers[name]
        low = lowering_of(n)
        if impl not in low.impls:
            raise ArgumentError(
                f"lowering `{impl}` does not apply to `{name}` (`{n.text}`): `{n.op}` has "
                + " and ".join(f"`{k}`" for k in low.impls),
                notes=[_owners(impl, declared)],
                hints=[f"leave `{name}` out of `lowering` for its default (`{low.impls[0]}` here)"]
                if len(low.impls) == 1
                else ["choose one of " + ", ".join(f"`{k}`" for k in low.impls)],
            )
        applies = {k for train in (False, True) for k in low.candidates(n.args, n.x, n.y, train)}
        if impl not in applies:
            raise ArgumentError(
                f"lowering `{impl}` cannot compute `{name}` (`{n.text}`, input {n.x}): it would fall back silently",
                notes=[
                    low.why_not(n.args, n.x, impl)
                    or f"`{impl}` does not compute `{n.op}` for this input shape and these options",
                    "lowerings that compute it: " + ", ".join(f"`{k}`" for k in sorted(applies)),
                ],
                hints=[f"choose one of those, or leave `{name}` to its default"],
            )


def _owners(impl: str, declared: dict[str, list[str]]) -> str:
    return f"`{impl}` is a lowering of " + ", ".join(f"`{o}`" for o in sorted(declared[impl]))


def _listed(names: list[str], most: int = 12) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _check_input(net: ir.Network, x: jax.Array) -> None:
    want = net.input.array_shape()
    if tuple(x.shape[1:]) != want:
        raise ShapeError(
            f"the input array has shape {tuple(x.shape)}, but `input {net.input}` needs (N, {', '.join(map(str, want))})",
            net.input_span,
            hints=["arrays are channels-last: `D@WxH` is (N, H, W, D)"],
        ).with_source(net.source)


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
    check_lowering(net, lowering)  # here, before anything is traced or initialised
    variables = init_variables(net, key)

    def apply(
        variables: dict, x: jax.Array, *, train: bool = False, key: jax.Array | None = None, logits: bool = False
    ):
        y, updates = forward(
            net, variables, x, train=train, key=key, logits=logits, lowering=lowering, remat=remat, dtype=dtype
        )
        if not train:
            return y
        return y, _merge_trees(variables.get("batch_stats", {}), updates)

    return variables, apply


class Fixed(nnx.Variable):
    """A constant (non-trainable) kernel: `nnx.Param` filters leave it out."""


_VARIABLE_TYPES = {"params": nnx.Param, "batch_stats": nnx.BatchStat, "fixed": Fixed}
_COLLECTION_OF = {v: k for k, v in _VARIABLE_TYPES.items()}


class _Static:
    """An IR object held as a static attribute, compared by identity (cheap to hash under jit)."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Static) and other.value is self.value

    def __repr__(self) -> str:
        v = self.value
        return (
            f"`{v.text}` ({v.x} -> {v.y})"
            if isinstance(v, ir.Layer)
            else f"<{type(v).__name__} {getattr(v, 'name', '')}>"
        )


class Layer(nnx.Module):
    """One IR layer as an NNX module: its variables are attributes named as in the functional
    tree (`model.conv1.kernel` is `variables["params"]["conv1"]["kernel"]`). Like Flax's layers
    it follows `use_running_average` (BN statistics) and `deterministic` (dropout), which
    `model.train()` / `model.eval()` set on every layer; setting them on one layer freezes it.

    `layer(x, key=k)`: `x` of the layer's input shape (channels-last); `key` for dropout.
    """

    def __init__(self, node: ir.Layer, variables: dict[str, tuple[str, jax.Array]]) -> None:
        self.node = _Static(node)
        self.variable_names = tuple(variables)
        for name, (coll, value) in variables.items():
            setattr(self, name, _VARIABLE_TYPES[coll](value))
        self.use_running_average = False
        self.deterministic = False

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        n: ir.Layer = self.node.value  # type: ignore[assignment]
        p = {name: getattr(self, name)[...] for name in self.variable_names}
        train = not self.use_running_average
        y, updates = apply_layer(n, p, x, train=train, dropout=train and not self.deterministic, key=key)
        for name, value in updates.items():
            getattr(self, name)[...] = value
        return y


@functools.cache
def _layer_class(op: str) -> type[Layer]:
    """`Layer` named after the op (`Conv`, `Maxpool`), so summaries such as `nnx.tabulate` say
    what each layer is."""
    name = op[:1].upper() + op[1:]
    return type(name, (Layer,), {"__module__": __name__, "__qualname__": name})


class Block(nnx.Module):
    """A block instance (`stage2`, `stage2.block1`): its layers and nested blocks as attributes."""


def _attach(parent: nnx.Module, name: str, child: nnx.Module, where: tuple[str, ...]) -> None:
    if name in _RESERVED or name.startswith("_"):
        raise ArgumentError(
            f"the layer name `{'.'.join(where)}` clashes with an attribute of an NNX module",
            hints=["rename the layer or block instance with `as NAME`"],
        )
    setattr(parent, name, child)


class _ModuleForward(_Forward):
    """The forward walk, each layer computed by its module in the tree (so `nnx.tabulate` sees
    every layer, and a module put in a layer's place, say a new head, is the one that runs)."""

    def __init__(self, model: Model, key: jax.Array | None, skip: ir.Layer | None) -> None:
        super().__init__({}, True, key, skip, True)
        self.model = model

    def layer(self, n: ir.Layer, x: jax.Array) -> tuple[ir.Layer, jax.Array]:
        self.count += 1
        if n is self.skip:
            return n, x
        m: Any = self.model
        for part in n.path:
            m = getattr(m, part)
        key = self._key() if isinstance(m, Layer) else None
        return n, m(x) if key is None else m(x, key=key)


class Model(nnx.Module):
    """A Flax NNX module tree built eagerly from the IR (every shape is already known).

    Every layer is a submodule named by its path, block instances nest: `model.conv1.kernel`,
    `model.stage2.block1.conv1`, so `nnx.state(model, nnx.Param)` has the paths of the
    functional `variables["params"]` (and `nnx.BatchStat` those of `"batch_stats"`, `Fixed` those
    of `"fixed"`). `model.params["conv1"]["kernel"]` (likewise `batch_stats`, `fixed`) is a nested
    dict of the same `nnx.Variable`s. Like Flax's own layers the module starts in training
    mode; `model.eval()` / `model.train()` switch BN and dropout in every layer.
    """

    def __init__(self, net: ir.Network, *, rngs: nnx.Rngs) -> None:
        self.spec = _Static(net)
        variables = init_variables(net, rngs.params())
        for n in ir.layers(net.body):
            own = {k: (c, v) for c in COLLECTIONS for k, v in (nested.at(variables.get(c, {}), n.path) or {}).items()}
            parent: nnx.Module = self
            for i, part in enumerate(n.path[:-1]):
                if not hasattr(parent, part):
                    _attach(parent, part, Block(), n.path[: i + 1])
                parent = getattr(parent, part)
            _attach(parent, n.path[-1], _layer_class(n.op)(n, own), n.path)
        self.rngs = rngs.fork() if any(REGISTRY[n.op].random for n in ir.layers(net.body)) else None
        self.use_running_average = False
        self.deterministic = False

    def __call__(self, x: jax.Array, *, logits: bool = False) -> jax.Array:
        """`x: (N, *spatial[::-1], D)` -> the network's output (`logits=True`: without a final softmax)."""
        net: ir.Network = self.spec.value  # type: ignore[assignment]
        _check_input(net, x)
        key = None
        if self.rngs is not None and not self.use_running_average and not self.deterministic:
            key = self.rngs.dropout() if "dropout" in self.rngs else self.rngs.default()
        return _ModuleForward(self, key, final_activation(net) if logits else None).run(net.body, x)[1]

    def _collection(self, coll: str) -> dict:
        out: dict = {}
        for path, v in nnx.iter_graph(self):
            if isinstance(v, nnx.Variable) and _COLLECTION_OF.get(type(v)) == coll:
                nested.put(out, tuple(map(str, path[:-1])), str(path[-1]), v)
        return out

    @property
    def params(self) -> dict:
        """The trainable variables as a nested dict by layer path (the `nnx.Param`s themselves)."""
        return self._collection("params")

    @property
    def batch_stats(self) -> dict:
        return self._collection("batch_stats")

    @property
    def fixed(self) -> dict:
        return self._collection("fixed")


_RESERVED = frozenset(dir(Model)) | {"spec", "rngs", "node", "variable_names", "use_running_average", "deterministic"}


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
