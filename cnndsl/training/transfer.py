"""Transfer learning: copy weights by layer name between networks, and freeze layers.

Variables are nested dicts `{"params": {...}, "batch_stats": {...}}` whose innermost dicts
are layers: `{"kernel": (5, 5, 1, 6), "bias": (6,)}`. A layer is named by its dotted path
inside the collection (`stage2.block1.conv1`), the same in every collection, so a batch-norm
layer's `scale`, `bias` (params) and `mean`, `var` (batch_stats) travel together.

    variables, report = transfer(restore_checkpoint(ckpt).tree["variables"], variables)
    print(report)            # what was loaded, what was skipped and why
    mask = freeze_mask(variables["params"], ["conv*", "stage1"])

Works on numpy and JAX arrays alike; JAX is never imported here.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .. import nested
from ..errors import CnnNameError, did_you_mean

Status = Literal["loaded", "shape mismatch", "missing in source", "extra in source", "excluded"]
DEFAULT_COLLECTIONS = ("params", "batch_stats")
_ROOT = "(top level)"


@dataclass(frozen=True, slots=True)
class ArrayMatch:
    """One array of a layer: its name (`kernel`, or `batch_stats.mean` outside params) and
    its shape in the source and here (None where it does not exist)."""

    name: str
    source: tuple[int, ...] | None
    here: tuple[int, ...] | None
    cast: str = ""  # `float32 -> bfloat16` when loading changed the dtype


@dataclass(frozen=True, slots=True)
class LayerMatch:
    """The outcome for one layer."""

    layer: str
    status: Status
    arrays: tuple[ArrayMatch, ...]

    @property
    def size(self) -> int:
        """Values in this layer's arrays (here, or in the source for an extra layer)."""
        return sum(math.prod(a.here if a.here is not None else a.source or ()) for a in self.arrays)

    def detail(self) -> str:
        if self.status == "shape mismatch":
            return "; ".join(
                f"{a.name}: source {_fmt(a.source)}, here {_fmt(a.here)}" for a in self.arrays if a.source != a.here
            )
        side = "source" if self.status == "extra in source" else "here"
        text = ", ".join(f"{a.name} {_fmt(getattr(a, side))}" for a in self.arrays)
        casts = [f"{a.name} {a.cast}" for a in self.arrays if a.cast]
        return text + (f" (cast {', '.join(casts)})" if casts else "")


