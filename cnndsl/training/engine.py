"""The pure pieces of training: losses, optax optimizers and schedules, the jitted train and
eval steps, and where arrays live (a data-parallel `jax.sharding.Mesh`).

Training state is one pytree, donated to the step and returned updated:

    state = {"params", "batch_stats", "opt_state", "step": int32, "metrics": float32[5]}

`metrics` accumulates `[loss sum, correct, top-5 correct, examples, label slots]` on the
device, so the host reads it once per epoch (or every few steps for the progress bar)
instead of syncing every step. Dropout keys are `fold_in(key(seed), step)`: a run is a
function of its seed, and a resumed run of its checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .. import ir
from ..backends.jax.model import LOGIT_SKIPPED, final_activation, forward
from ..errors import ArgumentError
from ..ops import REGISTRY
from .config import TrainConfig

METRICS = ("loss_sum", "correct", "top5", "examples", "slots")


@dataclass(frozen=True, slots=True)
class Task:
    """How the network's output meets the loss.

    `logits`: the loss and metrics see the output before a final softmax/logsoftmax
    (`apply(..., logits=True)`); `final` is that layer (or a final `sigmoid` for `bce`).
    """

    loss: str
    num_outputs: int
    logits: bool
    final: ir.Layer | None
    label_smoothing: float

    def explain(self) -> str:
        """One line for the run's header: what the loss is computed on."""
        f = self.final
        where = f"`{f.op}` ({f.name}, {f.span.line}:{f.span.column})" if f is not None and f.span else ""
        if self.loss == "crossentropy":
            if f is not None and REGISTRY[f.op].final_activation in LOGIT_SKIPPED:
                return (
                    f"crossentropy on logits: the final {where} is skipped in training and the loss "
                    "applies log-softmax itself, so softmax is not applied twice; predict/eval keep it"
                )
            return "crossentropy: the outputs are taken as logits (log-softmax inside the loss)"
        if self.loss == "mse":
            return "mse: ½Σ(one-hot target − output)² per example, averaged over the batch, on the network's output"
        if f is not None and REGISTRY[f.op].final_activation == "sigmoid":
            return (
                f"bce on the final {where} probabilities (clipped to [1e-7, 1-1e-7]), averaged over outputs and batch"
            )
        return "bce on logits (sigmoid inside the loss), averaged over outputs and batch"


def make_task(net: ir.Network, cfg: TrainConfig) -> Task:
    out = net.output
    assert out is not None
    if not out.is_flat:
        raise ArgumentError(
            f"training needs a flat output (class scores), but the network outputs {out}",
            hints=["end with `flatten -> dense N` or `gap -> dense N`"],
        )
    final = final_activation(net)
    if cfg.loss == "bce":
        if final is not None and REGISTRY[final.op].final_activation == "softmax":
            raise ArgumentError(
                f"loss `bce` scores each output on its own, but the network ends with `{final.op}`",
                final.span,
                hints=["end with `sigmoid`, or with `dense N` (logits)", "or use loss = crossentropy"],
            ).with_source(net.source)
        sig = final_activation(net, ("sigmoid",))
        return Task("bce", out.size, sig is None, sig, cfg.label_smoothing)
    return Task(cfg.loss, out.size, cfg.loss == "crossentropy", final, cfg.label_smoothing)


