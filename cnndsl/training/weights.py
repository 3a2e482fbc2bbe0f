"""Finding and loading trained weights: a run folder, a checkpoint folder or a step folder.

    variables, meta = load_weights(net, "runs/LeNet5")     # best if there is one, else latest
    meta["class_names"], meta["normalization"]

`meta` is what `cnndsl train` saved with the checkpoint (config, normalisation, class names,
the spec text, ...), plus `checkpoint` (the step folder read) and `step`. Loading checks
what a damaged or foreign checkpoint could get wrong: the metadata's keys and types, the
normalisation (std > 0, one entry per channel), that every weight is finite, and that the
network is the one the weights were trained with (`spec_changes`).
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArgumentError, CnnError, DataError
from ..net import Net, loads
from .checkpoint import META_FILE, Checkpoint, restore_checkpoint
from .transfer import transfer


def checkpoint_root(path: str | Path) -> Path:
    """`RUN` -> `RUN/checkpoints` when it is a training run's folder; else `path` itself."""
    p = Path(path)
    return p / "checkpoints" if (p / "checkpoints").is_dir() else p


def open_checkpoint(path: str | Path, which: str | None = None) -> Checkpoint:
    """Restore a checkpoint (every array). `which=None` takes `best` when the run has one,
    else `latest`; a pointer or step folder path is taken as it is."""
    root = checkpoint_root(path)
    if which is None:
        which = "best" if (root / "best").is_file() else "latest"
    return restore_checkpoint(root, which=which)  # type: ignore[arg-type]


def load_weights(
    net: Net, path: str | Path, which: str | None = None, *, key: Any = None, allow_changed_spec: bool = False
) -> tuple[dict, dict]:
    """`(variables, meta)` for `net` from the checkpoint at `path`; every layer must match
    by name and shape (a `DataError` lists the differences otherwise), every weight must be
    finite, and `net` must be the network the weights were trained with, unless
    `allow_changed_spec` (then the differences are in `meta["spec_changes"]`)."""
    import jax

    ck = open_checkpoint(path, which)
    if not isinstance(ck.tree, dict) or "params" not in ck.tree:
        raise DataError(f"`{ck.path}` holds no network weights (no `params`)")
    meta = check_run_meta(ck.meta, ck.path, net, resume=False)
    check_finite(ck.tree, ck.path)
    fresh = net.init(jax.random.key(0) if key is None else key)
    variables, report = transfer(ck.tree, fresh)
    problems = [
        f"{m.layer}: {m.status}" + (f" ({m.detail()})" if m.status == "shape mismatch" else "")
        for m in report.layers
        if m.status != "loaded"
    ]
    if problems:
        spec = ck.meta.get("spec_path") or "another spec"
        raise DataError(
            f"the weights in `{ck.path}` do not fit `{net.name}`",
            notes=problems[:6]
            + ([f"and {len(problems) - 6} more"] if len(problems) > 6 else [])
            + [f"they were trained for `{spec}`"],
            hints=[
                "use the spec the weights were trained with",
                "to reuse some layers in a new spec, train it with `init=`",
            ],
        )
    # The weights fit; is it the network they were trained with (relu edited to tanh fits too)?
    changes = spec_changes(meta["spec"], net) if isinstance(meta.get("spec"), str) else []
    if changes and not allow_changed_spec:
        raise ArgumentError(
            f"`{net.ir.source.path}` is not the network that the weights in `{ck.path}` were trained with",
            notes=["changed since training:", *changes],
            hints=[
                "use the spec the weights were trained with (the checkpoint keeps its text: meta.json `spec`)",
                "or pass `--allow-changed-spec` to use these weights with this spec (they fit)",
            ],
        )
    return variables, {**meta, "checkpoint": str(ck.path), "step": ck.step, "spec_changes": changes}


def check_finite(tree: dict, where: str | Path) -> None:
    """A `DataError` naming the arrays that hold NaN or infinite values (a diverged run)."""
    bad = []
    for collection in ("params", "batch_stats"):
        for name, a in _leaves(tree.get(collection) or {}):
            arr = np.asarray(a)
            if arr.dtype.kind == "f" or arr.dtype.name == "bfloat16":
                n = int(arr.size - np.count_nonzero(np.isfinite(arr.astype(np.float32))))
                if n:
                    bad.append(f"`{collection}.{name}` has {n:,} of {arr.size:,} values NaN or infinite")
    if bad:
        raise DataError(
            f"the weights in `{where}` are not finite: the run that saved them diverged",
            notes=bad[:6] + ([f"and {len(bad) - 6} more arrays"] if len(bad) > 6 else []),
            hints=["train again with a lower learning rate or a warm-up; these weights cannot predict"],
        )


