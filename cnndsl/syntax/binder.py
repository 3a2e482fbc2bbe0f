"""The one binder: written arguments -> declared parameters, for every call site.

Layers (`conv 16@3x3 s2 nobias`), block calls (`basic(64, s=2)`) and `train {}` calls
(`adam(lr=0.1)`) all declare their parameters as `P`s and are bound by `bind`: it matches
positional, keyword and flag arguments to the parameters, reports unknown, duplicate, extra
and missing arguments (with "did you mean" and the place), and converts each value with its
parameter's `Kind` (`values.py`). What differs between the sites is only how they are
written: `Callee` carries the words their messages use, and `bind_layer` reads a layer's
short forms (`s2`, `p(k//2)`, bare flags) into the same `Given` arguments.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

from ..errors import ArgumentError, CnnError, CnnNameError, Span, did_you_mean
from . import ast
from .values import DEPTH_KERNEL, FUNCTIONS, Env, Kind, expr_text, names_in_size


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


@dataclass(frozen=True)
class P:
    """One declared parameter (of an op, a block, a function or a `train` call).

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


# --- what is called, and what is written ---------------------------------------------------
def _error(cls: type[CnnError], message: str, where: Any, **kw: Any) -> CnnError:
    return cls(message, where, **kw)


@dataclass(frozen=True)
class Callee:
    """What is being called, as its messages name it.

    `noun`: what a keyword is called (`conv` has no *option*, `basic` no *parameter*, `sgd` no
    *argument*). `call`: written `name(a, k=b)` (blocks, functions, train calls), else a layer's
    `name a k=b` form. `usage`: hints for a wrong, extra or missing argument; `notes`: notes
    for an extra or missing one (where a block is defined). `unknown_hints(key)`: hints for an
    unknown keyword when "did you mean" finds none (default: `usage`). `error(cls, message,
    where, notes=, hints=)` makes an error at a `Given.where` (a span, or a train setting's node).
    """

    name: str
    params: tuple[P, ...]
    noun: str = "argument"
    call: bool = True
    usage: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    unknown_notes: tuple[str, ...] = ()
    unknown_hints: Callable[[str], list[str]] | None = None
    error: Callable[..., CnnError] = _error

    # the parameters by how they are written, computed once per callee
    @functools.cached_property
    def by_name(self) -> dict[str, P]:
        return {p.name: p for p in self.params}

    @functools.cached_property
    def shorts(self) -> dict[str, P]:
        return {p.short: p for p in self.params if p.short}

    @functools.cached_property
    def flags(self) -> dict[str, tuple[P, Any]]:
        return {w: (p, v) for p in self.params for w, v in p.flags}

    @functools.cached_property
    def positional(self) -> list[P]:
        return [p for p in self.params if p.positional]


class Given(NamedTuple):
    """One written argument: `key=value` or positional (`key is None`).

    `converted`: `value` is already the Python value (a flag word such as `nobias`). `bare`: a
    bare word, taken only by a positional parameter of a `choice` kind, else this error.
    `then`: the text of the size written right after a bare number (`conv 6 5x5`).
    """

    key: str | None
    value: Any
    where: Any
    text: str = ""
    converted: bool = False
    bare: Callable[[], CnnError] | None = None
    then: str | None = None
    fail: CnnError | None = None  # a mistake found reading it (a layer's short form)


# How the kinds' generic messages start; `bind` prefixes them with the argument they are about.
_GENERIC = ("expected ", "sizes must", "the value ", "the size ")