def loss_and_metrics(task: Task, out: jax.Array, y: jax.Array, weight: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Summed loss and metrics of a batch. out: (N, K); y: (N,) int or (N, K) 0/1; weight: (N,)
    1 for real examples, 0 for padding. Returns (loss sum, metrics float32[5])."""
    k = out.shape[-1]
    out = out.astype(jnp.float32)
    t = jax.nn.one_hot(y, k, dtype=jnp.float32) if y.ndim == 1 else y.astype(jnp.float32)
    eps = task.label_smoothing
    if task.loss == "crossentropy":
        per = -(((1 - eps) * t + eps / k) * jax.nn.log_softmax(out)).sum(-1)
    elif task.loss == "mse":
        per = 0.5 * jnp.square((1 - eps) * t + eps / k - out).sum(-1)
    else:
        t = (1 - eps) * t + eps / 2
        if task.logits:
            per = optax.sigmoid_binary_cross_entropy(out, t).mean(-1)
        else:
            p = jnp.clip(out, 1e-7, 1 - 1e-7)
            per = -(t * jnp.log(p) + (1 - t) * jnp.log1p(-p)).mean(-1)
    loss_sum = (per * weight).sum()
    n = weight.sum()
    if y.ndim == 2:
        threshold = 0.0 if task.logits else 0.5
        correct = (((out > threshold) == (y > 0)).mean(-1) * weight).sum()
        top5 = jnp.zeros((), jnp.float32)
        slots = n * k
    else:
        correct = ((jnp.argmax(out, -1) == y) * weight).sum()
        _, top = jax.lax.top_k(out, min(5, k))
        top5 = ((top == y[:, None]).any(-1) * weight).sum()
        slots = n
    return loss_sum, jnp.stack([loss_sum, correct, top5, n, slots]).astype(jnp.float32)


def summarize(m: np.ndarray) -> dict[str, float | None]:
    """metrics float[5] -> {"loss", "acc", "top5"} (None where nothing was counted)."""
    loss_sum, correct, top5, n, slots = (float(v) for v in m)
    if n == 0:
        return {"loss": None, "acc": None, "top5": None}
    multilabel = slots != n
    return {"loss": loss_sum / n, "acc": correct / n, "top5": None if multilabel else top5 / n}


# --- optimizer -------------------------------------------------------------------------------
def make_schedule(cfg: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """The learning rate at each step: linear warm-up, then constant / step / cosine.

    `step(every=E, gamma=G)`: multiplied by G every E epochs. `cosine(min=M)`: from the peak
    to M over the steps left after warm-up. Schedules count steps after the warm-up.
    """
    lr = float(cfg.opt_kwargs()["lr"])
    kw = cfg.schedule_kwargs()
    total = cfg.epochs * steps_per_epoch
    warm = cfg.warmup
    if cfg.schedule == "step":
        main = optax.exponential_decay(
            lr, transition_steps=max(int(kw["every"]) * steps_per_epoch, 1), decay_rate=kw["gamma"], staircase=True
        )
    elif cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(lr, max(total - warm, 1), alpha=kw["min"] / lr if lr else 0.0)
    else:
        main = optax.constant_schedule(lr)
    if not warm:
        return main

    def schedule(count: jax.Array) -> jax.Array:
        ramp = lr * (count + 1) / warm
        return jnp.where(count < warm, ramp, main(jnp.maximum(count - warm, 0)))

    return schedule


def decay_mask(params: Any) -> Any:
    """Weight decay applies to kernels (arrays of 2 or more dimensions), never to biases,
    norm scales or PReLU slopes."""
    return jax.tree.map(lambda a: a.ndim >= 2, params)


def make_optimizer(
    cfg: TrainConfig, frozen: Any, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax transformation for `cfg`; leaves where `frozen` is True get neither updates
    nor optimizer state (`optax.multi_transform` with `set_to_zero`)."""
    kw = cfg.opt_kwargs()
    sched = make_schedule(cfg, steps_per_epoch)
    name = cfg.optimizer
    if name == "sgd":
        base = optax.sgd(sched, momentum=kw["momentum"] or None, nesterov=bool(kw["nesterov"]))
    elif name == "adam":
        base = optax.adam(sched, b1=kw["b1"], b2=kw["b2"], eps=kw["eps"])
    elif name == "adamw":
        base = optax.adamw(
            sched, b1=kw["b1"], b2=kw["b2"], eps=kw["eps"], weight_decay=kw["weight_decay"], mask=decay_mask
        )
    else:
        base = optax.rmsprop(sched, decay=kw["decay"], eps=kw["eps"], momentum=kw["momentum"] or None)
    if not any(jax.tree.leaves(frozen)):
        return base, sched
    labels = jax.tree.map(lambda f: "frozen" if f else "train", frozen)
    return optax.multi_transform({"train": base, "frozen": optax.set_to_zero()}, labels), sched


# --- where arrays live -----------------------------------------------------------------------
class Placement:
    """Data parallelism over `devices` devices: a 1-D mesh `("data",)`, batches sharded on
    their leading axis, everything else replicated. After `jax.distributed.initialize()`
    the mesh is global: the first `devices` local devices of every process, in process
    order, so process p holds a contiguous block of rows of each global batch (`rows`) and
    feeds only those (`put_local`); XLA all-reduces the gradients across processes."""

    def __init__(self, devices: int = 1) -> None:
        available = jax.local_devices()
        if devices < 1 or devices > len(available):
            raise ArgumentError(
                f"--devices {devices}: {len(available)} {available[0].platform} device"
                f"{'s are' if len(available) != 1 else ' is'} available"
                + (" to this process" if jax.process_count() > 1 else ""),
                hints=[
                    (
                        "on CPU, more devices: XLA_FLAGS=--xla_force_host_platform_device_count=4 "
                        "(or jax.config.update('jax_num_cpu_devices', 4) before JAX starts)"
                    )
                ],
            )
        self.local_devices = devices
        self.processes = jax.process_count()
        if self.processes == 1:
            chosen = available[:devices]
        else:  # every process's first `devices` devices, process by process
            by_process: dict[int, list[Any]] = {}
            for d in sorted(jax.devices(), key=lambda d: (d.process_index, d.id)):
                by_process.setdefault(d.process_index, []).append(d)
            chosen = [d for p in sorted(by_process) for d in by_process[p][:devices]]
        self.devices = len(chosen)
        self.mesh = Mesh(np.asarray(chosen), ("data",))
        self.batch = NamedSharding(self.mesh, PartitionSpec("data"))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())

    def describe(self) -> str:
        d = self.mesh.devices.flat[0]
        if self.processes > 1:
            return f"{self.processes} processes × {self.local_devices} {d.platform} (data parallel, jax.distributed)"
        return f"{self.devices} × {d.platform}" + (" (data parallel)" if self.devices > 1 else "")

    def rows(self, n: int) -> slice:
        """This process's rows of a global batch of `n` (all of them with one process)."""
        if self.processes == 1:
            return slice(0, n)
        spans = sorted((i[0].start or 0, n if i[0].stop is None else i[0].stop)
                       for i in self.batch.addressable_devices_indices_map((n,)).values())  # fmt: skip
        return slice(spans[0][0], spans[-1][1])

    def state(self, tree: Any) -> Any:
        """Replicated on the mesh. With several processes each builds its copies from its own
        host values (every process holds the same ones), as `device_put` cannot reach a peer's."""
        if self.processes == 1:
            return jax.device_put(tree, self.replicated)

        def one(x: Any) -> Any:
            key = isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
            a = np.asarray(jax.random.key_data(x) if key else x)
            g = jax.make_array_from_callback(a.shape, self.replicated, lambda idx: a[idx])
            return jax.random.wrap_key_data(g, impl=jax.random.key_impl(x)) if key else g

        return jax.tree.map(one, tree)

    def put_local(self, n: int, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
        """Global batches of `n` rows from this process's rows of them (`rows(n)`)."""
        if self.processes == 1:
            return tuple(jax.device_put(a, self.batch) for a in arrays)
        return tuple(
            jax.make_array_from_process_local_data(self.batch, np.ascontiguousarray(a), (n, *a.shape[1:]))
            for a in arrays
        )

    def put_batch(self, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
        """Global batches from the whole of them (each process keeps its rows)."""
        if self.processes == 1:
            return tuple(jax.device_put(a, self.batch) for a in arrays)
        n = len(arrays[0])
        r = self.rows(n)
        return self.put_local(n, *(a[r] for a in arrays))


def to_host(tree: Any) -> Any:
    """Replicated device arrays -> numpy (reads one local copy; works multi-host)."""

    def one(x: Any) -> Any:
        if isinstance(x, jax.Array) and not jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return np.asarray(x if x.is_fully_addressable else x.addressable_data(0))
        return x

    return jax.tree.map(one, tree)


# --- steps -----------------------------------------------------------------------------------
def frozen_layers(frozen: Any, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Layer paths whose parameters are all frozen (their BN statistics stay put too)."""
    if not isinstance(frozen, dict):
        return set()
    leaves = {k: v for k, v in frozen.items() if not isinstance(v, dict)}
    out = {path} if leaves and all(leaves.values()) else set()
    for k, v in frozen.items():
        if isinstance(v, dict):
            out |= frozen_layers(v, (*path, k))
    return out


def _merge_stats(base: dict, new: dict, skip: set[tuple[str, ...]], path: tuple[str, ...] = ()) -> dict:
    if path in skip:
        return base
    out = dict(base)
    for k, v in new.items():
        out[k] = _merge_stats(base.get(k, {}), v, skip, (*path, k)) if isinstance(v, dict) else v
    return out


DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True, slots=True)
class Compute:
    """How the forward pass is computed (see `backends.jax.forward`); not what it computes."""

    remat: bool = False
    dtype: str = "float32"
    lowering: dict[str, str] | None = None

    def kwargs(self, *, train: bool) -> dict[str, Any]:
        dtype = jnp.bfloat16 if self.dtype == "bfloat16" else None
        return {"remat": self.remat and train, "dtype": dtype, "lowering": self.lowering}

    def describe(self) -> str:
        parts = [self.dtype if self.dtype == "float32" else f"{self.dtype} compute, float32 accumulation"]
        if self.remat:
            parts.append("remat per block")
        if self.lowering:
            chosen = sorted(set(self.lowering.values()))
            parts.append(f"autotuned lowerings ({', '.join(chosen)})")
        return " · ".join(parts)


def make_train_step(
    net: ir.Network,
    task: Task,
    tx: optax.GradientTransformation,
    frozen: Any,
    placement: Placement,
    compute: Compute = Compute(),
    *,
    resident: bool = False,
) -> Callable[..., dict]:
    """`step(state, key, fixed, x, y) -> state`, jitted with the state donated.

    x: (B, H, W, D) float32 sharded on B; y: (B,) int32 or (B, K). With `resident`, the
    step is `step(state, key, fixed, x_all, idx, y)` instead: the training images live on the
    device (replicated) and the step gathers its batch, rows `idx` (B,) int32, itself, so the
    host sends each step its row numbers and labels, not its images. Frozen parameters enter
    the forward pass through `stop_gradient`, so XLA drops their weight gradients; layers
    whose parameters are all frozen run in inference mode (BN uses and keeps its running
    statistics).

    When `state` has `nonfinite` (int32, 0 until then), the step records in it the first
    step (1-based) whose loss or updated weights hold a NaN or an infinity: one sum over the
    new parameters, fused with the update, and no host sync; the caller reads it now and then.
    """
    skip = frozenset(frozen_layers(frozen))

    def step(state: dict, key: jax.Array, fixed: dict, x: jax.Array, y: jax.Array) -> dict:
        dkey = jax.random.fold_in(key, state["step"])
        n = x.shape[0]

        def loss_fn(params: dict) -> tuple[jax.Array, tuple[dict, jax.Array]]:
            params = jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)
            variables = {"params": params, "batch_stats": state["batch_stats"], "fixed": fixed}
            out, updates = forward(
                net, variables, x, train=True, key=dkey, logits=task.logits, frozen=skip, **compute.kwargs(train=True)
            )
            loss_sum, metrics = loss_and_metrics(task, out, y, jnp.ones((n,), jnp.float32))
            return loss_sum / n, (updates, metrics)

        (loss, (updates, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        changes, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], changes)
        new = {
            "params": params,
            "batch_stats": _merge_stats(state["batch_stats"], updates, skip),
            "opt_state": opt_state,
            "step": state["step"] + 1,
            "metrics": state["metrics"] + metrics,
        }
        if "nonfinite" in state:
            # A NaN or an infinity anywhere makes the sum non-finite (so can an overflowing
            # sum of huge finite weights, which is divergence too).
            total = sum(jnp.sum(p.astype(jnp.float32)) for p in jax.tree.leaves(params))
            ok = jnp.isfinite(loss) & jnp.isfinite(total)
            first = state["nonfinite"]
            new["nonfinite"] = jnp.where((first == 0) & ~ok, state["step"] + 1, first).astype(jnp.int32)
        return new

    rep, bat = placement.replicated, placement.batch
    if not resident:
        return jax.jit(step, donate_argnums=(0,), in_shardings=(rep, rep, rep, bat, bat), out_shardings=rep)

    def gathered(state: dict, key: jax.Array, fixed: dict, x_all: jax.Array, idx: jax.Array, y: jax.Array) -> dict:
        x = jax.lax.with_sharding_constraint(jnp.take(x_all, idx, axis=0, mode="clip"), bat)
        return step(state, key, fixed, x, y)

    return jax.jit(gathered, donate_argnums=(0,), in_shardings=(rep, rep, rep, rep, bat, bat), out_shardings=rep)


def make_eval_step(
    net: ir.Network, task: Task, placement: Placement, compute: Compute = Compute()
) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """`evaluate(variables, x, y, w) -> (metrics float32[5], outputs)`; `w` masks padding.
    The outputs are the network's own (final softmax included)."""

    def step(variables: dict, x: jax.Array, y: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
        out = forward(net, variables, x, logits=task.logits, **compute.kwargs(train=False))[0]
        _, metrics = loss_and_metrics(task, out, y, w)
        return metrics, out

    rep, bat = placement.replicated, placement.batch
    return jax.jit(step, in_shardings=(rep, bat, bat, bat), out_shardings=(rep, bat))


def new_state(variables: dict, tx: optax.GradientTransformation) -> dict:
    return {
        "params": variables["params"],
        "batch_stats": variables.get("batch_stats", {}),
        "opt_state": tx.init(variables["params"]),
        "step": jnp.zeros((), jnp.int32),
        "metrics": jnp.zeros((len(METRICS),), jnp.float32),
    }
