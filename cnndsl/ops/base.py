"""The op registry: every layer type is one `Op` subclass, defined once.

An op declares its arguments (`params`), and implements its shape rule (`infer`), parameter
count (`count`), multiply-accumulates (`macs`), receptive-field effect (`window`), initial
variables (`init`, drawn with NumPy) and traits; each backend holds its lowerings
(`backends/jax/lowerings`, `backends/onnx/emitters.py`). The grammar knows none of this: a
layer is a name with positional arguments and options, bound against the op's declaration by
the language's one binder (`syntax/binder.py`; value kinds such as `INT` and `SIZE` are in
`syntax/values.py`).

Conventions: a MAC is one multiply-add and counts as 2 FLOPs; activations, pooling,
normalisation and merges count 0 MACs. Spatial tuples are in written order (width first).
No JAX here (tests/ops/test_no_jax.py).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

from ..errors import CnnNameError, ShapeError, Span, did_you_mean
from ..shape import Shape, fmt_size
from ..syntax import ast
from ..syntax.binder import SHORT, Args, Callee, P, bind_layer
from ..syntax.values import Env


# --- receptive-field effect ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Window:
    """How a layer maps its input grid to its output grid, per spatial axis (written order).

    An output position sees `kernel` input positions spaced 1 apart, windows are `stride`
    apart and start `pad` positions before the input (strides below 1 upsample).
    """

    kernel: tuple[int, ...]
    stride: tuple[Fraction, ...]
    pad: tuple[Fraction, ...]


IDENTITY = "identity"  # the layer keeps the grid
COLLAPSE = "collapse"  # the layer has no grid after it (flatten, dense, global pooling)


# --- the context passed to shape rules -------------------------------------------------
@dataclass
class ShapeCtx:
    """Describes where a shape error happens: the layer's span and who made its input."""

    span: Span | None
    text: str
    producer: str  # "`maxpool 2` at 2:15" or "the `input` line at 2:1"
    x: Shape

    def error(self, message: str, *hints: str, notes: tuple[str, ...] = ()) -> ShapeError:
        return ShapeError(
            message,
            self.span,
            notes=[*notes, f"the input comes from {self.producer}, which outputs {self.x}"],
            hints=list(hints),
        )


# --- the op base class and the registry ----------------------------------------------------
# The `Op.final_activation`s that normalise over the classes (a softmax in either form): they
# belong only at a network's end (lint), and a loss on logits leaves them out (`logits=True`).
# A sigmoid is not one: it is also a gate inside a network (squeeze-and-excitation).
CLASS_NORMALISERS = ("softmax", "logsoftmax")


class Op:
    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    params: ClassVar[tuple[P, ...]] = ()
    doc: ClassVar[str] = ""
    example: ClassVar[str] = ""  # a usage like `conv 16@3x3 s1 p1`

    # shape rule: raise ctx.error(...) for an impossible input
    def infer(self, a: Args, x: Shape, ctx: ShapeCtx) -> Shape:
        return x

    # (trainable, non-trainable) parameter counts
    def count(self, a: Args, x: Shape, y: Shape) -> tuple[int, int]:
        return 0, 0

    def macs(self, a: Args, x: Shape, y: Shape) -> int:
        return 0

    def window(self, a: Args, x: Shape, y: Shape) -> Window | str:
        return IDENTITY

    # True: draws random numbers in training (`ctx.key`) and is the identity in inference
    # (`dropout`, `droppath`): the NNX module forks an RNG stream, inference drops the layer
    random: ClassVar[bool] = False

    # "softmax", "logsoftmax" or "sigmoid": turns scores into probabilities (log-probabilities)
    # per example. As a network's last layer, losses on logits skip a softmax/logsoftmax one
    # (`forward(logits=True)`) and `bce` takes a sigmoid one's output as probabilities.
    final_activation: ClassVar[str | None] = None

    # True: a linear map of the input by its `kernel` variable (output channels on the
    # kernel's last axis) plus an optional `bias` (argument `bias`). A per-channel map after
    # it folds into its variables (`fold_after`); one before it where `fold_before` allows.
    linear: ClassVar[bool] = False

    def fold_after(self, a: Args, p: dict[str, Any], mul: Any, add: Any) -> dict[str, Any]:
        """A linear layer's variables with `y * mul + add` (per output channel) folded in."""
        kernel = p["kernel"]
        bias = p["bias"] * mul + add if "bias" in p else add
        return {"kernel": kernel * mul.reshape((1,) * (kernel.ndim - 1) + (-1,)), "bias": bias}

    def fold_before(self, a: Args, x: Shape, p: dict[str, Any], mul: Any, add: Any) -> dict[str, Any] | None:
        """A linear layer's variables with its input first mapped by `x * mul + add` (per input
        channel) folded in, or None where that is not exact (the default)."""
        return None

    # A per-channel map `x * mul + add` in inference mode, from the op's own arguments and
    # variables `p` (BN: its statistics, scale and bias), or None: not such a map. Inference
    # folds it into an adjacent linear layer (`fold_after` / `fold_before`).
    def affine(self, a: Args, p: dict[str, Any], depth: int) -> tuple[Any, Any] | None:
        return None

    # initial variables {name: (collection, NumPy array)}, collection in params/batch_stats/
    # fixed; `rng` is a NumPy Generator (drawing on the host avoids compiling an RNG kernel
    # per weight shape, which took seconds on CPU)
    def init(self, a: Args, x: Shape, y: Shape, rng: Any) -> dict[str, tuple[str, Any]]:
        return {}

    @functools.cached_property
    def callee(self) -> Callee:
        """What the binder needs to know of this op: its name, parameters and usage."""
        return Callee(self.name, self.params, noun="option", call=False, usage=(_accepts(self),))

    # text shown in reports for bound args
    def describe(self, a: Args) -> str:
        parts = [self.name]
        for prm in self.params:
            v = a.get(prm.name)
            if v is None or v == prm.default:
                continue
            flag = next((w for w, fv in prm.flags if fv == v), None)
            if flag:
                parts.append(flag)
            elif prm.positional:
                parts.append(prm.kind.fmt(v))
            elif prm.short:
                parts.append(prm.short + prm.kind.fmt(v))
            else:
                parts.append(f"{prm.name}={prm.kind.fmt(v)}")
        return " ".join(parts)