@dataclass(frozen=True, slots=True)
class TransferReport:
    """What `transfer` did, layer by layer, in the destination's order (source-only layers
    last). `str(report)` renders it as a table."""

    layers: tuple[LayerMatch, ...]
    source_collections: tuple[str, ...]

    def names(self, status: Status) -> list[str]:
        return [m.layer for m in self.layers if m.status == status]

    @property
    def loaded(self) -> list[str]:
        return self.names("loaded")

    @property
    def mismatched(self) -> list[LayerMatch]:
        """Layers in both networks whose arrays differ in shape (or in which arrays exist)."""
        return [m for m in self.layers if m.status == "shape mismatch"]

    @property
    def missing(self) -> list[str]:
        """Layers here with no counterpart in the source: they keep their initial values."""
        return self.names("missing in source")

    @property
    def extra(self) -> list[str]:
        """Source layers with no counterpart here: ignored."""
        return self.names("extra in source")

    @property
    def excluded(self) -> list[str]:
        return self.names("excluded")

    @property
    def skipped(self) -> list[LayerMatch]:
        """Layers here that keep their initial values, for any reason."""
        return [m for m in self.layers if m.status in ("shape mismatch", "missing in source", "excluded")]

    def render(self) -> str:
        here = [m for m in self.layers if m.status != "extra in source"]
        loaded = [m for m in here if m.status == "loaded"]
        total = sum(m.size for m in here)
        head = (
            f"transfer: loaded {len(loaded)} of {len(here)} layers "
            f"({sum(m.size for m in loaded):,} of {total:,} values)"
        )
        extra = len(self.layers) - len(here)
        head += f"; {len(here) - len(loaded)} kept their initial values" if len(loaded) < len(here) else ""
        head += f"; {extra} source layer{'s' * (extra != 1)} unused" if extra else ""
        rows = [("layer", "status", "arrays")] + [(m.layer, m.status, m.detail()) for m in self.layers]
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        lines = [head] + [f"  {a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows]
        if not loaded and here:
            have = ", ".join(f"`{c}`" for c in self.source_collections) or "nothing"
            lines.append(f"  = nothing was loaded; the source holds {have}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


def transfer(
    src: dict[str, Any],
    dst: dict[str, Any],
    *,
    collections: Sequence[str] = DEFAULT_COLLECTIONS,
    exclude: Sequence[str] = (),
) -> tuple[dict[str, Any], TransferReport]:
    """Copy each layer of `dst` whose full path exists in `src` with the same arrays of the
    same shapes; return the new variables (`dst` is not modified) and a report.

    A layer loads whole or not at all. Only `collections` are matched (other collections,
    such as constant `fixed` kernels, are kept from `dst`); layers matching an `exclude`
    pattern (as in `freeze_mask`) keep their values too. An array whose dtype differs is cast
    to `dst`'s dtype.
    """
    src_layers = _layers(src, collections)
    dst_layers = _layers(dst, collections)
    excluded = _matching(dst_layers, exclude, what="exclude") if exclude else set()
    out = _copy_dicts(dst)
    matches: list[LayerMatch] = []
    for layer, arrays in dst_layers.items():
        theirs = src_layers.get(layer)
        if layer in excluded or theirs is None:
            status: Status = "excluded" if layer in excluded else "missing in source"
            matches.append(LayerMatch(layer, status, tuple(_array(k, None, v) for k, v in arrays.items())))
            continue
        names = list(arrays) + [k for k in theirs if k not in arrays]
        pairs = tuple(_array(k, theirs.get(k), arrays.get(k)) for k in names)
        if any(a.source != a.here for a in pairs):
            matches.append(LayerMatch(layer, "shape mismatch", pairs))
            continue
        for (coll, name), value in theirs.items():
            mine = arrays[coll, name]
            same = getattr(value, "dtype", None) == getattr(mine, "dtype", None)
            (out[coll] if layer == _ROOT else nested.at(out[coll], layer))[name] = (
                value if same else value.astype(mine.dtype)
            )
        casts = tuple(_array(k, theirs[k], arrays[k], cast=_cast(theirs[k], arrays[k])) for k in arrays)
        matches.append(LayerMatch(layer, "loaded", casts))
    for layer, arrays in src_layers.items():
        if layer not in dst_layers:
            matches.append(LayerMatch(layer, "extra in source", tuple(_array(k, v, None) for k, v in arrays.items())))
    return out, TransferReport(tuple(matches), tuple(str(k) for k in src))


def freeze_mask(params: dict[str, Any], patterns: Iterable[str]) -> dict[str, Any]:
    """A pytree like `params` with True for every array to freeze, False elsewhere.

    A pattern is a layer name or a glob over dotted paths (`conv1`, `conv*`, `stage1.*`);
    naming a layer freezes everything inside it (`stage1` freezes `stage1.block1.conv1`),
    and `conv1.bias` names a single array. A pattern that matches nothing is an error.
    Use the mask with optax, e.g.
    `optax.multi_transform({False: opt, True: optax.set_to_zero()}, mask)`.
    """
    leaves = _leaf_paths(params)
    frozen = _matching({".".join(p): None for p in leaves}, patterns, what="freeze")

    def build(node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            return {k: build(v, (*path, str(k))) for k, v in node.items()}
        return ".".join(path) in frozen

    return build(params, ())


# --- helpers ---------------------------------------------------------------------------------
Key = tuple[str, str]  # (collection, array name)


def _layers(variables: dict[str, Any], collections: Sequence[str]) -> dict[str, dict[Key, Any]]:
    """`{layer path: {(collection, array name): array}}`, in first-seen order."""
    out: dict[str, dict[Key, Any]] = {}

    def walk(coll: str, node: dict[str, Any], path: tuple[str, ...]) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(coll, v, (*path, str(k)))
            else:
                out.setdefault(".".join(path) or _ROOT, {})[coll, str(k)] = v

    for coll in collections:
        tree = variables.get(coll)
        if isinstance(tree, dict):
            walk(coll, tree, ())
    return out


def _leaf_paths(node: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaf_paths(v, (*path, str(k)))]
    return [path]


def _matching(names: dict[str, Any], patterns: Iterable[str], *, what: str) -> set[str]:
    """The names (dotted paths) that some pattern matches, itself or through an ancestor;
    a `CnnNameError` with did-you-mean for a pattern that matches nothing."""
    prefixes = {n: [".".join(n.split(".")[:i]) for i in range(1, n.count(".") + 2)] for n in names}
    chosen: set[str] = set()
    for pattern in patterns:
        hits = {n for n, pre in prefixes.items() if any(fnmatch.fnmatchcase(p, pattern) for p in pre)}
        if not hits:
            known = sorted({p for pre in prefixes.values() for p in pre})
            tops = sorted({n.split(".")[0] for n in names})
            raise CnnNameError(
                f"`{what}` pattern `{pattern}` matches no layer with parameters",
                notes=[
                    "layers with parameters: "
                    + ", ".join(tops[:12])
                    + (f" and {len(tops) - 12} more" if len(tops) > 12 else "")
                ],
                hints=did_you_mean(pattern, known)
                or ["patterns are layer names or globs over dotted paths: `conv1`, `conv*`, `stage1.*`"],
            )
        chosen |= hits
    return chosen


def _array(key: Key, source: Any, here: Any, cast: str = "") -> ArrayMatch:
    coll, name = key
    return ArrayMatch(
        name if coll == "params" else f"{coll}.{name}",
        None if source is None else tuple(source.shape),
        None if here is None else tuple(here.shape),
        cast,
    )


def _cast(source: Any, here: Any) -> str:
    a, b = getattr(source, "dtype", None), getattr(here, "dtype", None)
    return "" if a == b else f"{a} -> {b}"


def _copy_dicts(node: Any) -> Any:
    """A copy of the dict structure that shares the arrays."""
    return {k: _copy_dicts(v) for k, v in node.items()} if isinstance(node, dict) else node


def _fmt(shape: tuple[int, ...] | None) -> str:
    if shape is None:
        return "absent"
    return "x".join(map(str, shape)) if shape else "scalar"
