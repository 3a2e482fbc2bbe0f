"""The surface syntax tree: exactly what was written, with spans.

The parser builds these; `passes.expand` evaluates expressions, binds layer arguments
through the op registry and expands blocks into the IR (`cnndsl.ir`). `cnndsl.syntax.fmt` prints
them back as canonical text. Spans are excluded from equality so that a re-parsed
formatted file compares equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from ..errors import Span

node = dataclass(frozen=True, slots=True, kw_only=True)
NOSPAN = Span(0, 0, 0, 0)


def _span() -> Span:
    return field(default=NOSPAN, compare=False, repr=False)


# --- expressions: integers and fractions, evaluated exactly ------------------------------
@node
class Num:
    value: Fraction
    text: str = field(default="", compare=False)
    span: Span = _span()


@node
class Var:
    name: str
    span: Span = _span()


@node
class BinOp:
    op: str  # one of + - * /
    left: Expr
    right: Expr
    span: Span = _span()


@node
class Neg:
    operand: Expr
    span: Span = _span()


@node
class Func:
    """A function in an expression: `make_divisible(c*w, 8)`, `max(a, b)`; a positional
    layer argument `s(k)` is the short option `s` with an expression (`bind` decides)."""

    name: str
    args: tuple[Expr, ...] = ()
    kwargs: tuple[tuple[str, Expr], ...] = ()
    span: Span = _span()


Expr = Num | Var | BinOp | Neg | Func


# --- layer argument values ---------------------------------------------------------------
@node
class DepthDims:
    """`F@KxK` (a filter count and kernel) or `D@WxH` (a shape)."""

    depth: Expr
    dims: tuple[Expr, ...]
    span: Span = _span()


@node
class Size:
    """`5x3`: one number per spatial axis, width first."""

    dims: tuple[int, ...]
    span: Span = _span()


@node
class SizeExpr:
    """`(k)x1`, `3x(k)`: a size whose axes are expressions (width first)."""

    dims: tuple[Expr, ...]
    span: Span = _span()


@node
class Range:
    """`a:b`: the half-open range a..b-1 (a channel range for `slice`)."""

    start: Expr
    stop: Expr
    span: Span = _span()


@node
class Tuple:
    """`(0.485, 0.456, 0.406)`."""

    items: tuple[Expr, ...]
    span: Span = _span()


@node
class Str:
    value: str
    span: Span = _span()


Value = Expr | DepthDims | Size | SizeExpr | Range | Tuple | Str


@node
class Arg:
    """A layer argument: positional (`key is None`) or an option `key=value`."""

    key: str | None
    value: Value
    text: str = field(default="", compare=False)
    span: Span = _span()


# --- chains and composition ----------------------------------------------------------------
@node
class Layer:
    op: str
    args: tuple[Arg, ...] = ()
    alias: str | None = None
    span: Span = _span()


@node
class Call:
    """A block instance: `basic(64, s=2)`."""

    block: str
    args: tuple[Expr, ...] = ()
    kwargs: tuple[tuple[str, Expr], ...] = ()
    alias: str | None = None
    text: str = field(default="", compare=False)
    span: Span = _span()


@node
class Residual:
    """`residual { body } [project { shortcut }]`: body(x) + (shortcut(x) or x)."""

    body: Chain
    project: Chain | None = None
    alias: str | None = None
    span: Span = _span()


@node
class Branches:
    """`concat { a | b }`, `add { a | b }` or `mul { a | b }`: parallel branches on the same input."""

    kind: str
    branches: tuple[Chain, ...]
    alias: str | None = None
    span: Span = _span()


@node
class MergeRef:
    """`concat NAME` / `add NAME` / `mul NAME`: merge the current tensor with a saved one."""

    kind: str
    ref: str
    alias: str | None = None
    span: Span = _span()


@node
class Save:
    name: str
    span: Span = _span()


@node
class Repeat:
    """`repeat N [as i] { body }`: the body N times; `i` (0-based) is usable in its expressions."""

    count: Expr
    body: Chain
    index: str | None = None
    span: Span = _span()


Item = Layer | Call | Residual | Branches | MergeRef | Save | Repeat


@node
class Chain:
    items: tuple[Item, ...]
    span: Span = _span()


@node
class Param:
    name: str
    default: Expr | None = None
    span: Span = _span()


@node
class BlockDef:
    name: str
    params: tuple[Param, ...]
    body: Chain
    span: Span = _span()


@node
class ShapeSpec:
    """The `input` line: depth and spatial sizes as expressions (width first)."""

    depth: Expr
    dims: tuple[Expr, ...] = ()
    span: Span = _span()


@node
class SettingCall:
    """A call in a `train` setting: `sgd(lr=0.1, momentum=0.9)`."""

    name: str
    args: tuple[Value, ...] = ()
    kwargs: tuple[tuple[str, Value], ...] = ()
    span: Span = _span()


@node
class Setting:
    key: str
    value: Value | SettingCall
    span: Span = _span()


@node
class Module:
    """A whole `.cnn` file."""

    name: str | None = None
    input: ShapeSpec | None = None
    blocks: tuple[BlockDef, ...] = ()
    chain: Chain | None = None
    train: tuple[Setting, ...] = ()
    span: Span = _span()