def bind(callee: Callee, given: Iterable[Given], env: Env, at: Any, *, defaults: bool = True) -> dict[str, Any]:
    """The values of `callee.params` from the `given` arguments (expressions evaluated in
    `env`), by name; `at` places errors about the whole call (a missing argument). With
    `defaults`, parameters not given take their default, else they are left out."""
    given = tuple(given)
    name, params = callee.name, callee.params
    values: dict[str, Any] = {}
    first: dict[str, Any] = {}
    by_name, shorts, positional = callee.by_name, callee.shorts, callee.positional
    if callee.call:
        n, got = len(positional), sum(g.key is None for g in given)
        if got > n:
            raise callee.error(
                ArgumentError,
                f"`{name}` takes {n} argument{'s' if n != 1 else ''}, got {got}",
                at,
                notes=list(callee.notes),
                hints=list(callee.usage),
            )
    nxt = 0
    for g in given:
        if g.fail is not None:
            raise g.fail
        if g.key is None and g.bare is not None:  # a bare word: a choice's value, or a mistake
            if not (nxt < len(positional) and positional[nxt].kind.name.startswith("one of")):
                raise g.bare()
            prm = positional[nxt]
            nxt += 1
        elif g.key is None:
            while nxt < len(positional) and positional[nxt].name in values:
                nxt += 1
            if nxt >= len(positional):
                raise _extra(callee, g)
            prm = positional[nxt]
            nxt += 1
            if prm.kind is DEPTH_KERNEL and isinstance(g.value, ast.Num) and g.then:
                raise callee.error(  # `conv 6 5x5`
                    ArgumentError,
                    f"`{g.text}` has no kernel size",
                    g.where,
                    hints=[f"join the filter count and the kernel with `@`: `{g.text}@{g.then}`"],
                )
        else:
            found = by_name.get(g.key) or shorts.get(g.key)
            if found is None:
                fallback = callee.unknown_hints(g.key) if callee.unknown_hints else list(callee.usage)
                raise callee.error(
                    CnnNameError,
                    f"`{name}` has no {callee.noun} `{g.key}`",
                    g.where,
                    notes=list(callee.unknown_notes),
                    hints=did_you_mean(g.key, by_name) or fallback,
                )
            prm = found
        if prm.name in values:
            before = first[prm.name]
            raise callee.error(
                ArgumentError,
                f"`{prm.name}` is given twice to `{name}`",
                g.where,
                notes=[f"it was first given at {before}"] if isinstance(before, Span) and before != g.where else [],
            )
        values[prm.name] = g.value if g.converted else _convert(callee, prm, g.value, env, g.where)
        first[prm.name] = g.where
    for prm in params:
        if prm.name not in values:
            if prm.default is REQUIRED:
                raise callee.error(
                    ArgumentError,
                    f"`{name}` needs {prm.doc or prm.kind.name}",
                    at,
                    notes=list(callee.notes),
                    hints=list(callee.usage),
                )
            if defaults:
                values[prm.name] = prm.default
    return values


def _convert(callee: Callee, prm: P, v: Any, env: Env, where: Any) -> Any:
    """The kind's conversion, its generic messages told which argument they are about."""
    try:
        return prm.kind.convert(v, env, where)
    except ArgumentError as e:
        if e.message.startswith(_GENERIC):
            e.message = f"invalid {prm.name} for `{callee.name}`: {e.message}"
            e.hints = e.hints or list(callee.usage)
        raise


def _extra(callee: Callee, g: Given) -> CnnError:
    """An extra positional argument, in a layer's form: `relu 0.1`, `dropout 0.1 0.2`."""
    n = sum(p.positional for p in callee.params)
    takes = f"{n} positional argument{'s' if n != 1 else ''}" if n else "no positional arguments"
    takes = takes if callee.params else "no arguments"
    return callee.error(
        ArgumentError,
        f"`{callee.name}` takes {takes}, but is given `{g.text}`" + (" as well" if n else ""),
        g.where,
        hints=list(callee.usage) if callee.params else [f"remove `{g.text}`"],
    )


# --- a layer's written form ------------------------------------------------------------------
SHORT = re.compile(r"^([a-z]+?)([0-9]+(?:x[0-9]+)*)$")  # a short option with its number: `s2`, `p1x0`
_NO = object()


