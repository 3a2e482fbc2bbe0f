"""How each cnndsl layer's variables are laid out in a PyTorch state dict, both ways.

cnndsl is channels-last (arrays `(N, H, W, D)`, conv kernels HWIO, dense kernels `(in, out)`);
PyTorch is channels-first (`(N, C, H, W)`, conv weights OIHW, transposed-conv weights
IOHW, Linear weights `(out, in)`). A `Slot` is one cnndsl layer with parameters and the
torch tensors it corresponds to (names and shapes), with the conversions between the two.

A `dense` after a spatial `flatten` needs its rows permuted as well: torch flattens
`(C, H, W)` (width fastest), cnndsl `(H, W, D)` (depth fastest).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import ir
from ..errors import DataError

TORCH_BN_EPS = 1e-5
TORCH_LN_EPS = 1e-5
# Torch tensors a cnndsl layer has no counterpart for, and why they may be left out.
IGNORED = {"num_batches_tracked": "BN's count of training steps (PyTorch only uses it when momentum=None)"}
_BN = {"weight": ("params", "scale"), "bias": ("params", "bias"), "running_mean": ("batch_stats", "mean"),
       "running_var": ("batch_stats", "var")}  # fmt: skip
_AFFINE = {"weight": ("params", "scale"), "bias": ("params", "bias")}
_AXES = {1: "L", 2: "HW", 3: "DHW"}
# Norms with torch `weight`/`bias` (and BN's running statistics); instancenorm only when `affine`.
_NORMS = ("bn", "layernorm", "groupnorm", "instancenorm")
LAYOUTS = ("conv", "dwconv", "deconv", "dense", *_NORMS, "prelu", "layerscale")

Shape_ = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Slot:
    """One cnndsl layer with variables. `arrays` maps each torch name (`weight`, `bias`,
    `running_mean`, ...) to `(collection, cnndsl name, cnndsl shape, torch shape)`, in the
    order PyTorch registers them. `flatten` is `(C, *torch spatial)` when the layer is a
    `dense` reading a spatial `flatten`'s output."""

    layer: str
    op: str
    at: str
    arrays: dict[str, tuple[str, str, Shape_, Shape_]]
    flatten: Shape_ | None = None
    eps: float | None = None
    groups: int = 1
    alt: Slot | None = None  # another torch layout of the same layer (a 1x1 conv as nn.Linear, timm's `gamma`)

    @property
    def signature(self) -> tuple[tuple[str, Shape_], ...]:
        """What a torch module must hold to fit: its tensors' names and shapes."""
        return tuple(sorted((k, v[3]) for k, v in self.arrays.items()))

    def describe(self) -> str:
        return ", ".join(f"{k} {fmt(v[3])}" for k, v in self.arrays.items())

    def transform(self, name: str) -> str:
        """The conversion of torch tensor `name` into cnndsl, in words."""
        coll, mine, here, there = self.arrays[name]
        if name == "weight" and self.op in ("conv", "dwconv", "deconv") and len(there) >= 3:
            ax = _AXES.get(len(there) - 2, "K" * (len(there) - 2))
            src = ("IO" if self.op == "deconv" else "OI") + ax
            group = f", {self.groups} groups" if self.groups > 1 else ""
            return f"{src} -> {ax}IO" + (", depthwise" if self.op == "dwconv" else group)
        if name == "weight" and self.op == "dense":
            if len(here) == 4:
                return "(out, in) -> 1x1 HWIO (an nn.Linear where cnndsl has a 1x1 conv)"
            if self.flatten is not None:
                c, *sp = self.flatten
                return f"(out, in) -> (in, out), rows NCHW -> NHWC ({c}@{'x'.join(map(str, sp[::-1]))})"
            return "(out, in) -> (in, out)"
        if there != here:
            return f"reshape {fmt(there)} -> {fmt(here)}"
        return "" if coll == "params" and mine == name else f"-> {coll}.{mine}"

    def to_cnndsl(self, name: str, value: np.ndarray) -> np.ndarray:
        """Torch tensor `name` in cnndsl's layout (float32 kept as it is)."""
        _, _, here, _ = self.arrays[name]
        v = np.asarray(value)
        if name == "weight" and self.op in ("conv", "dwconv", "deconv") and v.ndim >= 3:
            spatial = tuple(range(2, v.ndim))
            v = v.transpose(*spatial, 0, 1) if self.op == "deconv" else v.transpose(*spatial, 1, 0)
        elif name == "weight" and self.op == "dense":
            if self.flatten is not None:  # (out, C, *sp) -> (*sp, C, out): one copy below, of 100M values for VGG
                r = len(self.flatten) - 1
                v = v.reshape(v.shape[0], *self.flatten).transpose(*range(2, r + 2), 1, 0)
            else:
                v = v.T
        return np.ascontiguousarray(v).reshape(here)  # (ascontiguousarray makes 0-d arrays 1-d)

    def to_torch(self, name: str, value: np.ndarray) -> np.ndarray:
        """The inverse of `to_cnndsl`: cnndsl array -> torch tensor `name`'s layout."""
        _, _, _, there = self.arrays[name]
        v = np.asarray(value)
        if name == "weight" and self.op in ("conv", "dwconv", "deconv") and v.ndim >= 3:
            n = v.ndim
            order = (n - 2, n - 1) if self.op == "deconv" else (n - 1, n - 2)
            v = v.transpose(*order, *range(n - 2))
        elif name == "weight" and self.op == "dense":
            if self.flatten is not None:  # (*sp, C, out) -> (out, C, *sp)
                r = len(self.flatten) - 1
                c, sp = self.flatten[0], self.flatten[1:]
                v = v.reshape(*sp, c, v.shape[1]).transpose(r + 1, r, *range(r))
            else:
                v = v.T
        return np.ascontiguousarray(v).reshape(there)


