"""Mapping a PyTorch state dict onto a cnndsl network's variables, and back.

Torch tensors are grouped into modules by key prefix (`layer1.0.conv1.weight` belongs to
`layer1.0.conv1`). Each cnndsl layer with variables (a `Slot`) expects one module with
given tensor names and shapes (after layout conversion). Modules and layers are paired by
execution order within each signature (the set of names and shapes): the k-th cnndsl layer
needing a `64x3x7x7` weight gets the k-th torch module holding one. Order on the torch side
is the file's (a `.pth` keeps registration order, which is execution order for torchvision
and timm models); a `.safetensors` file records none, so torchvision's names give it for
zoo networks and the names' natural order (`layer2` before `layer10`) otherwise. Pairs
given explicitly (`map=`) come first. Anything left over on either side is an error that
lists both sides; nothing is skipped silently (`ignore=` drops torch tensors by pattern,
`new=` keeps cnndsl layers at their initial values, both reported).
"""

from __future__ import annotations

import fnmatch
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import nested
from ..errors import ArgumentError, DataError, did_you_mean
from .files import StateDict, read_state_dict
from .layout import IGNORED, TORCH_BN_EPS, TORCH_LN_EPS, Slot, fmt, slots
from .zoo import known_layouts, torchvision_linears, torchvision_modules