REGISTRY: dict[str, Op] = {}

_SPLIT = "a channel range is `slice a:b`; halves, as torch's `chunk(2)`: `concat { slice 0:c | slice c:2*c -> ... }`"
_SE = "squeeze-and-excitation is `mul { identity | adaptiveavgpool 1 -> conv q@1x1 -> relu -> conv c@1x1 -> sigmoid }`"
# Names from other frameworks -> ours, offered as hints (never accepted silently).
FOREIGN_NAMES = {
    "conv2d": "conv",
    "conv1d": "conv",
    "convolution": "conv",
    "linear": "dense",
    "fullyconnected": "dense",
    "innerproduct": "dense",
    "maxpool2d": "maxpool",
    "maxpooling": "maxpool",
    "avgpool2d": "avgpool",
    "averagepool": "avgpool",
    "batchnorm2d": "bn",
    "batchnormalization": "bn",
    "convtranspose": "deconv",
    "conv2dtranspose": "deconv",
    "convtranspose2d": "deconv",
    "depthwiseconv": "dwconv",
    "globalaveragepooling": "gap",
    "globalavgpool": "gap",
    "adaptiveavgpool2d": "adaptiveavgpool",
    "reshape": "flatten",
    "swish": "silu",
    "leaky_relu": "leakyrelu",
    "logistic": "sigmoid",
    "upsampling": "upsample",
    "zeropad": "pad",
    "zeropadding": "pad",
    "hswish": "hardswish",
    "hsigmoid": "hardsigmoid",
    "stochasticdepth": "droppath",
    "dropconnect": "droppath",
    "channelshuffle": "shuffle",
    "localresponsenorm": "lrn",
    "localresponsenormalization": "lrn",
    "groupnormalization": "groupnorm",
    "instancenormalization": "instancenorm",
    "layernormalization": "layernorm",
    "narrow": "slice",
    "gn": "groupnorm",
    "ln": "layernorm",
    # values with a space are whole hints
    "split": _SPLIT,
    "chunk": _SPLIT,
    "channelsplit": _SPLIT,
    "permute": "the channel shuffle is `shuffle G`; there is no general permutation",
    "squeezeexcitation": _SE,
    "squeezeexcite": _SE,
    "se": _SE,
    "seblock": _SE,
    "selayer": _SE,
    "multiply": "products are the merge `mul { a | b }` (`mul NAME` with a saved tensor)",
    "hardtanh": "there is no `hardtanh` (a clamp to [-1, 1]); the hard activations are `hardsigmoid`, `hardswish` and `relu6`",
}


def register(cls: type[Op]) -> type[Op]:
    op = cls()
    for n in (cls.name, *cls.aliases):
        assert n not in REGISTRY, f"op {n} defined twice"
        REGISTRY[n] = op
    return cls