def fmt(shape: Shape_) -> str:
    return "x".join(map(str, shape)) if shape else "scalar"


def slots(net: ir.Network, shapes: dict[str, Any]) -> list[Slot]:
    """The layers of `net` with parameters or statistics, in execution order; `shapes` is the
    variables tree (arrays or `ShapeDtypeStruct`s)."""
    layers = list(ir.layers(net.body))
    out: list[Slot] = []
    for i, n in enumerate(layers):
        mine: dict[tuple[str, str], Shape_] = {}
        for coll in ("params", "batch_stats"):
            node: Any = shapes.get(coll, {})
            for part in n.path:
                node = node.get(part, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict):
                mine |= {(coll, k): tuple(v.shape) for k, v in node.items() if not isinstance(v, dict)}
        if not mine:
            continue
        at = f"{n.span.line}:{n.span.column}" if n.span is not None and n.span.line else ""
        out.append(_slot(n, mine, at, _flatten_before(layers, i)))
    return out


def _slot(n: ir.Layer, mine: dict[tuple[str, str], Shape_], at: str, flat: Shape_ | None) -> Slot:
    op = n.op
    if op in ("conv", "dwconv", "deconv", "dense"):
        k = mine[("params", "kernel")]
        if op == "dense":
            torch_k = (k[1], k[0])
        elif op == "deconv":
            torch_k = (k[-2], k[-1], *k[:-2])
        else:
            torch_k = (k[-1], k[-2], *k[:-2])
        arrays = {"weight": ("params", "kernel", k, torch_k)}
        if ("params", "bias") in mine:
            b = mine[("params", "bias")]
            arrays["bias"] = ("params", "bias", b, b)
        groups = int(n.args.groups) if op == "conv" else 1
        alt = None
        if op == "conv" and groups == 1 and len(k) == 4 and k[:2] == (1, 1):  # torch may hold it as a Linear
            linear = {"weight": ("params", "kernel", k, (k[3], k[2]))}
            alt = Slot(n.name, "dense", at, linear | {t: v for t, v in arrays.items() if t != "weight"})
        return Slot(n.name, op, at, arrays, flat if op == "dense" else None, groups=groups, alt=alt)
    if op in _NORMS:
        table = _BN if op == "bn" else _AFFINE
        arrays = {t: (c, m, mine[(c, m)], mine[(c, m)]) for t, (c, m) in table.items()}
        return Slot(n.name, op, at, arrays, eps=float(n.args.eps))
    if op == "prelu":
        return Slot(n.name, op, at, {"weight": ("params", "slope", mine[("params", "slope")], (1,))})
    if op == "layerscale":  # torchvision's ConvNeXt: `layer_scale` (D, 1, 1); timm's LayerScale: `gamma` (D,)
        d = mine[("params", "scale")]
        alt = Slot(n.name, op, at, {"gamma": ("params", "scale", d, d)})
        return Slot(n.name, op, at, {"layer_scale": ("params", "scale", d, (*d, 1, 1))}, alt=alt)
    raise DataError(
        f"`{n.name}` ({n.text}) has variables, but cnndsl does not know PyTorch's layout for `{op}`",
        notes=[f"state-dict import and export cover {', '.join(LAYOUTS)}"],
        hints=["give the network's other layers, or convert this layer's tensors yourself"],
    )


def _flatten_before(layers: list[ir.Layer], i: int) -> Shape_ | None:
    """`(C, *torch spatial)` when `layers[i]` is a dense reading a spatial flatten's output
    (through shape-keeping layers such as dropout or relu), else None."""
    n = layers[i]
    if n.op != "dense" or n.x is None:
        return None
    for j in range(i - 1, -1, -1):
        m = layers[j]
        if m.op == "flatten" and m.x is not None and m.y == n.x:
            return (m.x.depth, *m.x.spatial[::-1]) if math.prod(m.x.spatial) > 1 else None
        if m.x != n.x or m.y != n.x:
            return None
    return None