def _leaves(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [kv for k, v in node.items() for kv in _leaves(v, f"{path}.{k}" if path else str(k))]
    return [(path, node)]


# --- the metadata `cnndsl train` saves -------------------------------------------------------
def check_run_meta(meta: dict[str, Any], folder: str | Path, net: Net, *, resume: bool = True) -> dict[str, Any]:
    """`meta` after checking each key it has (and, to `resume`, that it has all of them):
    a damaged file is a `DataError` naming the file and the key, never a KeyError later."""
    where = Path(folder) / META_FILE
    required = ("epoch", "batch", "steps_per_epoch", "config", "spec") if resume else ()

    def fail(key: str, problem: str) -> DataError:
        return DataError(
            f"the checkpoint `{where}` is damaged: `meta.{key}` {problem}",
            hints=["use another checkpoint of the run (`--which`), or train again"],
        )

    for key in required:
        if key not in meta:
            raise fail(key, "is missing")
    for key, (check, want) in _META_CHECKS.items():
        if key in meta and not check(meta[key]):
            raise fail(key, f"should be {want}, not {_show(meta[key])}")
    if "config" in meta:
        _check_config(meta["config"], fail)
    if resume and meta["batch"] > meta["steps_per_epoch"]:
        raise fail("batch", f"is {meta['batch']}, past the epoch's {meta['steps_per_epoch']} steps")
    if isinstance(meta.get("normalization"), dict):
        _check_normalization(meta["normalization"], net, fail)
    return meta


def _check_config(cfg: dict[str, Any], fail: Any) -> None:
    """Each saved setting has its default's JSON type (a float may be written as an int)."""
    import dataclasses

    from .config import TrainConfig

    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name not in cfg:
            continue
        v, d = cfg[f.name], getattr(defaults, f.name)
        if d is None:
            ok = v is None or isinstance(v, (str, int, float, list)) and not isinstance(v, bool)
        elif isinstance(d, bool):
            ok = isinstance(v, bool)
        elif isinstance(d, int):
            ok = type(v) is int
        elif isinstance(d, float):
            ok = _real(v)
        elif isinstance(d, str):
            ok = isinstance(v, str)
        else:  # tuples: lists, or objects for the keyword arguments
            ok = isinstance(v, (list, dict))
        if not ok:
            raise fail(f"config.{f.name}", f"is not a training configuration value: {_show(v)}")
    try:
        TrainConfig.from_dict(cfg)
    except (TypeError, ValueError, CnnError) as e:
        raise fail("config", f"is not a training configuration ({e})") from None


def _check_normalization(norm: dict[str, Any], net: Net, fail: Any) -> None:
    if set(norm) != {"kind", "mean", "std"}:
        raise fail("normalization", f"should have kind, mean and std, not {', '.join(sorted(norm)) or 'nothing'}")
    if norm["kind"] not in ("none", "0-1", "standardize"):
        raise fail("normalization.kind", f"should be none, 0-1 or standardize, not {_show(norm['kind'])}")
    for key in ("mean", "std"):
        v = norm[key]
        if not isinstance(v, list) or not v or not all(_real(x) for x in v):
            raise fail(f"normalization.{key}", f"should be a list of finite numbers, not {_show(v)}")
    if any(x <= 0 for x in norm["std"]):
        raise fail("normalization.std", f"must be above 0 (it divides the pixels), not {_show(norm['std'])}")
    n, shape = len(norm["mean"]), net.input
    fits = n == len(norm["std"]) and (n in (1, shape.depth) or (shape.is_flat and shape.size % n == 0))
    if not fits:
        raise fail(
            "normalization",
            f"has {n} means and {len(norm['std'])} stds, but `{net.name}` takes {shape.depth} channels ({shape})",
        )


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _count(v: Any) -> bool:
    return type(v) is int and v >= 0


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


_META_CHECKS: dict[str, tuple[Any, str]] = {
    "epoch": (_count, "a whole number >= 0"),
    "batch": (_count, "a whole number >= 0"),
    "steps_per_epoch": (lambda v: _count(v) and v > 0, "a whole number > 0"),
    "config": (lambda v: isinstance(v, dict), "an object"),
    "spec": (lambda v: isinstance(v, str), "the spec's text"),
    "normalization": (lambda v: isinstance(v, dict), "an object with kind, mean and std"),
    "class_names": (lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v), "a list of names"),
    "num_classes": (lambda v: _count(v) and v > 0, "a whole number > 0"),
    "data": (lambda v: isinstance(v, str), "the data's name or path"),
    "val_acc": (lambda v: v is None or _real(v), "a number or null"),
    "history": (lambda v: isinstance(v, dict), "an epoch's history line"),
}


# --- has the network changed? ------------------------------------------------------------------
def spec_changes(saved_text: str, net: Net) -> list[str]:
    """What differs between the network compiled from `saved_text` (the spec a checkpoint
    was trained with) and `net`, as diff lines (`- conv1: conv 6@5x5 -> 6@28x28`), at most
    about 12; empty when they are the same network. The `train { ... }` section, comments
    and layout do not count."""
    if saved_text == net.ir.source.text:
        return []
    try:
        saved = loads(saved_text, "<checkpoint spec>")
    except CnnError as e:
        return [f"the checkpoint's spec no longer compiles: {e.message}"]
    old, new = _describe(saved), _describe(net)
    if old == new:
        return []
    lines = [
        line
        for line in difflib.unified_diff(old, new, "checkpoint", "now", n=0, lineterm="")
        if line[:1] in "+-" and not line.startswith(("---", "+++"))
    ]
    return lines[:12] + ([f"... and {len(lines) - 12} more lines"] if len(lines) > 12 else [])


def _describe(net: Net) -> list[str]:
    """One line per layer: name, op with its arguments, input and output shapes."""
    head = [f"network {net.name}: input {net.input}, output {net.output}"]
    return head + [
        f"{layer.name}: {layer.op} {_args(layer)} ({layer.x} -> {layer.y})".replace("  ", " ") for layer in net.layers()
    ]


def _args(layer: Any) -> str:
    text = " ".join(str(layer.text).split())
    return text.split(" ", 1)[1] if text.startswith(layer.op + " ") else ("" if text == layer.op else text)