def bind_layer(callee: Callee, layer: ast.Layer, env: Env, layers: Container[str], foreign: Container[str]) -> Args:
    """Bind a written layer's arguments to `callee.params`, evaluating expressions in `env`.

    Reads the layer's forms into `Given`s for `bind`: `key=value`, a bare flag (`nobias`), a
    short option (`s2`, `s(k)`, `p(k/2)x0`) and positional values. `layers` and `foreign`
    (layer names, and other frameworks' names) tell a missing `->` from a wrong argument."""
    by_name, shorts, flags = callee.by_name, callee.shorts, callee.flags

    def read(i: int, arg: ast.Arg) -> Given:
        v = arg.value
        if arg.key is not None:
            prm = by_name.get(arg.key) or shorts.get(arg.key)
            flag = dict(prm.flags).get(v.name, _NO) if prm and isinstance(v, ast.Var) and v.name not in env else _NO
            if flag is not _NO:  # `pad=same`
                return Given(arg.key, flag, arg.span, arg.text, converted=True)
            return Given(arg.key, v, arg.span, arg.text)
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
                missing_arrow = len(v.name) > 2 or v.name in layers
                raise CnnNameError(
                    f"`{callee.name}` does not take `{arg.text}`"
                    + (": is an `->` missing before it?" if missing_arrow else ""),
                    arg.span,
                    hints=[f"layers and blocks are chained with `->`: `{layer.op} ... -> {arg.text}`"]
                    if missing_arrow
                    else did_you_mean(v.name, shorts) + list(callee.usage),
                )
            if len(v.args) != 1 or v.kwargs:
                raise ArgumentError(
                    f"`{arg.text}`: a short option takes one expression",
                    arg.span,
                    hints=[f"like `{v.name}(k//2)`; a size per axis is `{v.name}(a)x(b)` or `{prm.name}=(a)x(b)`"],
                )
            return Given(v.name, v.args[0], arg.span, arg.text)
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
                return Given(prm.name, fv, arg.span, arg.text, converted=True)
            m = SHORT.match(word)
            if m and m.group(1) in shorts:
                digits = m.group(2)
                if any(len(d) > 15 for d in digits.split("x")):
                    raise ArgumentError(f"`{word}` is out of range", arg.span)
                value: ast.Value = (
                    ast.Size(dims=tuple(int(d) for d in digits.split("x")))
                    if "x" in digits
                    else ast.Num(value=Fraction(int(digits)), text=digits)
                )
                return Given(m.group(1), value, arg.span, arg.text)
            bad = _not_understood(callee, layer, i, env, layers, foreign, by_name, shorts, flags)
            return Given(None, v, arg.span, arg.text, bare=bad)
        after = layer.args[i + 1 :]
        then = after[0].text if isinstance(v, ast.Num) and after and isinstance(after[0].value, ast.Size) else None
        return Given(None, v, arg.span, arg.text, then=then)

    given: list[Given] = []
    for i, arg in enumerate(layer.args):
        try:
            given.append(read(i, arg))
        except CnnError as e:  # raised in its turn, after the mistakes in earlier arguments
            given.append(Given(None, None, arg.span, arg.text, fail=e))
    return Args(bind(callee, given, env, layer.span))


def _not_understood(
    callee: Callee,
    layer: ast.Layer,
    i: int,
    env: Env,
    layers: Container[str],
    foreign: Container[str],
    by_name: dict[str, P],
    shorts: dict[str, P],
    flags: dict[str, Any],
) -> Callable[[], CnnError]:
    """The error for a bare word no parameter takes: a missing `->`, or a misspelt option."""

    arg = layer.args[i]

    def error() -> CnnError:
        word = arg.value.name  # type: ignore[union-attr]
        if word in layers or word.lower().replace("_", "") in foreign:
            before = [a.text for a in layer.args[:i]]
            return CnnNameError(
                f"`{callee.name}` does not take `{word}`: is an `->` missing before it?",
                arg.span,
                hints=[f"layers are chained with `->`: `{' '.join([layer.op, *before])} -> {word}`"],
            )
        hints = did_you_mean(word, [*flags, *(f"{s}N" for s in shorts), *by_name])
        if re.fullmatch(r"[xX]([0-9]+(x[0-9]+)*)?", word):
            hints = ["write sizes with a lower-case `x` and no spaces: `3x3`"]
        elif names_in_size(word, env):
            hints = [names_in_size(word, env)]
        elif arg.span.line != layer.span.line:
            hints.append("is an `->` missing between two layers?")
        return CnnNameError(f"`{callee.name}` does not understand `{word}`", arg.span, hints=hints + list(callee.usage))

    return error
