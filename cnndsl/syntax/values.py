"""The language's values: exact evaluation of expressions, the kinds of argument values, and
how values are printed in messages.

`evaluate` computes an expression (`c*4`, `1/255`, `make_divisible(c*w, 8)`) exactly, as a
`Fraction`, within the one bound on numbers (`MAX_VALUE`). A `Kind` says how one argument is
written and converts its AST value to Python (`INT`, `SIZE`, `PROB`, `BOOL`, `choice(...)`);
the binder (`binder.py`) matches arguments to declared parameters and converts each with its
kind, for layers, block calls and `train {}` calls alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from ..errors import ArgumentError, CnnNameError, Span, did_you_mean
from ..shape import fmt_size
from . import ast, fmt

Env = dict[str, Fraction]
EXPRS = (ast.Num, ast.Var, ast.BinOp, ast.Neg, ast.Func)


def evaluate(e: ast.Expr, env: Env) -> Fraction:
    """Evaluate an integer/fraction expression exactly (`c*4`, `1/255`, `make_divisible(c*w, 8)`)."""
    match e:
        case ast.Num(value=v):
            return in_range(v, e)
        case ast.Func(name=name):
            fn = FUNCTIONS.get(name)
            if fn is None:
                raise CnnNameError(
                    f"unknown function `{name}`",
                    e.span,
                    hints=did_you_mean(name, FUNCTIONS)
                    or [f"the functions are {', '.join(f'`{f}`' for f in FUNCTIONS)}; a block call follows `->`"],
                )
            return in_range(fn.call(e, env), e)
        case ast.Var(name=n):
            if n not in env:
                known = "the names here are the block's parameters: " + ", ".join(f"`{k}`" for k in env)
                outside = "write a number here; names stand for the parameters of a `block`"
                size = names_in_size(n, env)
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


def names_in_size(word: str, env: Env) -> str | None:
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

    def call(self, e: ast.Func, env: Env) -> Fraction:
        """The value of the call `e`, its arguments bound by the one binder and evaluated in `env`."""
        # binding evaluates arguments, and evaluating a call binds them: the binder is imported here
        from .binder import REQUIRED, Callee, Given, P, bind

        usage = (f"usage: `{self.name}({', '.join(self.params)})`",)
        if self.params == ("...",):
            if e.kwargs or not e.args:
                raise ArgumentError(f"`{self.name}` takes one or more numbers", e.span, hints=list(usage))
            return self.fn(*(evaluate(a, env) for a in e.args))
        params = tuple(
            P(p, NUMBER, REQUIRED if i < self.required else None, positional=True, doc=f"a value for `{p}`")
            for i, p in enumerate(self.params)
        )
        given = [*(Given(None, a, e.span) for a in e.args), *(Given(k, v, e.span) for k, v in e.kwargs)]
        values = bind(Callee(self.name, params, usage=usage), given, env, e.span, defaults=False)
        try:
            return self.fn(**values)
        except ValueError as err:
            raise ArgumentError(f"`{expr_text(e)}`: {err}", e.span, hints=list(usage)) from None


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
    """An expression as written, for messages: the formatter's printer (`fmt.expr`)."""
    return fmt.expr(e) if isinstance(e, EXPRS) else "?"


def value_text(v: ast.Value) -> str:
    """An argument value as written (block parameters unevaluated): `fmt.value`."""
    return fmt.value(v)


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


# The words a boolean is written with, everywhere (layer options such as `bias=false`, block
# arguments, `train { grayscale = true }` and `--grayscale true`), as docs/language.md and
# docs/training.md say: `true` and `false`, nothing else.
BOOLEANS = {"true": True, "false": False}


def boolean(v: Any) -> bool | None:
    """The truth value `v` (an AST value) is written as, or None: it is not `true`/`false`."""
    return BOOLEANS.get(v.name) if isinstance(v, ast.Var) else None


def _bool_conv(v: ast.Value, env: Env, span: Span) -> bool:
    b = boolean(v)
    if b is not None:
        return b
    raise ArgumentError(f"expected `true` or `false`, got `{value_text(v)}`", span)


# A number as an expression computes it, exactly: block parameters take these.
NUMBER = Kind("a number", lambda v, env, span: evaluate(v, env), fmt=fmt_num)
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
