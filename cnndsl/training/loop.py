"""`train(net)`: one training run — data, state, the loop, checkpoints, history, plot.

    result = train("examples/digits.cnn", overrides={"epochs": 5}, out="runs/digits")
    result.test["acc"], result.history[-1]["val_acc"]

A run writes to OUT (default `runs/<network name>`):

    OUT/checkpoints/      latest + best (by validation accuracy), every epoch (cnndsl.training.checkpoint)
    OUT/history.jsonl     one JSON line per epoch: train/val loss, accuracy, top-5, lr, time, img/s
    OUT/history.png       the loss and accuracy curves
    OUT/summary.json      the final figures (test accuracy, wall time, images/s, ...)
    OUT/.cnndsl-run.json  the manifest of what cnndsl wrote there; OUT/.cnndsl.lock, locked while it runs

The folder is cnndsl's only if it is empty or holds a cnndsl run (`rundir`): another tool's
files are never deleted, and two runs never share a folder. JSON is strict (NaN is null),
history and summary are replaced atomically, and a history line that a crash lost is rebuilt
from the checkpoint. A non-finite loss or weight stops the run (it is never saved). SIGINT and
SIGTERM stop after the current step with a checkpoint that `resume` continues bit for bit.

The host loop only feeds batches: each step is one call of a jitted, donated, pure function.
A small unaugmented training set lives on the device (`RESIDENT_BYTES`), so the host sends
each step only its batch's row numbers; otherwise it sends the batch. The host reads the
device only at the end of an epoch, once a second for the non-finite flag, and when it
stops; the progress bar polls copies of the running metrics, waiting only when the host is a
quarter of a second ahead of the device (`_epoch`). Everything random derives from the seed
and the step or epoch number (data order, augmentation, dropout), so a run is a function of
its settings, and `resume=True` continues one bit-for-bit from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from rich.markup import escape

from ..errors import ArgumentError, CnnError, DataError
from ..net import Net, load
from . import engine
from .checkpoint import checkpoint_info, restore_checkpoint, save_checkpoint, strict_json, write_atomic
from .config import TrainConfig, apply_overrides, settings_to_config
from .data import Dataset, augment, batches, check_labels, load_dataset, select_classes
from .distributed import AgreedStop, World
from .rundir import CHECKPOINTS, HISTORY, PLOT, SUMMARY, RunFolder
from .stop import StopRequest
from .transfer import TransferReport, freeze_mask, transfer
from .weights import check_finite, check_run_meta, open_checkpoint, spec_changes

EVAL_BATCH = 512
CHECK_EVERY_S = 1.0
# With several processes, how often (in steps) they agree on a signal, --max-time and the
# divergence check: a collective, and a host sync, so not every step.
AGREE_EVERY = 16  # how often the host reads the device's non-finite flag mid-epoch
PROGRESS_EVERY_S = 0.1  # how often the progress bar is redrawn (count, loss, img/s, ETA)
PROGRESS_MARK_S = 0.02  # how often the bar marks a step to count when the device finishes it
PROGRESS_AHEAD_S = 0.25  # with a bar, the host runs at most this far (in dispatch time) ahead of the device
# Training images up to this size (all device copies together, and at most a quarter of the
# device's memory) is put on the device once and each step gathers its batch there (`_Run.
# _resident`); larger ones, augmented ones and multi-process runs are fed batch by batch.
RESIDENT_BYTES = 2 << 30


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class TrainResult:
    """What a run produced. `variables` are the final weights (numpy, `{"params",
    "batch_stats", "fixed"}`); `test` is their test-split loss/accuracy/top-5 (None when the
    run stopped early or has no test split); `stopped` is "done", "max_time", "max_steps" or
    "interrupted" (then `signal` is the signal's number: SIGINT or SIGTERM)."""

    variables: dict[str, Any]
    history: list[dict[str, Any]]
    test: dict[str, float | None] | None
    out: Path
    config: TrainConfig
    dataset: Dataset
    stopped: str
    step: int
    epoch: int
    transfer: TransferReport | None
    summary: dict[str, Any]
    signal: int | None = None


class Diverged(CnnError):
    """The loss or the weights became NaN or infinite."""


def resolve_config(
    net: Net, overrides: Mapping[str, Any] | None = None, *, base: TrainConfig | None = None
) -> TrainConfig:
    """The net's `train { ... }` settings on top of `base` (default: the defaults), then
    `overrides` (`{"epochs": 3}` or CLI text `{"optimizer": "sgd(lr=0.1)"}`)."""
    try:
        cfg = settings_to_config(net.train_settings, base)
    except CnnError as e:
        raise e.with_source(net.ir.source) from None
    return apply_overrides(cfg, overrides or {})


def train(
    net: Net | str | Path,
    *,
    config: TrainConfig | None = None,
    overrides: Mapping[str, Any] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    max_time: float | None = None,
    max_steps: int | None = None,
    devices: int = 1,
    dataset: Dataset | None = None,
    progress: bool | None = None,
    quiet: bool = False,
    plot: bool = True,
    remat: bool = False,
    dtype: str = "float32",
    autotune: bool = False,
    allow_changed_spec: bool = False,
    console: Any = None,
    stop: StopRequest | None = None,
) -> TrainResult:
    """Train `net` (a `Net` or a `.cnn` path) as its `train` section says, with `overrides`.

    `config` replaces the file's settings; `dataset` replaces loading `config.data` (it is
    used as given, after `classes`). `max_time` (seconds since the call) and `max_steps`
    (total steps) stop cleanly after the current step and save a checkpoint that `resume`
    continues. `devices` > 1 trains data-parallel over the first `devices` devices.
    How to compute, not what (results agree within float tolerance): `remat` recomputes
    block activations in the backward pass instead of storing them (less memory),
    `dtype="bfloat16"` runs convolutions and dense layers in bfloat16 with float32
    accumulation, `autotune` times the network's lowering choices once at this batch size (cached).
    `resume` refuses a network that differs from the checkpoint's unless `allow_changed_spec`.
    SIGINT/SIGTERM stop the run after the current step (`stop`: a `StopRequest` the caller
    entered already, e.g. before importing JAX; by default one is entered here).
    """
    if max_steps is not None and max_steps < 1:
        raise ArgumentError(
            f"--max-steps {max_steps}: a run takes at least one step",
            hints=["give --max-steps 1 or more; to only check a spec, use `cnndsl compile`"],
        )
    options = RunOptions(
        out=Path(out) if out is not None else None,
        resume=resume,
        overwrite=overwrite,
        max_time=max_time,
        max_steps=max_steps,
        devices=devices,
        progress=progress,
        quiet=quiet,
        plot=plot,
        remat=remat,
        dtype=dtype,
        autotune=autotune,
        allow_changed_spec=allow_changed_spec,
    )
    net = net if isinstance(net, Net) else load(net)
    with contextlib.nullcontext(stop) if stop is not None else StopRequest() as request:
        run = _Run(net, config, dict(overrides or {}), dataset, options, console, request)
        try:
            return run.run()
        finally:
            run.folder.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """How to run, as opposed to what to train (`TrainConfig`): see `train`."""

    out: Path | None = None
    resume: bool = False
    overwrite: bool = False
    max_time: float | None = None
    max_steps: int | None = None
    devices: int = 1
    progress: bool | None = None
    quiet: bool = False
    plot: bool = True
    remat: bool = False
    dtype: str = "float32"
    autotune: bool = False
    allow_changed_spec: bool = False


class _Run:
    def __init__(
        self,
        net: Net,
        config: TrainConfig | None,
        overrides: dict[str, Any],
        dataset: Dataset | None,
        opts: RunOptions,
        console: Any,
        stop: StopRequest | None = None,
    ) -> None:
        from rich.console import Console

        self.t_start = time.monotonic()
        self.net = net
        self.world = World()  # with jax.distributed: process 0 alone writes, all decide together
        self.writer = self.world.writer
        self.console = console or Console(quiet=opts.quiet or not self.writer, highlight=False, soft_wrap=True)
        self.progress = self.console.is_terminal if opts.progress is None else opts.progress
        self.out = opts.out if opts.out is not None else Path("runs") / net.name
        self.ckdir = self.out / CHECKPOINTS
        self.max_time, self.max_steps, self.plot = opts.max_time, opts.max_steps, opts.plot
        self.overrides = overrides
        self.stop = stop if stop is not None else StopRequest()
        if self.world.multi:
            self.stop = AgreedStop(self.stop, self.world)
        self.folder = RunFolder(self.out)
        try:
            self._open(net, config, opts)
            self.placement = engine.Placement(opts.devices)
            if opts.dtype not in engine.DTYPES:
                raise ArgumentError(f"unknown dtype `{opts.dtype}`", hints=[f"use one of {', '.join(engine.DTYPES)}"])
            self.opts = opts
            # refuse a network too large for this machine before loading data or allocating
            slots = self.cfg.optimizer_slots()
            net.check_memory(batch=self.cfg.batch, train=True, optimizer_slots=slots, devices=self.placement.devices)
            self.ds = self._data(dataset)
        except BaseException:
            self.folder.close()
            raise

    def _open(self, net: Net, config: TrainConfig | None, opts: RunOptions) -> None:
        """Check and lock the run folder (before any data is read or anything compiled), and
        settle the configuration: the checkpoint's on `resume`, the file's otherwise."""
        self.removed: list[str] = []
        failed: CnnError | None = None
        if self.writer:
            try:
                self.removed = self.folder.open(fresh=not opts.resume, overwrite=opts.overwrite)
            except CnnError as e:
                failed = e
        if self.world.multi and self.world.any(failed is not None)[0] and failed is None:
            raise ArgumentError(
                f"process 0 could not open the run folder `{self.out}`; process {self.world.index} stops too",
                hints=["process 0's output says why"],
            )
        if failed is not None:
            raise failed
        # `--resume` of a run that was stopped before its first checkpoint starts it afresh.
        self.resume = opts.resume and self.folder.has_checkpoint()
        self.from_scratch = opts.resume and not self.resume
        if self.resume:
            info = _latest(self.ckdir)
            self.saved_meta = check_run_meta(info.meta, info.path, net)
            saved_n = self.saved_meta.get("processes", 1)
            if saved_n != self.world.count:
                raise ArgumentError(
                    f"`{self.out}` was trained by {saved_n} process{'es' * (saved_n != 1)}; "
                    f"this run has {self.world.count}",
                    notes=[
                        (
                            "a run resumes with the process count it was started with: it sets which rows of each"
                            " batch a process reads and how the device results add up"
                        ),
                    ],
                    hints=[f"resume with --num-processes {saved_n}" if saved_n > 1 else "resume in one process"],
                )
            saved = TrainConfig.from_dict(self.saved_meta["config"])
            self.spec_diff = spec_changes(self.saved_meta["spec"], net)
            if self.spec_diff and not opts.allow_changed_spec:
                raise ArgumentError(
                    f"`{net.ir.source.path}` is not the network that `{self.out}` was trained with",
                    notes=[f"changed since the checkpoint ({info.path}):", *self.spec_diff],
                    hints=[
                        "resume with the spec the run was trained with (the checkpoint keeps its text: meta.json `spec`)",
                        "or pass `--allow-changed-spec` to continue with this one where the weights still fit",
                        "or start a new run in another `--out` (`init = RUN` loads the layers that match)",
                    ],
                )
            self.cfg = apply_overrides(config or saved, self.overrides)
            self.changes = self.cfg.diff(saved)
        else:
            self.spec_diff = []
            self.cfg = apply_overrides(config if config is not None else resolve_config(net), self.overrides)
            self.changes = []

    # -- set-up -----------------------------------------------------------------------------
    def _at_setting(self, key: str, err: CnnError) -> CnnError:
        """Point a data/freeze/init error at its `train` setting when the file set it."""
        setting = next((s for s in self.net.train_settings if s.key == key), None)
        if err.span is None and setting is not None and key not in self.overrides and not self.resume:
            err.span = setting.span
            err.with_source(self.net.ir.source)
        return err

    def _data(self, dataset: Dataset | None) -> Dataset:
        cfg, net = self.cfg, self.net
        try:
            ds = (
                dataset
                if dataset is not None
                else load_dataset(
                    cfg.data,
                    net.input,
                    val_fraction=cfg.val,
                    seed=cfg.seed,
                    normalize=cfg.normalize,
                    grayscale=cfg.grayscale,
                    resize=cfg.resize,
                )
            )
        except DataError as e:
            raise self._at_setting("data", e) from None
        if cfg.classes is not None:
            try:
                ds = select_classes(ds, cfg.classes)
            except DataError as e:
                raise self._at_setting("classes", e) from None
        k = net.output.size
        for split, y in (("training", ds.y_train), ("validation", ds.y_val), ("test", ds.y_test)):
            try:
                check_labels(y, k, what=f"{split} labels")
            except DataError as e:
                raise self._at_setting("data", e) from None
        if ds.y_train.ndim == 2 and cfg.loss != "bce":
            raise ArgumentError(
                f"`{ds.source}` has multi-label targets, which need loss = bce (not {cfg.loss})",
                hints=["set `loss = bce` in the train section, or `--loss bce`"],
            )
        if (cfg.crop or cfg.flip) and ds.x_train.ndim != 4:
            raise ArgumentError(
                "augmentation (crop, flip) needs images, but the network's input is a flat vector",
                hints=["remove `augment`, or give the network an image input (`input D@WxH`)"],
            )
        return ds

    def _variables(self) -> dict[str, Any]:
        variables = self.net.init(jax.random.key(self.cfg.seed))
        self.report: TransferReport | None = None
        if self.cfg.init and not self.resume:
            try:
                source = open_checkpoint(self.cfg.init)
            except DataError as e:
                raise self._at_setting("init", e) from None
            if isinstance(source.tree, dict):
                check_finite(source.tree, source.path)
            variables, self.report = transfer(source.tree, variables)
            if not self.report.loaded:
                raise self._at_setting(
                    "init",
                    DataError(
                        f"`init`: no layer of `{self.cfg.init}` fits this network",
                        notes=self.report.render().splitlines()[1:7],
                        hints=["layers load by name and shape; give layers the same names (`as NAME`)"],
                    ),
                )
        return variables

    def _frozen(self, params: dict) -> Any:
        if not self.cfg.freeze:
            return jax.tree.map(lambda _: False, params)
        try:
            mask = freeze_mask(params, self.cfg.freeze)
        except CnnError as e:
            raise self._at_setting("freeze", e) from None
        if all(jax.tree.leaves(mask)):
            raise self._at_setting("freeze", ArgumentError("`freeze` freezes every parameter: nothing would train"))
        return mask

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg, ds, pl = self.cfg, self.ds, self.placement
        n_train = len(ds.x_train)
        self.batch = cfg.batch
        if self.batch > n_train:
            self.batch = max(pl.devices, n_train - n_train % pl.devices)
        if self.batch % pl.devices:
            raise ArgumentError(
                f"a batch of {self.batch} does not split evenly over {pl.devices} devices",
                hints=[
                    f"use a batch that {pl.devices} divides, e.g. {self.batch + pl.devices - self.batch % pl.devices}"
                ],
            )
        self.steps_per_epoch = n_train // self.batch
        self.task = engine.make_task(self.net.ir, cfg)
        variables = self._variables()
        if not variables.get("params"):
            raise ArgumentError(f"`{self.net.name}` has no trainable parameters")
        self.fixed = pl.state(variables.get("fixed", {}))
        frozen = self._frozen(variables["params"])
        tx, self.schedule = engine.make_optimizer(cfg, frozen, self.steps_per_epoch)
        state = engine.new_state(variables, tx)
        epoch, batch0, history = 0, 0, []
        if self.resume:
            ck = restore_checkpoint(self.ckdir, target=engine.to_host(state))
            check_finite(ck.tree, ck.path)
            state, epoch, batch0 = ck.tree, int(ck.meta["epoch"]), int(ck.meta["batch"])
            history = _recover_history(self.out / HISTORY, ck.meta, epoch)
        self.last_saved = (epoch * self.steps_per_epoch + batch0) if self.resume else None
        # Distinct host copies: init shares arrays between leaves (BN's zeros and ones), and
        # a donated buffer must appear once. `nonfinite` is the first step whose loss or
        # weights were not finite (0: none), kept on the device and read once a second.
        state = {**engine.to_host(state), "nonfinite": np.zeros((), np.int32)}
        self.state = pl.state(jax.tree.map(np.array, state))
        self.key = pl.state(jax.random.key(cfg.seed))
        o = self.opts
        lowering = self.net.autotune(self.batch // pl.devices, train=True) if o.autotune else None
        self.compute = engine.Compute(remat=o.remat, dtype=o.dtype, lowering=lowering)
        self.resident = self._resident()
        self.train_x: jax.Array | None = None  # resident: on the device from the first epoch
        step_fn = engine.make_train_step(self.net.ir, self.task, tx, frozen, pl, self.compute, resident=self.resident)
        self.eval_fn = engine.make_eval_step(self.net.ir, self.task, pl, self.compute)
        t = time.monotonic()
        if self.resident:
            specs = (
                jax.ShapeDtypeStruct(ds.x_train.shape, jnp.float32, sharding=pl.replicated),
                jax.ShapeDtypeStruct((self.batch,), jnp.int32, sharding=pl.batch),
                jax.ShapeDtypeStruct((self.batch, *ds.y_train.shape[1:]), ds.y_train.dtype, sharding=pl.batch),
            )
        else:
            specs = (
                jax.ShapeDtypeStruct((self.batch, *ds.x_train.shape[1:]), jnp.float32, sharding=pl.batch),
                jax.ShapeDtypeStruct((self.batch, *ds.y_train.shape[1:]), ds.y_train.dtype, sharding=pl.batch),
            )
        self.step_fn = step_fn.lower(self.state, self.key, self.fixed, *specs).compile()
        self.compile_s = time.monotonic() - t
        self._header(epoch, batch0)
        self.history = history
        self.stopped = "done"
        self.host_step = epoch * self.steps_per_epoch + batch0
        if self.writer:
            self.folder.record(HISTORY)
            _write_history(self.out / HISTORY, history)
        while epoch < cfg.epochs and self.stopped == "done":
            if self.stop:  # a signal between epochs (or during set-up): the last save stands
                self.stopped = "interrupted"
                break
            epoch = self._epoch(epoch, batch0)
            batch0 = 0
        return self._finish(epoch)

    def _resident(self) -> bool:
        """Whether the training set lives on the device (the step gathers its batches there):
        one process, no augmentation (drawn on the host), and the images, once per device,
        within RESIDENT_BYTES and a quarter of the memory available (the host's for CPU
        devices). The batches, and so the weights, are the same either way."""
        from ..passes.memory import memory_limit

        cfg, ds, pl = self.cfg, self.ds, self.placement
        if cfg.crop or cfg.flip or pl.processes > 1:
            return False
        need = ds.x_train.size * 4 * pl.devices
        device = pl.mesh.devices.flat[0]
        if device.platform == "cpu":
            limit = memory_limit()[0]
        else:
            limit = (device.memory_stats() or {}).get("bytes_limit")
        return need <= RESIDENT_BYTES and (limit is None or need <= limit // 4)

    def _header(self, epoch: int, batch0: int) -> None:
        net, cfg, ds, c = self.net, self.cfg, self.ds, self.console
        p = net.params
        c.print(
            f"[bold]{escape(net.name)}[/] · {escape(str(net.ir.source.path))}"
            f" · {p['total']:,} params ({p['trainable']:,} trainable)"
        )
        norm = ds.normalization
        stats = (
            f" (mean {', '.join(f'{m:.1f}' for m in norm.mean)}, std {', '.join(f'{s:.1f}' for s in norm.std)})"
            if norm.kind == "standardize"
            else ""
        )
        c.print(
            f"data     {ds.source}: train {len(ds.x_train):,}, val {len(ds.x_val):,}, test {len(ds.x_test):,}"
            f" · {ds.num_classes} classes · normalize {norm.kind}{stats} · augment {cfg.describe_augment()}",
            markup=False,
        )
        c.print(
            f"loss     {self.task.explain()}"
            + (f" · label smoothing {cfg.label_smoothing:g}" if cfg.label_smoothing else ""),
            markup=False,
        )
        dropped = len(ds.x_train) - self.steps_per_epoch * self.batch
        left = f", {dropped} example{'s' * (dropped != 1)} left out each epoch, a different few each time"
        c.print(
            f"optim    {cfg.describe_optimizer()} · {cfg.describe_schedule()} · batch {self.batch}"
            f" ({self.steps_per_epoch} step{'s' * (self.steps_per_epoch != 1)}/epoch{left if dropped else ''})"
            f" · {cfg.epochs} epoch{'s' * (cfg.epochs != 1)} · seed {cfg.seed}",
            markup=False,
        )
        if self.report is not None:
            c.print(f"init     {cfg.init}", markup=False)
            c.print(self.report.render(), markup=False)
        if cfg.freeze:
            c.print(f"freeze   {', '.join(cfg.freeze)}: no gradient, no optimizer state, inference mode", markup=False)
        c.print(
            f"devices  {self.placement.describe()} · {self.compute.describe()}"
            f" · train step compiled in {self.compile_s:.1f} s"
            + (" · the training set on the device, batches gathered there" if self.resident else ""),
            markup=False,
        )
        if self.removed:
            c.print(f"overwrite removed the previous run's {', '.join(self.removed)} from {self.out}", markup=False)
        if self.spec_diff:
            c.print("spec     changed since the checkpoint (--allow-changed-spec):", markup=False)
            for line in self.spec_diff:
                c.print(f"         {line}", markup=False)
        where = f"out      {self.out}"
        if self.from_scratch:
            where += " · resuming: nothing was saved yet, so the run starts from step 0"
        if self.resume:
            where += (
                f" · resuming after epoch {epoch}"
                + (f", batch {batch0}" if batch0 else "")
                + f" (step {epoch * self.steps_per_epoch + batch0})"
            )
            if self.changes:
                where += " · changed: " + ", ".join(self.changes)
        c.print(where, markup=False)

    def _epoch(self, epoch: int, batch0: int) -> int:
        """Train one epoch (from batch `batch0`), evaluate, log, checkpoint; the next epoch."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        cfg, ds, pl = self.cfg, self.ds, self.placement
        if batch0 == 0:
            self.state = {**self.state, "metrics": pl.state(jnp.zeros((len(engine.METRICS),), jnp.float32))}
        fill = ds.normalization.apply(np.zeros(ds.x_train.shape[-1], np.float32)) if cfg.crop else 0.0
        bar = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TextColumn("eta {task.fields[eta]}"),
            console=self.console,
            transient=True,
            auto_refresh=False,
            disable=not self.progress,
        )
        task = bar.add_task(
            "", total=self.steps_per_epoch, completed=batch0, epoch=f"{epoch + 1}/{cfg.epochs}", info="", eta="–"
        )
        t0 = last = checked = time.monotonic()
        if self.resident and self.train_x is None:  # once, and counted as training time
            self.train_x = pl.state(np.asarray(ds.x_train, np.float32))
        seen_at_last, done = 0, batch0
        # The bar counts the steps the device finished, not those the host dispatched (it runs
        # ahead, and used to sit at 0/42 until a sync): every PROGRESS_MARK_S the running
        # metrics are copied (5 floats the next step does not donate) and the copies polled with
        # `is_ready`, never waited for, except one dispatched over PROGRESS_AHEAD_S ago (the
        # device still has that much queued). Fast steps thus cost one clock read each, and
        # the bar is redrawn from this loop every PROGRESS_EVERY_S (no refresh thread).
        pending: deque[tuple[int, float, Any]] = deque()
        finished, latest, marked = batch0, None, -math.inf
        with bar:
            # With several processes each reads only its rows of every global batch.
            rows, n = pl.rows(self.batch), self.batch
            part = None if pl.processes == 1 else (rows, n)
            shard = None if part is None else rows
            # resident: the same batches' row numbers (the step gathers the images on the device)
            images = np.arange(len(ds.x_train), dtype=np.int32) if self.resident else ds.x_train
            it = batches(images, ds.y_train, n, seed=cfg.seed, epoch=epoch, drop_last=True, start=batch0, rows=shard)
            multi = self.world.multi
            for b, (xb, yb) in enumerate(it, start=batch0):
                if (b == batch0 or not multi) and self.stop:  # several processes: agreed below
                    self.stopped = "interrupted"
                    break
                if self.train_x is not None:  # xb: the batch's row numbers
                    xy = (self.train_x, *pl.put_batch(xb, yb))
                else:
                    if cfg.crop or cfg.flip:
                        rng = np.random.default_rng((cfg.seed, epoch, b))
                        xb = augment(xb, rng, crop=cfg.crop, flip=cfg.flip, fill=fill, part=part)
                    xy = pl.put_batch(xb, yb) if part is None else pl.put_local(n, xb, yb)  # this process's rows
                self.state = self.step_fn(self.state, self.key, self.fixed, *xy)
                self.host_step += 1
                done = b + 1
                now = time.monotonic()
                if self.progress:  # no host sync: see `pending` above
                    if now - marked >= PROGRESS_MARK_S:
                        pending.append((done, now, jnp.copy(self.state["metrics"])))
                        marked = now
                    while pending and (pending[0][2].is_ready() or now - pending[0][1] > PROGRESS_AHEAD_S):
                        finished, _, latest = pending.popleft()  # past PROGRESS_AHEAD_S: waits for that step
                    if latest is not None and now - last >= PROGRESS_EVERY_S:
                        m = engine.summarize(engine.to_host(latest))  # finished: a copy, not a wait
                        now = time.monotonic()
                        rate = (finished - batch0 - seen_at_last) * self.batch / (now - last)
                        seen_at_last, last, latest = finished - batch0, now, None
                        left = (self.steps_per_epoch - finished) * (now - t0) / max(finished - batch0, 1)
                        info = f"loss {m['loss']:.4f} · {rate:,.0f} img/s"
                        eta = f"{left:.1f} s" if left < 10 else f"{int(left) // 60}:{int(left) % 60:02d}"
                        bar.update(task, completed=finished, info=info, eta=eta)  # this epoch's rest
                        bar.refresh()  # drawn here, not by a refresh thread contending for the GIL
                due = now - checked >= CHECK_EVERY_S
                late = self.max_time is not None and now - self.t_start >= self.max_time
                if multi:  # agreed every AGREE_EVERY steps, the same on every process (clocks differ)
                    asked = self.stop.local if isinstance(self.stop, AgreedStop) else bool(self.stop)
                    agree = self.host_step % AGREE_EVERY == 0
                    signalled, due, late = self.world.any(asked, due, late) if agree else (False, False, False)
                    if signalled:
                        self.stopped = "interrupted"
                        break
                if due:
                    self._check_finite(epoch)
                    checked = now
                if self.max_steps is not None and self.host_step >= self.max_steps:
                    self.stopped = "max_steps"
                elif late:
                    self.stopped = "max_time"
                if self.stopped != "done":
                    break
        if self.stop:
            self.stopped = "interrupted"
        self._check_finite(epoch)
        train_m = engine.summarize(engine.to_host(self.state["metrics"]))
        train_s = time.monotonic() - t0
        trained = done == self.steps_per_epoch
        val = None
        if trained and not self.stop:
            val = self.evaluate(ds.x_val, ds.y_val)  # None when a signal came during it
        if val is None:
            val = {"loss": None, "acc": None, "top5": None}
            if self.stop:
                self.stopped = "interrupted"
        complete = trained and self.stopped != "interrupted"
        images = (done - batch0) * self.batch
        line = {
            "epoch": epoch + 1,
            "step": self.host_step,
            "complete": complete,
            "lr": float(self.schedule(max(self.host_step - 1, 0))),
            **{f"train_{k}": v for k, v in train_m.items()},
            **{f"val_{k}": v for k, v in val.items()},
            "time": round(train_s, 4),
            "images_per_s": round(images / train_s, 1) if train_s > 0 else None,
            "elapsed": round(time.monotonic() - self.t_start, 3),
        }
        if done == batch0 and not complete:  # stopped before its first step: nothing new to save
            return epoch
        self.history.append(line)
        self._print_epoch(line)
        next_epoch = epoch + 1 if complete else epoch
        self._save(next_epoch, 0 if complete else done, val["acc"] if complete else None, line)
        if self.writer:
            _append_history(self.out / HISTORY, line)
        return next_epoch

    def _check_finite(self, epoch: int) -> None:
        """Stop, saving nothing, once a step's loss or weights were NaN or infinite (one
        device read of the flag the step keeps; the weights it would save are not finite)."""
        bad = int(engine.to_host(self.state["nonfinite"]))
        if not bad:
            return
        spe = self.steps_per_epoch
        lr, peak = float(self.schedule(bad - 1)), float(self.cfg.opt_kwargs()["lr"])
        saved = (
            f"the last checkpoint, step {self.last_saved} in {self.ckdir}, has finite weights and stays as it was"
            if self.last_saved is not None
            else "nothing was saved: no checkpoint had been written yet"
        )
        raise Diverged(
            f"training diverged: the loss or the weights became NaN or infinite at step {bad}"
            f" (epoch {(bad - 1) // spe + 1}, batch {(bad - 1) % spe + 1} of {spe})",
            notes=[f"the learning rate at that step was {lr:g} ({self.cfg.describe_optimizer()})", saved],
            hints=[
                f"lower the learning rate (e.g. `--lr {peak / 10:g}`)",
                "or warm the rate up over the first steps (`--warmup 500`, `warmup = 500` in the train section)",
                "or standardise the inputs (`normalize = standardize`); large inputs make large gradients",
            ],
        )

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> dict[str, float | None] | None:
        """Loss, accuracy and top-5 of the current weights on `(x, y)`; None when a signal
        stopped it (between batches)."""
        variables = {"params": self.state["params"], "batch_stats": self.state["batch_stats"], "fixed": self.fixed}
        try:
            m, _ = evaluate_arrays(self.eval_fn, variables, x, y, self.placement, stop=self.stop)
        except _Stopped:
            return None
        return engine.summarize(m)

    def _print_epoch(self, h: dict[str, Any]) -> None:
        def pct(v: float | None) -> str:
            return "–" if v is None else f"{100 * v:.2f}%"

        def num(v: float | None) -> str:
            return "–" if v is None else f"{v:.4f}"

        text = (
            f"epoch {h['epoch']:>3}/{self.cfg.epochs}  loss {num(h['train_loss'])} acc {pct(h['train_acc'])}"
            f"  val loss {num(h['val_loss'])} acc {pct(h['val_acc'])}"
            + (f" top5 {pct(h['val_top5'])}" if h["val_top5"] is not None and self.task.num_outputs > 5 else "")
            + f"  lr {h['lr']:.3g}  {h['time']:.1f} s  {h['images_per_s'] or 0:,.0f} img/s"
        )
        if not h["complete"]:
            text += f"  (stopped after step {h['step']}: {self.stopped.replace('_', ' ')})"
        self.console.print(text)

    def _save(self, epoch: int, batch: int, metric: float | None, line: dict[str, Any]) -> None:
        """Checkpoint the state (never one with non-finite weights: the caller checked the
        flag) with this epoch's history line, so a crash before the line reaches
        history.jsonl loses nothing."""
        tree = engine.to_host({k: self.state[k] for k in ("params", "batch_stats", "opt_state", "step", "metrics")})
        if not self.writer:
            return
        meta = {
            "epoch": epoch,
            "batch": batch,
            "steps_per_epoch": self.steps_per_epoch,
            "config": self.cfg.to_dict(),
            "network": self.net.name,
            "spec": self.net.ir.source.text,
            "spec_path": self.net.ir.source.path,
            "input": str(self.net.input),
            "loss": self.cfg.loss,
            "class_names": list(self.ds.class_names),
            "num_classes": self.ds.num_classes,
            "data": self.ds.source,
            "normalization": self.ds.normalization.to_dict(),
            "val_acc": metric,
            "history": line,
            "processes": self.world.count,
        }
        self.folder.record(CHECKPOINTS)
        save_checkpoint(self.ckdir, tree, step=self.host_step, meta=meta, metric=metric)
        self.last_saved = self.host_step

    def _finish(self, epoch: int) -> TrainResult:
        c = self.console
        variables = engine.to_host(
            {"params": self.state["params"], "batch_stats": self.state["batch_stats"], "fixed": self.fixed}
        )
        test = None
        if self.stopped == "done" and len(self.ds.x_test):
            test = self.evaluate(self.ds.x_test, self.ds.y_test)
            if test is None:
                self.stopped = "interrupted"
        done = [h for h in self.history if h["complete"]]
        best = max((h for h in done if h["val_acc"] is not None), key=lambda h: h["val_acc"], default=None)
        train_s = sum(h["time"] for h in self.history)
        images = sum((h["images_per_s"] or 0) * h["time"] for h in self.history)
        summary = {
            "network": self.net.name,
            "spec": str(self.net.ir.source.path),
            "data": self.ds.source,
            "config": self.cfg.to_dict(),
            "devices": self.placement.devices,
            "epochs": epoch,
            "step": self.host_step,
            "stopped": self.stopped,
            "compile_s": round(self.compile_s, 3),
            "train_s": round(train_s, 3),
            "wall_s": round(time.monotonic() - self.t_start, 3),
            "images_per_s": round(images / train_s, 1) if train_s else None,
            "best": None if best is None else {"epoch": best["epoch"], "val_acc": best["val_acc"]},
            "final": done[-1] if done else None,
            "test": test,
        }
        if self.writer:
            self.folder.record(SUMMARY)
            write_atomic(self.out / SUMMARY, strict_json(summary, indent=1) + "\n")
            if self.plot and self.history:
                self.folder.record(PLOT)
                plot_history(self.history, self.out / PLOT, title=self.net.name)
        final = f"step {self.host_step}, after epoch {epoch}"
        if test is not None:
            top5 = f", top-5 {100 * test['top5']:.2f}%" if test["top5"] is not None else ""
            c.print(
                f"test     loss {test['loss']:.4f}, accuracy {100 * test['acc']:.2f}%{top5}"
                f" ({len(self.ds.x_test):,} examples; the final weights: {final})",
                markup=False,
            )
        if best is not None:
            same = best.get("step") == self.host_step
            c.print(
                f"best     epoch {best['epoch']}: val accuracy {100 * best['val_acc']:.2f}% → {self.ckdir / 'best'}"
                f" (step {best.get('step', '?')}"
                + (
                    ", the final weights too)"
                    if same
                    else "; `cnndsl eval` and `predict` use it by default, `--which latest` the final weights)"
                ),
                markup=False,
            )
        rate = f" · {summary['images_per_s']:,.0f} img/s" if summary["images_per_s"] else ""
        c.print(f"time     {summary['wall_s']:.1f} s in all, {train_s:.1f} s training{rate}")
        if self.stopped != "done":
            c.print(
                f"stopped  ({self.stopped.replace('_', ' ')}) after step {self.host_step}; saved → continue with --resume"
            )
        return TrainResult(
            variables=variables,
            history=self.history,
            test=test,
            out=self.out,
            config=self.cfg,
            dataset=self.ds,
            stopped=self.stopped,
            step=self.host_step,
            epoch=epoch,
            transfer=self.report,
            summary=summary,
            signal=self.stop.signum if self.stopped == "interrupted" else None,
        )


# --- evaluation over arrays ------------------------------------------------------------------
class _Stopped(Exception):
    """A signal stopped an evaluation between batches."""


def evaluate_arrays(
    eval_fn: Any,
    variables: dict,
    x: np.ndarray,
    y: np.ndarray,
    placement: engine.Placement,
    *,
    outputs: bool = False,
    stop: Any = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Summed metrics float[5] of `eval_fn` over `(x, y)` in fixed-size padded batches (one
    compilation), and the outputs (N, K) when `outputs`. A true `stop` (a `StopRequest`)
    between batches raises `_Stopped`."""
    if len(x) == 0:
        return np.zeros(len(engine.METRICS), np.float32), None
    size = EVAL_BATCH - EVAL_BATCH % placement.devices or placement.devices
    size = min(size, -(-len(x) // placement.devices) * placement.devices)
    totals, outs = [], []
    for i in range(0, len(x), size):
        if stop:
            raise _Stopped
        xb, yb = x[i : i + size], y[i : i + size]
        w = np.ones(len(xb), np.float32)
        if len(xb) < size:
            pad = size - len(xb)
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros((pad, *yb.shape[1:]), yb.dtype)])
            w = np.concatenate([w, np.zeros(pad, np.float32)])
        m, out = eval_fn(variables, *placement.put_batch(xb.astype(np.float32), yb, w))
        totals.append(m)
        if outputs:
            outs.append(out)
    total = engine.to_host(jnp.stack(totals).sum(0))
    if not outputs:
        return total, None
    return total, np.concatenate([np.asarray(o) for o in outs])[: len(x)]


# --- history ---------------------------------------------------------------------------------
def _latest(ckdir: Path) -> Any:
    try:
        return checkpoint_info(ckdir)
    except DataError as e:
        raise DataError(
            f"nothing to resume in `{ckdir.parent}`: {e.message}",
            hints=["start the run without `--resume`", "or give the run's folder with `--out`"],
        ) from None


def _read_history(path: Path) -> list[dict[str, Any]]:
    """The lines of history.jsonl. A torn last line (a crash while appending) is dropped;
    `_write_history` then repairs the file. A damaged line before it is a `DataError`."""
    if not path.is_file():
        return []
    lines = path.read_text(errors="replace").split("\n")
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            h = json.loads(line)
            problem = "" if isinstance(h, dict) and type(h.get("epoch")) is int else "not an epoch's record"
        except ValueError as e:
            problem = str(e)
        if problem:
            if all(not rest.strip() for rest in lines[n:]):  # the last line: torn by a crash
                break
            raise DataError(
                f"`{path}` is damaged at line {n}: {problem}",
                hints=["remove the line (the checkpoints hold the weights), then `--resume` again"],
            )
        out.append(h)
    return out


def _recover_history(path: Path, meta: dict[str, Any], epoch: int) -> list[dict[str, Any]]:
    """The complete epochs up to `epoch`, from history.jsonl and, for an epoch whose
    checkpoint was saved but whose line was not written, from the checkpoint itself."""
    history = [h for h in _read_history(path) if h.get("complete") and h["epoch"] <= epoch]
    line = meta.get("history")
    recovered = isinstance(line, dict) and line.get("complete") and line.get("epoch") == epoch
    if recovered and not any(h["epoch"] == epoch for h in history):
        history.append(line)
    return history


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    write_atomic(path, "".join(strict_json(h) + "\n" for h in history))


def _append_history(path: Path, line: dict[str, Any]) -> None:
    """Append one line; a crash mid-write leaves a torn last line, which `_read_history` drops."""
    with path.open("a") as f:
        f.write(strict_json(line) + "\n")


def best_epoch(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The complete epoch with the highest validation accuracy (the first of ties, as the
    `best` checkpoint keeps it), or None when no epoch has one."""
    done = [h for h in history if h.get("complete") and isinstance(h.get("val_acc"), (int, float))]
    return max(done, key=lambda h: h["val_acc"], default=None)


def plot_history(history: list[dict[str, Any]], path: Path, *, title: str = "") -> None:
    """Loss and accuracy curves (train and validation) per epoch, as a PNG (Agg backend); a
    dashed line and a star mark the best epoch (the `best` checkpoint)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    done = [h for h in history if h.get("complete")] or history
    ep = [h["epoch"] for h in done]
    best = best_epoch(done)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for ax, key, label in ((a, "loss", "loss"), (b, "acc", "accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            ys = [h.get(f"{split}_{key}") for h in done]
            if any(v is not None for v in ys):
                ax.plot(ep, [math.nan if v is None else v for v in ys], style, ms=3, label=split)
        if best is not None:  # the checkpoint `eval` and `predict` use by default
            tag = f"best: epoch {best['epoch']} (val {100 * best['val_acc']:.2f}%)"
            ax.axvline(best["epoch"], color="tab:green", ls="--", lw=1, label=tag if key == "acc" else None)
            if key == "acc":
                ax.plot([best["epoch"]], [best["val_acc"]], "*", color="tab:green", ms=12)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    a.set_yscale("log")
    if title:
        fig.suptitle(title)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-0")
    try:
        fig.savefig(tmp, dpi=100, format="png")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)


__all__ = ["RunOptions", "TrainResult", "evaluate_arrays", "plot_history", "resolve_config", "train"]
