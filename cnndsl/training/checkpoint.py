"""Checkpoints: a pytree of arrays plus JSON metadata, written atomically; `latest` and `best` kept.

A checkpoint folder ROOT holds

    ROOT/step-00001200/state.msgpack   the arrays (flax.serialization msgpack; never pickle)
    ROOT/step-00001200/meta.json       step, metric, sha256 of state.msgpack, caller's metadata
    ROOT/latest                        a text file naming the newest step folder
    ROOT/best                          a text file naming the step folder with the best metric

A step folder is written under a temporary name and renamed once complete, and the pointer
files are swapped with `os.replace`, so a crash at any moment leaves the previous checkpoint
readable. After each save, step folders that neither pointer names are deleted. One writer
per ROOT. `restore_checkpoint` accepts ROOT, ROOT/latest, ROOT/best or a step folder.

msgpack rather than orbax, measured on the 2-core dev machine: a LeNet-5 training state
(0.7 MB with Adam state) restores in about 1 ms here against 22-26 ms with orbax 0.12, and
saves in 2 ms plus fsyncs (30-50 ms in all on a busy VM disk) against 30-80 ms. At ResNet-18
size (140 MB) orbax's threaded writer saves about twice as fast (0.3-0.5 s against 0.6-1.2 s);
restores are comparable (0.1-0.5 s). Both are bit-exact. This module imports JAX;
`import cnndsl` does not import this module.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from .. import nested
from ..errors import DataError

FORMAT = "cnndsl-checkpoint"
VERSION = 1
STATE_FILE = "state.msgpack"
META_FILE = "meta.json"
POINTERS = ("latest", "best")
_STEP_DIR = re.compile(r"step-\d+(-\d+)?")
_INFO_KEYS = frozenset({"step", "metric", "mode", "best_metric", "sha256", "bytes", "keys", "meta"})
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

Which = Literal["latest", "best"]
Mode = Literal["max", "min"]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Checkpoint:
    """One restored checkpoint.

    `tree` is the saved pytree as nested dicts of read-only numpy arrays (PRNG key arrays
    come back as JAX key arrays), or `target`'s structure when one was given; None from
    `checkpoint_info`. `meta` is the caller's metadata exactly as saved. `best_metric` is the
    best metric of the run when this checkpoint was written (this one's included).
    """

    path: Path
    tree: Any
    meta: dict[str, Any]
    step: int
    metric: float | None
    mode: Mode
    best_metric: float | None


def save_checkpoint(
    root: str | os.PathLike[str],
    tree: Any,
    *,
    step: int,
    meta: dict[str, Any] | None = None,
    metric: float | None = None,
    mode: Mode = "max",
) -> Path:
    """Write `tree` (any pytree of arrays: variables, optimizer state, PRNG keys) as the
    latest checkpoint in `root`, and as the best one when `metric` beats the best so far
    (`mode="max"` for accuracy, `"min"` for a loss; NaN never wins). `meta` must be
    JSON-able. Returns the new step folder.

    Example: `save_checkpoint("runs/lenet/ckpt", {"variables": v, "opt_state": s, "key": k},
    step=1200, meta={"epoch": 3, "spec": text}, metric=val_acc)`.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    state, keys = _to_host(serialization.to_state_dict(tree), ())
    blob = serialization.msgpack_serialize(state)
    best = _current_best(root)
    metric = None if metric is None or not math.isfinite(metric) else float(metric)
    is_best = metric is not None and (best is None or (metric > best if mode == "max" else metric < best))
    if is_best and metric is not None:
        best = float(metric)
    info = {
        "format": FORMAT,
        "version": VERSION,
        "step": int(step),
        "metric": metric,
        "mode": mode,
        "best_metric": best,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
        "keys": keys,
        "meta": meta or {},
    }
    try:
        text = strict_json(info, indent=1)
    except (TypeError, ValueError) as e:
        raise TypeError(f"checkpoint metadata must be JSON-able: {e}") from e

    tmp = root / f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        tmp.mkdir()
        try:
            _write(tmp / STATE_FILE, blob)
            _write(tmp / META_FILE, text.encode())
            _fsync_dir(tmp)
            final = _fresh_name(root, int(step))
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(root)
        _point(root, "latest", final.name)
        if is_best:
            _point(root, "best", final.name)
        _fsync_dir(root)
    except OSError as e:
        if e.errno in _DISK_FULL:
            raise DataError(
                f"disk full while saving step {int(step)}; the previous checkpoint is intact",
                notes=[f"in `{root}`: {e.strerror or e}"],
                hints=["free some space, then continue the run with `--resume`"],
            ) from None
        raise
    _collect(root, keep={final.name, _pointer(root, "best") or ""})
    return final


def strict_json(value: Any, **kwargs: Any) -> str:
    """`json.dumps` that writes only strict JSON: NaN and infinities become null (a diverged
    loss, an empty split), numpy scalars become numbers; anything else un-JSON-able raises."""
    return json.dumps(_finite(value), allow_nan=False, **kwargs)


def _finite(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Replace `path` by `data` all at once (temp file in the same folder, fsync,
    `os.replace`): a crash leaves the old file or the new one, never a mix. A full disk is a
    `DataError` and the old file stays."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        try:
            _write(tmp, data.encode() if isinstance(data, str) else data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
    except OSError as e:
        if e.errno in _DISK_FULL:
            raise DataError(
                f"disk full while writing `{path}`; its previous contents are intact",
                hints=["free some space, then continue the run with `--resume`"],
            ) from None
        raise


def restore_checkpoint(path: str | os.PathLike[str], *, which: Which = "latest", target: Any = None) -> Checkpoint:
    """Read the checkpoint at `path` (ROOT, ROOT/latest, ROOT/best or a step folder; for ROOT,
    `which` picks the pointer). The arrays are exactly the saved ones, bit for bit.

    With `target` (a pytree like the saved one, e.g. freshly initialised state) the result
    has `target`'s structure (tuples, optax NamedTuples) and every array's shape and dtype
    are checked against it first. A missing, damaged or mismatched checkpoint raises
    `DataError`.
    """
    folder = _resolve(Path(path), which)
    info = _read_info(folder)
    try:
        blob = (folder / STATE_FILE).read_bytes()
    except OSError as e:
        raise DataError(f"the checkpoint `{folder}` is damaged: cannot read {STATE_FILE}: {e}") from e
    if hashlib.sha256(blob).hexdigest() != info["sha256"]:
        raise DataError(
            f"the checkpoint `{folder}` is damaged: {STATE_FILE} does not match its checksum",
            notes=[f"{META_FILE} records {info['bytes']} bytes, the file has {len(blob)}"],
        )
    try:
        state = serialization.msgpack_restore(blob)
    except Exception as e:  # msgpack raises several unrelated types for bad input
        raise DataError(f"the checkpoint `{folder}` is damaged: {e}") from e
    try:
        state = _wrap_keys(state, info["keys"])
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"the checkpoint `{folder}` is damaged: {META_FILE} `keys` names {e}, not in the arrays") from e
    tree = state if target is None else _into(target, state, folder)
    return _checkpoint(folder, info, tree)


def checkpoint_info(path: str | os.PathLike[str], *, which: Which = "latest") -> Checkpoint:
    """The metadata of a checkpoint without reading its arrays (`tree` is None)."""
    folder = _resolve(Path(path), which)
    return _checkpoint(folder, _read_info(folder), None)


# --- pytree conversion -----------------------------------------------------------------------
def _to_host(node: Any, path: tuple[str, ...]) -> tuple[Any, dict[str, str]]:
    """Nested dicts of host numpy arrays, and `{dotted path: impl}` for each PRNG key array
    (stored as its raw key data)."""
    if isinstance(node, dict):
        out: dict[Any, Any] = {}
        keys: dict[str, str] = {}
        for k, v in node.items():
            out[k], sub = _to_host(v, (*path, str(k)))
            keys |= sub
        return out, keys
    if isinstance(node, jax.Array) and jnp.issubdtype(node.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(node)), {".".join(path): str(jax.random.key_impl(node))}
    if isinstance(node, jax.Array):
        return np.asarray(node), {}
    if node is None or isinstance(node, (np.ndarray, np.generic, bool, int, float, str)):
        return node, {}
    raise TypeError(f"cannot checkpoint {type(node).__name__} at `{'.'.join(path)}`: only arrays")


def _wrap_keys(state: dict[str, Any], keys: dict[str, str]) -> dict[str, Any]:
    for dotted, impl in keys.items():
        *parents, last = nested.path_of(dotted)
        node = nested.at(state, tuple(parents))
        node[last] = jax.random.wrap_key_data(node[last], impl=impl)
    return state


def _flatten(node: Any, path: tuple[str, ...] = ()) -> dict[str, Any]:
    if isinstance(node, dict):
        return {k: v for key, sub in node.items() for k, v in _flatten(sub, (*path, str(key))).items()}
    return {".".join(path): node}


def _signature(leaf: Any) -> str:
    """`float32[5,5,1,6]`, for comparing a saved leaf with the target's."""
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        return type(leaf).__name__
    return f"{dtype}[{','.join(map(str, np.shape(leaf)))}]"


def _into(target: Any, state: dict[str, Any], folder: Path) -> Any:
    """`state` restored into `target`'s pytree structure, after checking every leaf."""
    want = _flatten(serialization.to_state_dict(target))
    have = _flatten(state)
    problems = [f"`{k}` is missing from the checkpoint" for k in want if k not in have]
    problems += [f"`{k}` is in the checkpoint but not here" for k in have if k not in want]
    problems += [
        f"`{k}` is {_signature(have[k])} in the checkpoint, {_signature(v)} here"
        for k, v in want.items()
        if k in have and _signature(have[k]) != _signature(v)
    ]
    if problems:
        raise DataError(
            f"the checkpoint `{folder}` does not fit this network",
            notes=problems[:6] + ([f"and {len(problems) - 6} more differences"] if len(problems) > 6 else []),
            hints=["it was saved from a different spec; load the layers that match with `transfer`"],
        )
    return serialization.from_state_dict(target, state)


# --- files -----------------------------------------------------------------------------------
def _checkpoint(folder: Path, info: dict[str, Any], tree: Any) -> Checkpoint:
    return Checkpoint(
        path=folder,
        tree=tree,
        meta=info["meta"],
        step=info["step"],
        metric=info["metric"],
        mode=info["mode"],
        best_metric=info["best_metric"],
    )


def _resolve(path: Path, which: Which) -> Path:
    """The step folder that `path` means."""
    if which not in POINTERS:
        raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
    if path.is_file() and path.name in (STATE_FILE, META_FILE):
        path = path.parent
    if path.is_dir() and (path / META_FILE).is_file():
        return path
    pointer: str = which
    if path.is_file() and path.name in POINTERS:
        root, pointer = path.parent, path.name
    elif path.is_dir():
        root = path
    else:
        raise DataError(f"no checkpoint `{path}`", notes=[f"looked for `{path.absolute()}`"])
    name = _pointer(root, pointer)
    if name is None:
        if pointer == "best" and _pointer(root, "latest") is not None:
            raise DataError(
                f"`{root}` has no best checkpoint: no validation metric was saved with one",
                hints=[f"use the latest, `{root / 'latest'}`"],
            )
        raise DataError(
            f"no checkpoint in `{root}`",
            notes=[f"looked for `{root / pointer}` and `{root / META_FILE}`"],
        )
    folder = root / name
    if not _STEP_DIR.fullmatch(name) or not folder.is_dir():
        raise DataError(f"the checkpoint `{root}` is damaged: `{pointer}` names `{name}`, which is missing")
    return folder


def _read_info(folder: Path) -> dict[str, Any]:
    try:
        info = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"the checkpoint `{folder}` is damaged: cannot read {META_FILE}: {e}") from e
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DataError(f"`{folder}` is not a cnndsl checkpoint", notes=[f"its {META_FILE} lacks the format marker"])
    if info.get("version") != VERSION:
        raise DataError(
            f"the checkpoint `{folder}` has format version {info.get('version')}; this cnndsl reads version {VERSION}"
        )
    missing = sorted(_INFO_KEYS - info.keys())
    if missing:
        raise DataError(f"the checkpoint `{folder}` is damaged: {META_FILE} lacks {', '.join(missing)}")
    extra = sorted(info.keys() - _INFO_KEYS - {"format", "version"})
    if extra:
        raise DataError(
            f"the checkpoint `{folder}` is damaged: {META_FILE} has unexpected keys {', '.join(map(repr, extra))}"
        )
    for key, ok, want in _INFO_TYPES:
        if not ok(info[key]):
            raise DataError(
                f"the checkpoint `{folder / META_FILE}` is damaged: `{key}` should be {want},"
                f" not {json.dumps(info[key])[:60]}"
            )
    return info


def _number(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


_INFO_TYPES: tuple[tuple[str, Any, str], ...] = (
    ("step", _count, "a whole number >= 0"),
    ("metric", _number, "a number or null"),
    ("mode", lambda v: v in ("max", "min"), '"max" or "min"'),
    ("best_metric", _number, "a number or null"),
    ("sha256", lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None, "a sha256 hex digest"),
    ("bytes", _count, "a whole number >= 0"),
    ("keys", lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()), "an object of strings"),
    ("meta", lambda v: isinstance(v, dict), "an object"),
)


def _current_best(root: Path) -> float | None:
    """The best metric saved in `root` so far (None if none, or if `best` is unreadable)."""
    name = _pointer(root, "best")
    if name is None:
        return None
    try:
        value = json.loads((root / name / META_FILE).read_text())["metric"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None if value is None else float(value)


def _pointer(root: Path, which: str) -> str | None:
    try:
        return (root / which).read_text().strip() or None
    except OSError:
        return None


def _point(root: Path, which: str, name: str) -> None:
    tmp = root / f".{which}.{secrets.token_hex(4)}"
    _write(tmp, (name + "\n").encode())
    os.replace(tmp, root / which)


def _fresh_name(root: Path, step: int) -> Path:
    path = root / f"step-{step:08d}"
    k = 1
    while path.exists():
        path = root / f"step-{step:08d}-{k}"
        k += 1
    return path


def _collect(root: Path, keep: set[str]) -> None:
    """Delete step folders that no pointer names, and leftovers of interrupted saves."""
    for p in root.iterdir():
        if p.name.startswith(".tmp-") or (_STEP_DIR.fullmatch(p.name) and p.name not in keep):
            shutil.rmtree(p, ignore_errors=True)


def _write(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (POSIX only; elsewhere a no-op)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