def lookup(name: str, span: Span | None, extra_hints: list[str] | None = None) -> Op:
    op = REGISTRY.get(name)
    if op is not None:
        return op
    hints = list(extra_hints or [])
    foreign = foreign_hint(name)
    if foreign:
        hints.insert(0, foreign)
    elif not hints:
        hints = did_you_mean(name, REGISTRY)
        m = SHORT.match(name)
        if not hints and (m and m.group(1) in "spdg" or name in ("nobias", "same", "valid", "ceil")):
            hints = [f"`{name}` looks like an option: options follow the layer, like `conv 16@3x3 {name}`"]
    raise CnnNameError(f"unknown layer `{name}`", span, hints=hints)


def foreign_hint(name: str) -> str | None:
    """The hint for another framework's spelling of a layer (`Hardswish`, `h_swish`,
    `InstanceNorm2d`, `drop_path`), or None: case, `_` and a `1d`/`2d`/`3d` suffix are ignored."""
    key = name.lower().replace("_", "")
    for k in dict.fromkeys((key, re.sub(r"[123]d$", "", key))):
        if k in FOREIGN_NAMES:
            v = FOREIGN_NAMES[k]
            return v if " " in v else f"in cnndsl `{name}` is written `{v}`"
        if k in REGISTRY:
            return f"names are lower case: `{k}`" if k == name.lower() else f"in cnndsl `{name}` is written `{k}`"
    return None


def bind(op: Op, layer: ast.Layer, env: Env) -> Args:
    """Bind a written layer's arguments to `op.params` (the one binder, `syntax/binder.py`)."""
    return bind_layer(op.callee, layer, env, REGISTRY, FOREIGN_NAMES)


def _accepts(op: Op) -> str:
    if not op.params:
        return f"`{op.name}` takes no arguments"
    return f"usage: `{op.example or op.name}`"


# --- helpers shared by shape rules ---------------------------------------------------------
def bcast(v: tuple[int, ...], rank: int) -> tuple[int, ...]:
    """A written size broadcast to `rank` axes (already checked by `per_axis`)."""
    return v * rank if len(v) == 1 else v


def per_axis(v: tuple[int, ...], x: Shape, what: str, ctx: ShapeCtx) -> tuple[int, ...]:
    """Broadcast a written size (`3` or `3x5`) to the input's spatial rank, or explain."""
    if len(v) == 1:
        return v * x.rank
    if len(v) != x.rank:
        raise ctx.error(
            f"{what} {fmt_size(v)} has {len(v)} sizes but the input {x} has {x.rank} spatial "
            f"ax{'is' if x.rank == 1 else 'es'}",
            "write one number per spatial axis"
            + (f" (`{fmt_size((*v, *v[-1:] * x.rank)[: x.rank])}` on {x})" if x.rank else "")
            + ", or a single number for all of them",
        )
    return tuple(v)


def needs_spatial(x: Shape, ctx: ShapeCtx, op: str) -> None:
    if x.is_flat:
        hints = ["spatial layers go before `flatten`, `dense` and global pooling"]
        if ctx.producer.startswith(("`gap`", "`gmp`")):  # squeeze-and-excitation written as in PyTorch
            pool = "adaptiveavgpool" if ctx.producer.startswith("`gap`") else "adaptivemaxpool"
            hints.append(f"`{pool} 1` pools to {x.depth}@1x1 and keeps the axes, as a gate for `mul {{ ... }}` needs")
        raise ctx.error(f"`{op}` needs an input with spatial axes, but gets the flat vector {x}", *hints)


def prod(xs: tuple[int, ...]) -> int:
    return math.prod(xs)


def per_channel(v: Any, x: Any) -> Any:
    """`v: (D,)` reshaped to broadcast over `x: (N, ..., D)` explicitly (rank-promotion safe)."""
    return v.reshape((1,) * (x.ndim - v.ndim) + v.shape)


def fold_input_map(p: dict[str, Any], mul: Any, add: Any) -> dict[str, Any]:
    """`kernel: (..., C_in, C_out)` and `bias` with an input map `x * mul + add` (per input
    channel) folded in: `k' = k * mul`, `bias' = bias + sum(k * add)` (exact where every
    input position the kernel reads is a real one, i.e. nothing is zero-padded or add is 0)."""
    kernel = p["kernel"]
    along_c = (1,) * (kernel.ndim - 2) + (-1, 1)
    shift = (kernel * add.reshape(along_c)).reshape(-1, kernel.shape[-1]).sum(axis=0)
    return {"kernel": kernel * mul.reshape(along_c), "bias": p["bias"] + shift if "bias" in p else shift}