@dataclass(frozen=True, slots=True)
class Row:
    """One tensor's journey: torch key -> cnndsl path (`params.conv1.kernel`)."""

    torch_key: str
    path: str
    torch_shape: tuple[int, ...]
    shape: tuple[int, ...]
    transform: str


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What `import_state_dict` did: the mapping table, the torch tensors left out and why,
    the cnndsl layers kept at their initial values, and notes on differences that change
    numbers (BN epsilon) or matter only for training (momentum)."""

    source: str
    rows: tuple[Row, ...]
    ignored: tuple[tuple[str, str], ...]  # (torch key, why)
    new: tuple[str, ...]  # cnndsl layers with initial values
    notes: tuple[str, ...]
    modules: dict[str, str] = field(default_factory=dict)  # cnndsl layer -> torch module prefix
    seconds: float = 0.0
    alt: tuple[str, ...] = ()  # layers found in their other torch layout (a 1x1 conv held as nn.Linear, ...)

    @property
    def values(self) -> int:
        return sum(int(np.prod(r.shape)) for r in self.rows)

    def render(self) -> str:
        head = (
            f"import: {len(self.rows)} tensors from `{self.source}` into {len(self.modules)} layers"
            f" ({self.values:,} values)"
        )
        if self.new:
            head += f"; {len(self.new)} new layer{'s' * (len(self.new) != 1)} keep their initial values"
        if self.ignored:
            head += f"; {len(self.ignored)} torch tensor{'s' * (len(self.ignored) != 1)} left out"
        table = [("torch key", "cnndsl", "torch shape", "shape", "transform")]
        table += [(r.torch_key, r.path, fmt(r.torch_shape), fmt(r.shape), r.transform) for r in self.rows]
        counters = [k for k, why in self.ignored if why in IGNORED.values()]  # one row for all of them
        for k, why in self.ignored:
            if k not in counters or len(counters) == 1:
                table.append((k, "(left out)", "", "", why))
            elif k == counters[0]:
                table.append((f"*.{k.rpartition('.')[2]} ({len(counters)} tensors)", "(left out)", "", "", why))
        table += [("(new)", layer, "", "", "initial values, not from the file") for layer in self.new]
        widths = [max(len(r[i]) for r in table) for i in range(4)]
        lines = [head] + ["  " + "  ".join(f"{c:<{w}}" for c, w in zip(r[:4], widths)) + "  " + r[4] for r in table]
        lines = [line.rstrip() for line in lines]
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])

    def __str__(self) -> str:
        return self.render()

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "tensors": [
                {
                    "torch": r.torch_key,
                    "cnndsl": r.path,
                    "torch_shape": list(r.torch_shape),
                    "shape": list(r.shape),
                    "transform": r.transform,
                }
                for r in self.rows
            ],
            "left_out": [{"torch": k, "why": why} for k, why in self.ignored],
            "new": list(self.new),
            "modules": self.modules,
            "alt": list(self.alt),
            "notes": list(self.notes),
            "seconds": round(self.seconds, 3),
        }


@dataclass(slots=True)
class _Module:
    prefix: str
    tensors: dict[str, np.ndarray]  # param name -> array (IGNORED names left out)
    order: int

    @property
    def signature(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        return tuple(sorted((k, tuple(v.shape)) for k, v in self.tensors.items()))

    def describe(self) -> str:
        return ", ".join(f"{k} {fmt(tuple(v.shape))}" for k, v in self.tensors.items())

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name


def import_state_dict(
    net: Any,
    source: Any,
    *,
    map: Mapping[str, str] | None = None,
    ignore: Sequence[str] = (),
    new: Sequence[str] = (),
    key: Any = None,
) -> tuple[dict[str, Any], ImportReport]:
    """`(variables, report)`: the tensors of `source` in `net`'s layout.

    `source` is a `.safetensors`/`.pth` path, a `StateDict`, a mapping of names to arrays
    or tensors, or a `torch.nn.Module` (whose BN epsilons are then checked too). `map` pairs
    torch module prefixes with cnndsl layer names explicitly; `ignore` drops torch tensors
    whose key matches a glob (`aux1.*`); `new` keeps cnndsl layers (names or globs) at their
    initial values (drawn with `key`). Raises `DataError` when anything is left unmatched.
    """
    t0 = time.perf_counter()
    module_eps: dict[str, float] = {}
    sd = _state_dict(source, module_eps)
    import jax

    from ..backends.jax.model import init_variables

    k = jax.random.key(0) if key is None else key
    shapes = jax.eval_shape(lambda kk: init_variables(net.ir, kk), k)
    wanted = slots(net.ir, shapes)
    notes = list(sd.notes)

    tensors = dict(sd.tensors)
    ignored: list[tuple[str, str]] = []
    for pattern in ignore:
        hits = [t for t in tensors if fnmatch.fnmatchcase(t, pattern)]
        if not hits:
            raise ArgumentError(
                f"`--ignore {pattern}` matches no tensor of `{sd.path}`",
                hints=did_you_mean(pattern, _prefixes(tensors)) or ["patterns are globs over torch keys: `aux1.*`"],
            )
        for t in hits:
            ignored.append((t, f"--ignore {pattern}"))
            del tensors[t]
    modules = _modules(tensors, ignored)
    order_note = _order(modules, sd, net.name)
    if order_note:
        notes.append(order_note)

    by_layer = {s.layer: s for s in wanted}
    fresh = _matching_layers(by_layer, new)
    pairs: list[tuple[Slot, Slot, _Module]] = []  # (layer, the layout it was found in, torch module)
    left = [s for s in wanted if s.layer not in fresh]
    mods = sorted(modules.values(), key=lambda m: m.order)
    for prefix, layer in (map or {}).items():
        m = modules.get(prefix) or modules.get(prefix.rpartition(".")[0])  # a module, or one of its keys
        s = by_layer.get(layer)
        if m is None or s is None:
            what, name, pool = ("torch module", prefix, modules) if m is None else ("cnndsl layer", layer, by_layer)
            raise ArgumentError(
                f"the map names {what} `{name}`, which `{sd.path if m is None else net.name}` does not have",
                hints=did_you_mean(name, pool)
                or [f"{what}s: " + ", ".join(list(pool)[:8]) + (", ..." * (len(pool) > 8))],
            )
        used = s.alt if s.alt is not None and m.signature == s.alt.signature else s
        if m.signature != used.signature:
            raise DataError(
                f"the map pairs torch `{prefix}` with `{layer}`, but their tensors differ",
                notes=[f"torch `{prefix}`: {m.describe()}", f"`{layer}` ({s.op}) needs {s.describe()} in torch layout"],
                hints=["check the pair, or leave it to the order-based mapping"],
            )
        if s not in left or m not in mods:
            raise ArgumentError(f"the map uses `{layer if s not in left else prefix}` twice, or it is `new`")
        pairs.append((s, used, m))
        left.remove(s)
        mods.remove(m)
    queues: dict[Any, list[_Module]] = {}
    for m in mods:
        queues.setdefault(m.signature, []).append(m)
    unmatched: list[Slot] = []
    for s in left:
        q = queues.get(s.signature)
        if q:
            pairs.append((s, s, q.pop(0)))
        elif s.alt is not None and queues.get(s.alt.signature):
            pairs.append((s, s.alt, queues[s.alt.signature].pop(0)))
        else:
            unmatched.append(s)
    extra = sorted((m for q in queues.values() for m in q), key=lambda m: m.order)
    if unmatched or extra:
        raise _mismatch(net.name, net.ir.source.path, sd.path, unmatched, extra, wanted)

    pairs.sort(key=lambda p: wanted.index(p[0]))
    out: dict[str, Any] = {}
    rows: list[Row] = []
    casts: set[str] = set()
    for _, s, m in pairs:
        for tname, (coll, mine, here, there) in s.arrays.items():
            v = m.tensors[tname]
            if v.dtype != np.float32:
                casts.add(f"{v.dtype} -> float32")
                v = v.astype(np.float32)
            nested.put(out.setdefault(coll, {}), s.layer, mine, s.to_cnndsl(tname, v))
            rows.append(Row(m.key(tname), f"{coll}.{s.layer}.{mine}", there, here, s.transform(tname)))
    if casts:
        notes.append("cast " + ", ".join(sorted(casts)))
    if fresh or "fixed" in shapes:
        init = net.init(k)
        for layer in fresh:
            for coll in ("params", "batch_stats"):
                node = nested.at(init.get(coll, {}), layer)
                for name, v in (node or {}).items():
                    nested.put(out.setdefault(coll, {}), layer, name, np.asarray(v))
        if "fixed" in init:
            out["fixed"] = jax.tree.map(np.asarray, init["fixed"])
    notes += _eps_notes([p[0] for p in pairs], module_eps, {s.layer: m.prefix for s, _, m in pairs})
    report = ImportReport(
        source=sd.path,
        rows=tuple(rows),
        ignored=tuple(ignored),
        new=tuple(s.layer for s in wanted if s.layer in fresh),
        notes=tuple(notes),
        modules={s.layer: m.prefix for s, _, m in pairs},
        seconds=time.perf_counter() - t0,
        alt=tuple(s.layer for s, used, _ in pairs if used is not s),
    )
    return out, report


# --- export ----------------------------------------------------------------------------------
def export_state_dict(
    net: Any, variables: dict[str, Any], *, names: Mapping[str, str] | None = None, alt: Iterable[str] = ()
) -> tuple[dict[str, np.ndarray], str]:
    """`(state dict, naming)`: `variables` in PyTorch's layout, keyed by torch module names.

    Names come from `names` (cnndsl layer -> torch module prefix, as an import records
    them) when it covers every layer, with the layers in `alt` written in their other torch
    layout (as the import found them: a 1x1 conv as an nn.Linear, ...); else torchvision's
    for a zoo network of the same structure (with its layouts: ConvNeXt's Linears); else the
    cnndsl layer names. BN layers get `num_batches_tracked` (0) so the file loads with
    `strict=True`. `naming` says which names were used.
    """
    wanted = slots(net.ir, variables)
    prefixes, naming, other = _export_names(net, wanted, names, set(alt))
    out: dict[str, np.ndarray] = {}
    for s, prefix in zip(wanted, prefixes, strict=True):
        if s.alt is not None and (s.layer in other or prefix in other):
            s = s.alt
        for tname, (coll, mine, _, _) in s.arrays.items():
            v = np.asarray(nested.at(variables[coll], s.layer)[mine], np.float32)
            out[f"{prefix}.{tname}"] = s.to_torch(tname, v)
        if s.op == "bn":
            out[f"{prefix}.num_batches_tracked"] = np.array(0, np.int64)
    return out, naming


def _export_names(
    net: Any, wanted: list[Slot], names: Mapping[str, str] | None, alt: set[str]
) -> tuple[list[str], str, set[str]]:
    """(prefixes, naming, layers or prefixes to write in their other torch layout)."""
    if names and all(s.layer in names for s in wanted) and len(set(names.values())) >= len(wanted):
        return [names[s.layer] for s in wanted], "the names recorded when the weights were imported", alt
    zoo = torchvision_modules(net.name)
    if zoo is not None and len(zoo[1]) == len(wanted):
        return zoo[1], f"torchvision's `{zoo[0]}`", torchvision_linears(net.name)
    return [s.layer for s in wanted], "cnndsl's layer names (no torchvision model of this structure)", alt


# --- helpers ---------------------------------------------------------------------------------
def _state_dict(source: Any, module_eps: dict[str, float]) -> StateDict:
    if isinstance(source, StateDict):
        return source
    if isinstance(source, (str, Path)):
        return read_state_dict(source)
    if hasattr(source, "state_dict") and hasattr(source, "named_modules"):  # a torch.nn.Module
        for name, mod in source.named_modules():
            if hasattr(mod, "eps") and (hasattr(mod, "running_mean") or hasattr(mod, "weight")):
                module_eps[name] = float(mod.eps)  # BatchNorm, LayerNorm, GroupNorm, InstanceNorm
        return StateDict(_as_numpy(source.state_dict()), type(source).__name__, "module", True)
    if isinstance(source, Mapping):
        return StateDict(_as_numpy(source), "<state dict>", "mapping", True)
    raise ArgumentError(
        f"cannot read weights from a {type(source).__name__}",
        hints=["give a .safetensors/.pth path, a state dict (name -> tensor) or a torch.nn.Module"],
    )


def _as_numpy(sd: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in sd.items():
        if hasattr(v, "detach"):  # a torch tensor
            v = v.detach().cpu()
            v = v.float() if str(v.dtype) == "torch.bfloat16" else v
            v = v.numpy()
        out[str(k)] = np.asarray(v)
    return out


def _prefixes(tensors: Iterable[str]) -> list[str]:
    return sorted({t.rsplit(".", 1)[0] + ".*" for t in tensors if "." in t})


def _modules(tensors: dict[str, np.ndarray], ignored: list[tuple[str, str]]) -> dict[str, _Module]:
    out: dict[str, _Module] = {}
    for i, (k, v) in enumerate(tensors.items()):
        prefix, _, name = k.rpartition(".")
        if name in IGNORED:
            ignored.append((k, IGNORED[name]))
            continue
        out.setdefault(prefix, _Module(prefix, {}, i)).tensors[name] = v
    return out


# torchvision's published DenseNet files still spell `denselayer1.norm.1`; its loader renames
# them to `denselayer1.norm1` (torchvision/models/densenet.py, `_load_state_dict`).
_LEGACY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12])$")


def _current(prefix: str) -> str:
    return _LEGACY.sub(r"\1\2", prefix)


def _natural(s: str) -> list[Any]:
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", s)]


def _order(modules: dict[str, _Module], sd: StateDict, network: str) -> str:
    """Put `modules[*].order` in execution order as well as can be known; a note on how.

    Published names (torchvision's, then timm's: zoo.py), when they fit, win even over a
    `.pth` file's order: registration order is not always execution order (RegNet registers
    `proj` before `f`, whose first 1x1 conv has the same shape)."""
    for whose, names in known_layouts(network):
        if {_current(p) for p in modules} <= set(names):
            rank = {p: i for i, p in enumerate(names)}
            for m in modules.values():
                m.order = rank[_current(m.prefix)]
            return "" if sd.ordered else f"the {sd.format} file records no order: modules ordered as {whose} runs them"
    if sd.ordered:
        return ""
    for i, p in enumerate(sorted(modules, key=_natural)):
        modules[p].order = i
    return (
        f"the {sd.format} file records no order: modules of the same shape paired in the natural order of their "
        "names (layer2 before layer10); check the table, or convert from the .pth, which keeps the order"
    )


def _matching_layers(by_layer: dict[str, Slot], patterns: Sequence[str]) -> set[str]:
    chosen: set[str] = set()
    for pattern in patterns:
        hits = {n for n in by_layer if fnmatch.fnmatchcase(n, pattern) or n.startswith(pattern + ".")}
        if not hits:
            raise ArgumentError(
                f"`--new {pattern}` matches no layer with parameters",
                hints=did_you_mean(pattern, by_layer) or ["give cnndsl layer names or globs: `dense3`, `head.*`"],
            )
        chosen |= hits
    return chosen


MAX_ROWS = 40  # rows of the side-by-side listing in an error


def _mismatch(
    network: str, spec: str, path: str, unmatched: list[Slot], extra: list[_Module], wanted: list[Slot]
) -> DataError:
    left = [f"{s.layer} ({s.op}{', ' + s.at if s.at else ''}): {s.describe()}" for s in unmatched]
    right = [f"{m.prefix or '(top level)'}: {m.describe()}" for m in extra]
    w = max([len(x) for x in left] + [len("cnndsl layers with no torch module")])
    lines = [f"{'cnndsl layers with no torch module':<{w}} | torch modules with no cnndsl layer"]
    lines += [f"{'-' * w}-+-{'-' * 36}"]
    rows = max(len(left), len(right))
    for i in range(min(rows, MAX_ROWS)):
        a = left[i] if i < len(left) else ""
        b = right[i] if i < len(right) else ""
        lines.append(f"{a:<{w}} | {b}".rstrip())
    if rows > MAX_ROWS:
        more = f"and {max(len(left) - MAX_ROWS, 0)} more"
        lines.append(f"{more:<{w}} | and {max(len(right) - MAX_ROWS, 0)} more")
    hints = []
    few = len(unmatched) <= 2 and len(extra) <= 2
    if few and any(s.op == "dense" for s in unmatched) and any(len(m.tensors.get("weight", ())) for m in extra):
        hints.append("a different head (`dense K` for another number of classes)? import into the spec the "
                     "weights were trained with, then fine-tune a copy with `train --init` (docs/training.md), "
                     "or keep the layer new: `--new LAYER --ignore 'TORCH.*'`")  # fmt: skip
    if extra and not unmatched:
        tops = dict.fromkeys(m.prefix.split(".")[0] for m in extra if m.prefix)
        flags = " ".join(f"--ignore '{t}.*'" for t in list(tops)[:4]) or "--ignore PATTERN"
        hints.append(
            f"tensors this network has no place for (auxiliary heads?): leave them out, e.g. `{flags}`; modules "
            "of the same shapes pair in order, so a module listed here may stand for one registered before it"
        )
    hints.append('pair modules yourself with `--map FILE` (JSON: {"torch module": "cnndsl layer"})')
    return DataError(
        f"the tensors of `{path}` do not fit `{network}`: {len(unmatched)} of {len(wanted)} layers found no "
        f"torch module, {len(extra)} torch module{'s' * (len(extra) != 1)} found no layer",
        notes=[
            f"shapes in torch's layout (OIHW, (out, in)); layers at line:column of {spec}; side by side:\n    "
            + "\n    ".join(lines)
        ],
        hints=hints,
    )


def _eps_notes(matched: list[Slot], module_eps: dict[str, float], prefix: dict[str, str]) -> list[str]:
    """Epsilons that change the outputs: compared with the torch modules' own when a module
    was given, else with PyTorch's defaults (a state dict does not record eps)."""
    notes = []
    norms = [s for s in matched if s.op in _NORM_EPS and s.eps is not None]
    if module_eps:
        for op, label in _NORM_EPS.items():
            diff = [(s, module_eps[prefix[s.layer]]) for s in norms if s.op == op and prefix[s.layer] in module_eps]
            diff = [(s, e) for s, e in diff if not np.isclose(s.eps or 0.0, e, rtol=1e-6, atol=0)]
            if diff:
                s, e = diff[0]
                notes.append(
                    f"{label} epsilon differs in {len(diff)} layers, which changes the outputs: `{s.layer}` has "
                    f"eps={s.eps:g}, torch `{prefix[s.layer]}` eps={e:g}; write `{op} eps={e:g}` in the spec"
                )
        return notes + _momentum(matched)
    for op in _NORM_EPS:
        default = TORCH_LN_EPS if op == "layernorm" else TORCH_BN_EPS
        odd = [s for s in norms if s.op == op and not np.isclose(s.eps or 0.0, default, rtol=1e-6, atol=0)]
        if odd:
            notes.append(
                f"{len(odd)} {op} layers use eps={odd[0].eps:g} (`{odd[0].layer}`, ...), PyTorch's default is "
                f"{default:g}; a state dict does not record eps: check the torch model uses the same "
                f"({_EPS_HINT[op]})"
            )
    return notes + _momentum(matched)


