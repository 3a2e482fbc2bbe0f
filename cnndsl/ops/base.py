"""The op registry: every layer type is one `Op` subclass, defined once.

An op declares its arguments (`params`), and implements its shape rule (`infer`), parameter
count (`count`), multiply-accumulates (`macs`), receptive-field effect (`window`), initial
variables (`init`, drawn with NumPy) and traits; each backend holds its lowerings
(`backends/jax/lowerings`, `backends/onnx/emitters.py`). The grammar knows none of this: a
layer is a name with positional arguments and options, bound here against the op's declaration.

Conventions: a MAC is one multiply-add and counts as 2 FLOPs; activations, pooling,
normalisation and merges count 0 MACs. Spatial tuples are in written order (width first).
No JAX here (tests/ops/test_no_jax.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

from ..errors import ArgumentError, CnnNameError, ShapeError, Span, did_you_mean
from ..shape import Shape, fmt_size
from ..syntax import ast


# --- bound arguments -----------------------------------------------------------------------
class Args:
    """Immutable, hashable bound arguments of one layer: `a.stride`, `a["stride"]`."""

    __slots__ = ("_items",)

    def __init__(self, items: dict[str, Any] | tuple[tuple[str, Any], ...] = ()) -> None:
        pairs = tuple(sorted(dict(items).items()))
        object.__setattr__(self, "_items", pairs)

    def __getattr__(self, key: str) -> Any:
        for k, v in object.__getattribute__(self, "_items"):
            if k == key:
                return v
        raise AttributeError(key)

    def __getitem__(self, key: str) -> Any:
        return self.__getattr__(key)

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self._items).get(key, default)

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(self._items)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Args are immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Args) and self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        return "Args(" + ", ".join(f"{k}={v!r}" for k, v in self._items) + ")"


# --- argument kinds: AST value -> Python value ---------------------------------------------
Env = dict[str, Fraction]
EXPRS = (ast.Num, ast.Var, ast.BinOp, ast.Neg, ast.Func)


def evaluate(e: ast.Expr, env: Env) -> Fraction:
    """Evaluate an integer/fraction expression exactly (`c*4`, `1/255`, `make_divisible(c*w, 8)`)."""
    match e:
        case ast.Num(value=v):
            return in_range(v, e)
        case ast.Func(name=name, args=args, kwargs=kwargs):
            fn = FUNCTIONS.get(name)
            if fn is None:
                raise CnnNameError(
                    f"unknown function `{name}`",
                    e.span,
                    hints=did_you_mean(name, FUNCTIONS)
                    or [f"the functions are {', '.join(f'`{f}`' for f in FUNCTIONS)}; a block call follows `->`"],
                )
            return in_range(fn.call(e, [evaluate(a, env) for a in args], {k: evaluate(v, env) for k, v in kwargs}), e)
        case ast.Var(name=n):
            if n not in env:
                known = "the names here are the block's parameters: " + ", ".join(f"`{k}`" for k in env)
                outside = "write a number here; names stand for the parameters of a `block`"
                size = _names_in_size(n, env)
                if size:
                    raise CnnNameError(f"unknown name `{n}`", e.span, hints=[size])
                raise CnnNameError(
                    f"unknown name `{n}`", e.span, hints=did_you_mean(n, env) or [known if env else outside]
                )
            return env[n]
        case ast.Neg(operand=o):
            return -evaluate(o, env)
        case ast.BinOp(op=op, left=lhs, right=rhs):
            a, b = evaluate(lhs, env), evaluate(rhs, env)
            if op in ("/", "//") and b == 0:
                raise ArgumentError("division by zero", e.span, hints=[f"`{expr_text(rhs)}` is 0 here"])
            r = (
                a + b
                if op == "+"
                else a - b
                if op == "-"
                else a * b
                if op == "*"
                else a / b
                if op == "/"
                else Fraction(a // b)
            )
            return in_range(r, e)
    raise ArgumentError("expected a number", getattr(e, "span", None))


# The one bound on numbers: literals (checked as they are parsed), every value an expression
# computes, and the elements of every tensor shape. Nothing in a network needs more, and
# bounded numbers keep every count and report finite.
MAX_VALUE = 10**15
RANGE_HINT = "numbers are at most 10^15 in size, and no finer than 10^-15"


def out_of_range(v: Fraction | int) -> bool:
    return abs(v.numerator) > MAX_VALUE or v.denominator > MAX_VALUE  # ints have both too


def in_range(v: Fraction, e: ast.Expr) -> Fraction:
    """`v`, the value of `e`; an `ArgumentError` at `e` when it is beyond `MAX_VALUE`."""
    if out_of_range(v):
        raise ArgumentError(f"`{expr_text(e)}` is out of range", getattr(e, "span", None), hints=[RANGE_HINT])
    return v


def _names_in_size(word: str, env: Env) -> str | None:
    """The hint for `kx1` or `kxk`, a size with names written as one name."""
    parts = word.split("x")
    if len(parts) > 1 and all(p.isdigit() or p in env for p in parts) and any(p in env for p in parts):
        return "in a size, put names in parentheses: `" + "x".join(p if p.isdigit() else f"({p})" for p in parts) + "`"
    return None


@dataclass(frozen=True)
class Function:
    """A function usable in expressions: `fn(args, kwargs) -> Fraction`, exact."""

    name: str
    params: tuple[str, ...]  # names; those after `required` are optional
    required: int
    fn: Callable[..., Fraction]
    doc: str

    def call(self, e: ast.Func, args: list[Fraction], kwargs: dict[str, Fraction]) -> Fraction:
        usage = [f"usage: `{self.name}({', '.join(self.params)})`"]
        if self.params == ("...",):
            if kwargs or not args:
                raise ArgumentError(f"`{self.name}` takes one or more numbers", e.span, hints=usage)
            return self.fn(*args)
        if len(args) > len(self.params):
            raise ArgumentError(
                f"`{self.name}` takes at most {len(self.params)} arguments, got {len(args)}", e.span, hints=usage
            )
        values = dict(zip(self.params, args))
        for k, v in kwargs.items():
            if k not in self.params:
                raise ArgumentError(f"`{self.name}` has no argument `{k}`", e.span, hints=usage)
            if k in values:
                raise ArgumentError(f"`{k}` is given twice to `{self.name}`", e.span)
            values[k] = v
        missing = [p for p in self.params[: self.required] if p not in values]
        if missing:
            raise ArgumentError(f"`{self.name}` needs a value for `{missing[0]}`", e.span, hints=usage)
        try:
            return self.fn(**values)
        except ValueError as err:
            raise ArgumentError(f"`{expr_text(e)}`: {err}", e.span, hints=usage) from None


def make_divisible(v: Fraction, divisor: Fraction, min_value: Fraction | None = None) -> Fraction:
    """torchvision's `_make_divisible`: `v` rounded to the nearest multiple of `divisor`, at
    least `min_value` (default `divisor`) and never more than 10% below `v` (in exact arithmetic)."""
    if divisor.denominator != 1 or divisor < 1:
        raise ValueError(f"the divisor must be a whole number >= 1, got {fmt_num(divisor)}")
    lo = divisor if min_value is None else min_value
    new = max(lo, Fraction(int(v + divisor / 2) // int(divisor) * int(divisor)))
    return new + divisor if new < Fraction(9, 10) * v else new


FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        Function(
            "make_divisible",
            ("v", "divisor", "min_value"),
            2,
            make_divisible,
            "torchvision's `_make_divisible(v, divisor, min_value=divisor)`: width multipliers",
        ),
        Function("floor", ("v",), 1, lambda v: Fraction(math.floor(v)), "the largest whole number <= v"),
        Function("ceil", ("v",), 1, lambda v: Fraction(math.ceil(v)), "the smallest whole number >= v"),
        Function("min", ("...",), 1, lambda *v: min(v), "the smallest argument"),
        Function("max", ("...",), 1, lambda *v: max(v), "the largest argument"),
    )
}


def as_int(v: Fraction, span: Span | None, what: str, expr: ast.Expr | None = None) -> int:
    if v.denominator != 1:
        shown = f" ({expr_text(expr)} = {v})" if expr is not None and not isinstance(expr, ast.Num) else ""
        raise ArgumentError(
            f"{what} must be a whole number, got {float(v):g}{shown}",
            span,
            hints=["a division in a block must divide exactly"] if "/" in shown else [],
        )
    return int(v)


def expr_text(e: ast.Expr | None) -> str:
    match e:
        case ast.Num(value=v, text=t):
            return t or str(v)
        case ast.Var(name=n):
            return n
        case ast.Neg(operand=o):
            return f"-{expr_text(o)}"
        case ast.BinOp(op=op, left=a, right=b):
            return f"{expr_text(a)}{op}{expr_text(b)}"
        case ast.Func(name=n, args=args, kwargs=kw):
            return f"{n}(" + ", ".join([*(expr_text(x) for x in args), *(f"{k}={expr_text(x)}" for k, x in kw)]) + ")"
    return "?"


def value_text(v: ast.Value) -> str:
    """An argument value as written (block parameters unevaluated)."""
    match v:
        case ast.Size(dims=d):
            return fmt_size(d)
        case ast.SizeExpr(dims=ds):
            return "x".join(expr_text(x) if isinstance(x, ast.Num) else f"({expr_text(x)})" for x in ds)
        case ast.Range(start=a, stop=b):
            return f"{expr_text(a)}:{expr_text(b)}"
        case ast.DepthDims(depth=d, dims=ds):
            return f"{expr_text(d)}@" + "x".join(expr_text(x) for x in ds)
        case ast.Tuple(items=xs):
            return "(" + ", ".join(value_text(x) for x in xs) + ")"  # items: numbers or tuples (kernel rows)
        case ast.Str(value=t):
            return f'"{t}"'
    return expr_text(v)  # type: ignore[arg-type]


def fmt_num(v: Fraction | float | int) -> str:
    if isinstance(v, Fraction) and v.denominator == 1:
        return str(v.numerator)
    if isinstance(v, Fraction):
        return f"{float(v):g}"
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Kind:
    """How one argument is written and converted. `convert(value, env, span) -> python`."""

    name: str  # shown in messages: "a number", "a size like 3x3"
    convert: Callable[[ast.Value, Env, Span], Any]
    fmt: Callable[[Any], str] = str


def _int_kind(lo: int = 1) -> Kind:
    def conv(v: ast.Value, env: Env, span: Span) -> int:
        if not isinstance(v, EXPRS):
            raise ArgumentError(f"expected a whole number, got `{value_text(v)}`", span)
        n = as_int(evaluate(v, env), span, "the value", v)
        if n < lo:
            raise ArgumentError(f"expected a whole number >= {lo}, got {n}", span)
        return n

    return Kind(f"a whole number >= {lo}", conv)


def _float_kind(lo: float | None = None, hi: float | None = None, hi_open: bool = False) -> Kind:
    def conv(v: ast.Value, env: Env, span: Span) -> float:
        if not isinstance(v, EXPRS):
            raise ArgumentError(f"expected a number, got `{value_text(v)}`", span)
        x = float(evaluate(v, env))
        if lo is not None and x < lo or hi is not None and (x >= hi if hi_open else x > hi):
            rng = f"[{lo:g}, {hi:g}{')' if hi_open else ']'}" if hi is not None else f">= {lo:g}"
            raise ArgumentError(f"expected a number in {rng}, got {x:g}", span)
        return x

    return Kind("a number", conv, fmt=lambda x: f"{x:g}")


def _size_kind(lo: int = 1) -> Kind:
    """A number or `AxB`; kept as written (1 or n values), broadcast by `per_axis`."""

    def conv(v: ast.Value, env: Env, span: Span) -> tuple[int, ...]:
        if isinstance(v, ast.Size):
            dims = v.dims
        elif isinstance(v, ast.SizeExpr):
            dims = tuple(as_int(evaluate(d, env), span, "the size", d) for d in v.dims)
        elif isinstance(v, EXPRS):
            dims = (as_int(evaluate(v, env), span, "the size", v),)
        elif isinstance(v, ast.Tuple) and all(isinstance(i, ast.Num) for i in v.items):
            sizes = "x".join(expr_text(i) for i in v.items)
            raise ArgumentError(
                f"expected a size like `3` or `3x3`, got `{value_text(v)}`", span, hints=[f"write `{sizes}`"]
            )
        elif isinstance(v, ast.DepthDims):
            raise ArgumentError(
                f"expected a size like `3` or `3x3`, got `{value_text(v)}`",
                span,
                hints=[f"this takes a size without a count: `{'x'.join(expr_text(d) for d in v.dims)}`"],
            )
        else:
            raise ArgumentError(f"expected a size like `3` or `3x3`, got `{value_text(v)}`", span)
        if any(d < lo for d in dims):
            raise ArgumentError(f"sizes must be >= {lo}, got {fmt_size(dims)}", span)
        return tuple(dims)

    return Kind("a size like 3 or 3x3", conv, fmt=fmt_size)


def _depth_kernel_conv(v: ast.Value, env: Env, span: Span) -> tuple[int, tuple[int, ...]]:
    if not isinstance(v, ast.DepthDims):
        if isinstance(v, ast.Size):
            like, what = f"16@{fmt_size(v.dims)}", f"the kernel `{fmt_size(v.dims)}` has no filter count"
        elif isinstance(v, ast.Num):
            like, what = f"{expr_text(v)}@3x3", f"`{expr_text(v)}` has no kernel size"
        else:
            like, what = "16@3x3", f"expected filters and kernel like `16@3x3`, got `{value_text(v)}`"
        raise ArgumentError(
            what,
            span,
            hints=[f"write the number of filters, `@`, then the kernel size: `{like}`"],
        )
    f = as_int(evaluate(v.depth, env), span, "the filter count", v.depth)
    dims = tuple(as_int(evaluate(d, env), span, "a kernel size", d) for d in v.dims)
    if f < 1:
        raise ArgumentError(f"the filter count must be >= 1, got {f}", span)
    if any(d < 1 for d in dims):
        raise ArgumentError(f"kernel sizes must be >= 1, got {fmt_size(dims)}", span)
    return f, dims


def _floats_conv(v: ast.Value, env: Env, span: Span) -> tuple[float, ...]:
    if isinstance(v, ast.Tuple):
        return tuple(float(evaluate(i, env)) for i in v.items)
    if isinstance(v, EXPRS):
        return (float(evaluate(v, env)),)
    raise ArgumentError(f"expected a number or a list like `(0.5, 0.5, 0.5)`, got `{value_text(v)}`", span)


def _range_conv(v: ast.Value, env: Env, span: Span) -> tuple[int, int]:
    if not isinstance(v, ast.Range):
        raise ArgumentError(
            f"expected a range like `0:16`, got `{value_text(v)}`",
            span,
            hints=["write the first index, `:`, then the end (not included): `0:c/2`"],
        )
    a = as_int(evaluate(v.start, env), span, "the range start", v.start)
    b = as_int(evaluate(v.stop, env), span, "the range end", v.stop)
    if not 0 <= a < b:
        raise ArgumentError(f"expected a range `a:b` with 0 <= a < b, got {a}:{b}", span)
    return a, b


def _bool_conv(v: ast.Value, env: Env, span: Span) -> bool:
    if isinstance(v, ast.Var) and v.name in ("true", "false"):
        return v.name == "true"
    raise ArgumentError(f"expected `true` or `false`, got `{value_text(v)}`", span)


INT = _int_kind(1)
INT0 = _int_kind(0)
SIZE = _size_kind(1)
SIZE0 = _size_kind(0)
FLOAT = _float_kind()
POSFLOAT = _float_kind(lo=0.0)
PROB = _float_kind(0.0, 1.0, hi_open=True)
DEPTH_KERNEL = Kind("filters and kernel like 16@3x3", _depth_kernel_conv, fmt=lambda v: f"{v[0]}@{fmt_size(v[1])}")
FLOATS = Kind(
    "a number or a list like (0.5, 0.5)", _floats_conv, fmt=lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")"
)
RANGE = Kind("a range like 0:16", _range_conv, fmt=lambda r: f"{r[0]}:{r[1]}")
BOOL = Kind("true or false", _bool_conv, fmt=lambda b: "true" if b else "false")


def choice(*words: str) -> Kind:
    def conv(v: ast.Value, env: Env, span: Span) -> str:
        if isinstance(v, ast.Var) and v.name in words:
            return v.name
        got = v.name if isinstance(v, ast.Var) else "this"
        raise ArgumentError(
            f"expected one of {', '.join(f'`{w}`' for w in words)}, got `{got}`",
            span,
            hints=did_you_mean(got, words),
        )

    return Kind("one of " + ", ".join(words), conv)


@dataclass(frozen=True)
class P:
    """One argument of an op.

    `positional`: may be written without its name, in declaration order. `short`: a prefix
    for the short form (`s2` = `stride=2`). `flags`: bare words that set it (`nobias` sets
    `bias=False`). `default`: `REQUIRED` if it must be given.
    """

    name: str
    kind: Kind
    default: Any = None
    positional: bool = False
    short: str | None = None
    flags: tuple[tuple[str, Any], ...] = ()
    doc: str = ""


REQUIRED = object()


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
        m = _SHORT.match(name)
        if not hints and (m and m.group(1) in "spdg" or name in ("nobias", "same", "valid", "ceil")):
            hints = [f"`{name}` looks like an option: options follow the layer, like `conv 16@3x3 {name}`"]
    raise CnnNameError(f"unknown layer `{name}`", span, hints=hints)


_SHORT = re.compile(r"^([a-z]+?)([0-9]+(?:x[0-9]+)*)$")


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
    """Bind a written layer's arguments to `op.params`, evaluating expressions in `env`."""
    values: dict[str, Any] = {}
    where: dict[str, Span] = {}
    by_name = {p.name: p for p in op.params}
    shorts = {p.short: p for p in op.params if p.short}
    flags = {w: (p, v) for p in op.params for w, v in p.flags}
    positional = [p for p in op.params if p.positional]
    next_pos = 0

    def put(prm: P, value: Any, span: Span) -> None:
        if prm.name in values:
            raise ArgumentError(
                f"`{prm.name}` is given twice to `{op.name}`",
                span,
                notes=[f"it was first given at {where[prm.name]}"],
            )
        values[prm.name] = value
        where[prm.name] = span

    def convert(prm: P, v: ast.Value, span: Span) -> Any:
        """The kind's conversion, its generic messages told which argument they are about."""
        try:
            return prm.kind.convert(v, env, span)
        except ArgumentError as e:
            if e.message.startswith(_GENERIC):
                e.message = f"invalid {prm.name} for `{op.name}`: {e.message}"
                e.hints = e.hints or [f"usage: `{op.example or op.name}`"]
            raise

    for arg in layer.args:
        v = arg.value
        if arg.key is not None:
            prm = by_name.get(arg.key) or (shorts.get(arg.key))
            if prm is None:
                raise CnnNameError(
                    f"`{op.name}` has no option `{arg.key}`",
                    arg.span,
                    hints=did_you_mean(arg.key, by_name) or [_accepts(op)],
                )
            flag = dict(prm.flags).get(v.name, _NO) if isinstance(v, ast.Var) and v.name not in env else _NO
            put(prm, flag if flag is not _NO else convert(prm, v, arg.span), arg.span)  # `pad=same`
            continue
        head = v.dims[0] if isinstance(v, ast.SizeExpr) else None
        if isinstance(head, ast.Func) and head.name in shorts and len(head.args) == 1 and not head.kwargs:
            v = ast.Func(
                name=head.name, args=(ast.SizeExpr(dims=(head.args[0], *v.dims[1:])),), span=v.span
            )  # `p(k/2)x0`
        if isinstance(v, ast.Func) and v.name not in FUNCTIONS:  # `s(k)`: a short option with an expression
            prm = shorts.get(v.name)
            m = re.fullmatch(r"([a-z]+?)([0-9]+(?:x[0-9]+)*)x", v.name)
            if prm is None and m and m.group(1) in shorts:  # `s2x(k)`: a size half number, half expression
                long = shorts[m.group(1)].name
                raise ArgumentError(
                    f"`{arg.text}`: a short option's size is written with parentheses",
                    arg.span,
                    hints=[f"write `{m.group(1)}({m.group(2)})x(...)` or `{long}={m.group(2)}x(...)`"],
                )
            if prm is None:
                missing_arrow = len(v.name) > 2 or v.name in REGISTRY
                raise CnnNameError(
                    f"`{op.name}` does not take `{arg.text}`"
                    + (": is an `->` missing before it?" if missing_arrow else ""),
                    arg.span,
                    hints=[f"layers and blocks are chained with `->`: `{layer.op} ... -> {arg.text}`"]
                    if missing_arrow
                    else did_you_mean(v.name, shorts) + [_accepts(op)],
                )
            if len(v.args) != 1 or v.kwargs:
                raise ArgumentError(
                    f"`{arg.text}`: a short option takes one expression",
                    arg.span,
                    hints=[f"like `{v.name}(k//2)`; a size per axis is `{v.name}(a)x(b)` or `{prm.name}=(a)x(b)`"],
                )
            put(prm, convert(prm, v.args[0], arg.span), arg.span)
            continue
        if isinstance(v, ast.Range) and isinstance(v.start, ast.Var) and v.start.name not in env:
            prm = by_name.get(v.start.name) or shorts.get(v.start.name)
            if prm is not None:
                raise ArgumentError(
                    f"`{arg.text}`: options are written `name=value`",
                    arg.span,
                    hints=[f"write `{prm.name}={expr_text(v.stop)}`"],
                )
        if isinstance(v, ast.Var) and v.name not in env:
            word = v.name
            if word in flags:
                prm, fv = flags[word]
                put(prm, fv, arg.span)
                continue
            m = _SHORT.match(word)
            if m and m.group(1) in shorts:
                prm = shorts[m.group(1)]
                digits = m.group(2)
                if any(len(d) > 15 for d in digits.split("x")):
                    raise ArgumentError(f"`{word}` is out of range", arg.span)
                value: ast.Value = (
                    ast.Size(dims=tuple(int(d) for d in digits.split("x")))
                    if "x" in digits
                    else ast.Num(value=Fraction(int(digits)), text=digits)
                )
                put(prm, convert(prm, value, arg.span), arg.span)
                continue
            if next_pos < len(positional) and positional[next_pos].kind.name.startswith("one of"):
                prm = positional[next_pos]
                next_pos += 1
                put(prm, convert(prm, v, arg.span), arg.span)
                continue
            if word in REGISTRY or word.lower().replace("_", "") in FOREIGN_NAMES:
                raise CnnNameError(
                    f"`{op.name}` does not take `{word}`: is an `->` missing before it?",
                    arg.span,
                    hints=[
                        f"layers are chained with `->`: `{' '.join([layer.op, *_args_before(layer, arg)])} -> {word}`"
                    ],
                )
            hints = did_you_mean(word, [*flags, *(f"{s}N" for s in shorts), *by_name])
            if re.fullmatch(r"[xX]([0-9]+(x[0-9]+)*)?", word):
                hints = ["write sizes with a lower-case `x` and no spaces: `3x3`"]
            elif _names_in_size(word, env):
                hints = [_names_in_size(word, env)]
            elif arg.span.line != layer.span.line:
                hints.append("is an `->` missing between two layers?")
            raise CnnNameError(
                f"`{op.name}` does not understand `{word}`",
                arg.span,
                hints=hints + [_accepts(op)],
            )
        while next_pos < len(positional) and positional[next_pos].name in values:
            next_pos += 1
        if next_pos >= len(positional):
            n = len(positional)
            takes = f"{n} positional argument{'s' if n != 1 else ''}" if n else "no positional arguments"
            takes = takes if op.params else "no arguments"
            raise ArgumentError(
                f"`{op.name}` takes {takes}, but is given `{arg.text}`" + (" as well" if n else ""),
                arg.span,
                hints=[f"usage: `{op.example or op.name}`" if op.params else f"remove `{arg.text}`"],
            )
        prm = positional[next_pos]
        next_pos += 1
        after = layer.args[len(_args_before(layer, arg)) + 1 :]
        if prm.kind is DEPTH_KERNEL and isinstance(v, ast.Num) and after and isinstance(after[0].value, ast.Size):
            raise ArgumentError(  # `conv 6 5x5`
                f"`{arg.text}` has no kernel size",
                arg.span,
                hints=[f"join the filter count and the kernel with `@`: `{arg.text}@{after[0].text}`"],
            )
        put(prm, convert(prm, v, arg.span), arg.span)

    for prm in op.params:
        if prm.name not in values:
            if prm.default is REQUIRED:
                raise ArgumentError(
                    f"`{op.name}` needs {prm.doc or prm.kind.name}",
                    layer.span,
                    hints=[f"usage: `{op.example or op.name}`"],
                )
            values[prm.name] = prm.default
    return Args(values)


def _args_before(layer: ast.Layer, arg: ast.Arg) -> list[str]:
    i = next(i for i, a in enumerate(layer.args) if a is arg)
    return [a.text for a in layer.args[:i]]


_NO = object()
# How the generic kinds' messages start; `bind` prefixes them with the argument they are about.
_GENERIC = ("expected ", "sizes must", "the value ", "the size ")


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