# cnndsl op -> how notes name it; which well-known models use another epsilon than PyTorch's default.
_NORM_EPS = {"bn": "BN", "layernorm": "layernorm", "groupnorm": "groupnorm", "instancenorm": "instancenorm"}
_EPS_HINT = {
    "bn": "torchvision's GoogLeNet, Inception and MobileNetV3 and timm's tf_* models use 0.001",
    "layernorm": "torchvision's and timm's ConvNeXt use 1e-6",
    "groupnorm": "PyTorch's GroupNorm default is 1e-5",
    "instancenorm": "PyTorch's InstanceNorm2d default is 1e-5",
}


def _momentum(matched: list[Slot]) -> list[str]:
    notes = []
    if any(s.op == "bn" for s in matched):
        notes.append(
            "BN momentum matters only for training: cnndsl's m (default 0.99) is 1 - PyTorch's momentum "
            "(torchvision trains with 0.1, i.e. `bn momentum=0.9`)"
        )
    return notes


def read_map(path: str | Path) -> dict[str, str]:
    """`--map FILE`: a strict JSON object `{"torch module": "cnndsl layer"}`."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for k, v in items:
            if k in seen:
                raise ValueError(f"the key `{k}` appears twice")
            seen[k] = v
        return seen

    def constant(name: str) -> Any:
        raise ValueError(f"`{name}` is not JSON")

    try:
        doc = json.loads(Path(path).read_text(), object_pairs_hook=pairs, parse_constant=constant)
    except OSError as e:
        raise DataError(f"cannot read the map `{path}`: {e.strerror or e}") from None
    except ValueError as e:
        raise DataError(f"the map `{path}` is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
        raise DataError(
            f"the map `{path}` must be a JSON object of strings",
            hints=['like {"fc": "dense1", "features.0": "conv1"}: torch module prefix -> cnndsl layer name'],
        )
    return doc
