"""AST -> IR: evaluate expressions, bind layer arguments, inline blocks, name every layer.

Naming (the keys of variables and checkpoints):
- a layer is `as NAME` or its op and a counter within its scope: `conv1`, `conv2`, `bn1`;
- a block call opens a scope `as NAME` or `<block><k>` (`basic1`, `basic2`);
- `repeat N { body }` is the body written N times (no scope of its own);
- `concat {...}`/`add {...}` are named like layers (`concat1`) and each branch is a scope
  below it (`concat1.branch2.conv1`); a `residual`'s body stays in the current scope and its
  `project` chain is the scope `project` (`project2`, ... when there are several).

`save NAME` is visible to later `concat NAME`/`add NAME` in the same chain and in branches
and projections below it; a save inside a branch, a residual body or a block ends with it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

from .. import ir
from ..errors import ArgumentError, CnnError, CnnNameError, CnnSyntaxError, ShapeError, did_you_mean
from ..ops.base import FOREIGN_NAMES, REGISTRY, Op, bind, lookup
from ..shape import Shape
from ..syntax import ast, binder
from ..syntax.binder import REQUIRED, Args, Callee, Given, P
from ..syntax.values import FUNCTIONS, MAX_VALUE, NUMBER, Env, as_int, evaluate, expr_text, fmt_num


@dataclass
class _Scope:
    path: tuple[str, ...]
    counts: Counter = field(default_factory=Counter)
    used: dict[str, object] = field(default_factory=dict)  # name -> span
    saves: dict[str, str] = field(default_factory=dict)  # label -> unique key

    def name(self, base: str, alias: str | None, span: object) -> tuple[str, ...]:
        if alias is not None:
            if alias in self.used:
                raise CnnNameError(
                    f"the name `{alias}` is already used in this scope",
                    span,  # type: ignore[arg-type]
                    notes=[f"it was first used at {self.used[alias]}"],
                    hints=["names must be unique within a block or the network"],
                )
            self.used[alias] = span
            return (*self.path, alias)
        while True:
            self.counts[base] += 1
            n = f"{base}{self.counts[base]}"
            if n not in self.used:
                self.used[n] = span
                return (*self.path, n)


# At most this many errors are reported from one file (rustc and tsc report each independent one).
MAX_ERRORS = 20


class _Expander:
    def __init__(self, module: ast.Module) -> None:
        # Mistakes in one layer's name or arguments, each independent of the others (binding
        # reads no shapes): collected, the layer replaced by `identity`, and reported together.
        self.errors: list[CnnError] = []
        self.blocks: dict[str, ast.BlockDef] = {}
        for b in module.blocks:
            if b.name in self.blocks:
                raise CnnNameError(
                    f"block `{b.name}` is defined twice",
                    b.span,
                    notes=[f"the first definition is at {self.blocks[b.name].span}"],
                )
            if b.name in REGISTRY:
                raise CnnNameError(f"block `{b.name}` has the name of a layer", b.span, hints=["choose another name"])
            dup = next((n for n, k in Counter(p.name for p in b.params).items() if k > 1), None)
            if dup:
                raise ArgumentError(f"block `{b.name}` has two parameters named `{dup}`", b.span)
            self.blocks[b.name] = b
        self.stack: list[str] = []
        self.callees: dict[str, Callee] = {}
        self.bound: dict[tuple[int, tuple], tuple[Op, Args, str]] = {}
        self.sites: tuple[ir.Site, ...] = ()
        self.scopes: list[_Scope] = []

    # -- chains ------------------------------------------------------------------------
    def chain(self, c: ast.Chain, env: Env, scope: _Scope) -> ir.Chain:
        items: list[ir.Node] = []
        for item in c.items:
            items.extend(self.item(item, env, scope))
        return ir.Chain(items=tuple(items))

    def item(self, it: ast.Item, env: Env, scope: _Scope) -> list[ir.Node]:
        match it:
            case ast.Layer():
                return [self.layer(it, env, scope)]
            case ast.Call():
                return [self.call(it, env, scope)]
            case ast.Repeat():
                n = as_int(evaluate(it.count, env), it.count.span, "the repeat count", it.count)
                if n < 0:
                    raise ArgumentError(f"repeat count must be >= 0, got {n}", it.count.span)
                if it.index is not None and it.index in env:
                    raise CnnNameError(
                        f"`repeat {expr_text(it.count)} as {it.index}`: `{it.index}` is already a name here",
                        it.span,
                        hints=["choose another name for the repeat index"],
                    )
                out: list[ir.Node] = []
                same = it.index is None or not _sizes_use(it.body, it.index)  # every round the same size
                for i in range(n):
                    body = self.chain(it.body, env if it.index is None else {**env, it.index: Fraction(i)}, scope)
                    if not body.items and same:
                        break  # every round makes nothing (`repeat 0` inside): do not count to n
                    out.extend(body.items)
                return out
            case ast.Residual():
                path = scope.name("add", it.alias, it.span)
                # The body is named in this scope, but like any branch its saves end with it.
                saves = dict(scope.saves)
                body = self.chain(it.body, env, scope)
                scope.saves = saves
                if not body.items:
                    raise CnnSyntaxError("a `residual` body is empty", it.span)
                proj = ir.Chain()
                if it.project is not None:
                    pname, k = "project", 1
                    while pname in scope.used:
                        k += 1
                        pname = f"project{k}"
                    scope.used[pname] = it.span
                    proj = self.chain(it.project, env, _Scope((*scope.path, pname), saves=dict(saves)))
                return [
                    ir.Merge(
                        kind="add", branches=(body, proj), path=path, residual=True, span=it.span, sites=self.sites
                    )
                ]
            case ast.Branches():
                path = scope.name(it.kind, it.alias, it.span)
                if len(it.branches) < 2:
                    raise CnnSyntaxError(
                        f"`{it.kind}` needs at least two branches separated by `|`",
                        it.span,
                        hints=[f"`{it.kind} {{ identity | ... }}` keeps the input as one branch"],
                    )
                branches = tuple(
                    self.chain(b, env, _Scope((*path, f"branch{i}"), saves=dict(scope.saves)))
                    for i, b in enumerate(it.branches, 1)
                )
                return [ir.Merge(kind=it.kind, branches=branches, path=path, span=it.span, sites=self.sites)]
            case ast.Save():
                key = ".".join((*scope.path, it.name))
                scope.saves[it.name] = key
                return [ir.Save(key=key, label=it.name, span=it.span)]
            case ast.MergeRef():
                key = scope.saves.get(it.ref)
                if key is None:
                    saved = ", ".join(f"`{k}`" for k in scope.saves)
                    raise CnnNameError(
                        f"`{it.kind} {it.ref}` refers to no saved tensor",
                        it.span,
                        notes=[
                            f"saved so far in this scope: {saved}"
                            if saved
                            else "nothing is saved before it in this scope"
                        ],
                        hints=did_you_mean(it.ref, scope.saves)
                        or [f"write `save {it.ref}` earlier in the chain, where the tensor to merge is"],
                    )
                path = scope.name(it.kind, it.alias, it.span)
                return [ir.MergeRef(kind=it.kind, ref=key, label=it.ref, path=path, span=it.span, sites=self.sites)]
        raise AssertionError(it)

    def layer(self, it: ast.Layer, env: Env, scope: _Scope) -> ir.Layer:
        if it.op in self.blocks and it.op not in REGISTRY:
            args = ", ".join(
                a.text[1:-1] if a.text.startswith("(") and a.text.endswith(")") else a.text for a in it.args
            )
            raise CnnNameError(
                f"`{it.op}` is a block: call it as `{it.op}(...)`",
                _op_span(it),
                hints=[f"write `{it.op}({args})`, with no space before `(`"],
            )
        key = (id(it), tuple(env.items()))  # a layer in a block or repeat is bound once per argument values
        if key not in self.bound:
            try:
                op = lookup(it.op, _op_span(it))
                self.bound[key] = op, bind(op, it, env), " ".join([it.op, *(_arg_text(a, env) for a in it.args)])
            except CnnError as e:
                if len(self.errors) >= MAX_ERRORS:
                    raise
                for found in (e, *_more_in_layer(e, it, env)):
                    found.notes += [f"in `{s.text}` called at {s.span}" for s in reversed(self.sites)]
                    self.errors.append(found)
                self.bound[key] = REGISTRY["identity"], Args({}), it.op  # a stand-in: nothing after it is checked
        op, args, text = self.bound[key]
        path = scope.name(op.name, it.alias, it.span)
        return ir.Layer(op=op.name, args=args, path=path, text=text, span=it.span, sites=self.sites)

    def call(self, it: ast.Call, env: Env, scope: _Scope) -> ir.Group:
        b = self.blocks.get(it.block)
        if b is None:
            hints = did_you_mean(it.block, self.blocks)
            layer = (
                it.block
                if it.block in REGISTRY
                else FOREIGN_NAMES.get(it.block.lower().replace("_", ""), it.block.lower())
            )
            if layer in REGISTRY:
                named = (
                    f"`{it.block}` is a layer"
                    if layer == it.block
                    else f"in cnndsl `{it.block}` is the layer `{layer}`"
                )
                hints = [f"{named}: write its arguments after a space, like `{REGISTRY[layer].example or layer}`"]
            raise CnnNameError(
                f"unknown block `{it.block}`", it.span, hints=hints or ["define it with `block NAME(params) { ... }`"]
            )
        if it.block in self.stack:
            cycle = " -> ".join([*self.stack[self.stack.index(it.block) :], it.block])
            raise CnnNameError(
                f"block `{it.block}` calls itself ({cycle})",
                it.span,
                hints=["blocks cannot be recursive; use `repeat N { ... }`"],
            )
        inner = self._bind_call(b, it, env)
        text = f"{it.block}(" + ", ".join(fmt_num(inner[p.name]) for p in b.params) + ")"
        path = scope.name(it.block, it.alias, it.span)
        self.stack.append(it.block)
        saved_sites = self.sites
        self.sites = (*self.sites, ir.Site(text=text, span=it.span))
        try:
            body = self.chain(b.body, inner, _Scope(path))
        except CnnError as e:
            e.notes.append(f"in `{text}` called at {it.span}")
            raise
        finally:
            self.stack.pop()
            self.sites = saved_sites
        return ir.Group(block=it.block, text=text, path=path, body=body, span=it.span)

    def _bind_call(self, b: ast.BlockDef, it: ast.Call, env: Env) -> Env:
        if b.name not in self.callees:
            self.callees[b.name] = block_callee(b)
        return bind_call(b, self.callees[b.name], it, env)


def block_callee(b: ast.BlockDef) -> Callee:
    """A block's parameters as the binder takes them (a default is an expression, evaluated
    by `bind_call` with the parameters before it)."""
    sig = f"{b.name}(" + ", ".join(p.name + ("=…" if p.default else "") for p in b.params) + ")"
    params = tuple(
        P(p.name, NUMBER, REQUIRED if p.default is None else p.default, positional=True, doc=f"a value for `{p.name}`")
        for p in b.params
    )
    return Callee(
        b.name,
        params,
        noun="parameter",
        notes=(f"`block {sig}` is defined at {b.span}",),
        unknown_hints=lambda _key: [f"it is defined as `block {sig}`"],
    )


def bind_call(b: ast.BlockDef, callee: Callee, it: ast.Call, env: Env) -> Env:
    """The environment of a call's block body: its parameters' values, in definition order,
    bound by the one binder against `callee` (`block_callee(b)`)."""
    given = [*(Given(None, e, it.span) for e in it.args), *(Given(k, e, it.span) for k, e in it.kwargs)]
    values = binder.bind(callee, given, env, it.span, defaults=False)
    inner: Env = {}
    for p in b.params:
        inner[p.name] = values[p.name] if p.name in values else evaluate(p.default, inner)
    return inner


# The bound on the expanded network: IR nodes (layers, merges, saves and block instances: the
# rows of the table). `check_size` computes the size from the AST before anything is expanded.
MAX_LAYERS = 1_000_000
_MAX_WORK = 2 * MAX_LAYERS  # items the sizer may visit (memoised block bodies are free)


class _TooBig(Exception):
    """Sizing visited more than `_MAX_WORK` items: the size is beyond the bound."""


class _Sizer:
    """How many IR nodes expanding a chain makes, from the AST alone. A block body is sized once
    per distinct argument values. What does not evaluate (a bad argument or count, an unknown
    block, a cycle) counts 0 here: the expander reports it when it gets there."""

    def __init__(self, blocks: dict[str, ast.BlockDef]) -> None:
        self.blocks = blocks
        self.callees = {name: block_callee(b) for name, b in blocks.items()}
        self.memo: dict[tuple[str, tuple[Fraction, ...]], int] = {}
        self.stack: list[str] = []
        self.work = 0

    def chain(self, c: ast.Chain, env: Env) -> int:
        return sum(self.item(it, env) for it in c.items)

    def item(self, it: ast.Item, env: Env) -> int:
        self.work += 1
        if self.work > _MAX_WORK:
            raise _TooBig
        match it:
            case ast.Call():
                return 1 + self.call(it, env)
            case ast.Repeat():
                return self.repeat(it, env)
            case ast.Residual():
                return 1 + self.chain(it.body, env) + (self.chain(it.project, env) if it.project is not None else 0)
            case ast.Branches():
                return 1 + sum(self.chain(b, env) for b in it.branches)
        return 1

    def call(self, it: ast.Call, env: Env) -> int:
        b = self.blocks.get(it.block)
        if b is None or it.block in self.stack:
            return 0
        try:
            inner = bind_call(b, self.callees[b.name], it, env)
        except CnnError:
            return 0
        key = (b.name, tuple(inner.values()))
        if key not in self.memo:
            self.stack.append(b.name)
            try:
                self.memo[key] = self.chain(b.body, inner)
            except CnnError as e:
                e.notes.append(f"in `{it.text}` called at {it.span}")
                raise
            finally:
                self.stack.pop()
        return self.memo[key]

    def repeat(self, it: ast.Repeat, env: Env) -> int:
        try:
            n = as_int(evaluate(it.count, env), it.count.span, "the repeat count", it.count)
        except CnnError:
            return 0
        if n <= 0 or it.index is not None and it.index in env:
            return 0
        if it.index is None or not _sizes_use(it.body, it.index):
            return n * self.chain(it.body, env if it.index is None else {**env, it.index: Fraction(0)})
        if n > MAX_LAYERS:
            raise ArgumentError(
                f"`repeat {expr_text(it.count)} as {it.index}` would run its body {n:,} times, over the limit of "
                f"{MAX_LAYERS:,}",
                it.count.span,
                hints=["is the count a typo?"],
            )
        total = 0
        for i in range(n):  # the index changes counts or block arguments inside: size each round
            total += self.chain(it.body, {**env, it.index: Fraction(i)})
            if total > MAX_LAYERS:
                break
        return total


def _sizes_use(c: ast.Chain, name: str) -> bool:
    """Whether `name` appears in a repeat count or block-call argument in `c` (what sizes depend on)."""
    env = {name: Fraction(0)}
    for it in c.items:
        match it:
            case ast.Repeat():
                if _has_var(it.count, env) or _sizes_use(it.body, name):
                    return True
            case ast.Call():
                if any(_has_var(a, env) for a in it.args) or any(_has_var(v, env) for _, v in it.kwargs):
                    return True
            case ast.Residual():
                if _sizes_use(it.body, name) or it.project is not None and _sizes_use(it.project, name):
                    return True
            case ast.Branches():
                if any(_sizes_use(b, name) for b in it.branches):
                    return True
    return False


def check_size(chain: ast.Chain, blocks: dict[str, ast.BlockDef]) -> None:
    """Refuse, before expanding, a network that would expand to more than `MAX_LAYERS` nodes,
    at the first item of the top chain that takes it over (a call, a repeat, a branch)."""
    sizer = _Sizer(blocks)
    total = 0
    for it in chain.items:
        try:
            size = sizer.item(it, {})
        except _TooBig:
            size = None
        if size is not None and total + size <= MAX_LAYERS:
            total += size
            continue
        span = it.count.span if isinstance(it, ast.Repeat) else it.span
        notes = ["layers, merges, saves and block instances count; the size is worked out before expanding"]
        if size is None or size > MAX_LAYERS:
            shown = f"{size:,}" if size is not None else f"more than {MAX_LAYERS:,}"
            message = f"{_what(it)} would expand to {shown} layers, over the limit of {MAX_LAYERS:,}"
        else:
            message = f"the network would reach {total + size:,} layers here, over the limit of {MAX_LAYERS:,}"
            notes.insert(0, f"{_what(it)} adds {size:,} to the {total:,} before it")
        raise ArgumentError(
            message,
            span,
            notes=notes,
            hints=["is a repeat count or a nesting of blocks a typo? Split a network this large into several specs"],
        )


def _what(it: ast.Item) -> str:
    match it:
        case ast.Call():
            return f"`{it.text}`"
        case ast.Repeat():
            return f"`repeat {expr_text(it.count)}`"
        case ast.Residual():
            return "`residual`"
        case ast.Branches():
            return f"`{it.kind}`"
    return "this"


def _op_span(it: ast.Layer):
    s = it.span
    return type(s)(s.line, s.column, s.line, s.column + len(it.op))


def _has_var(v: object, env: Env) -> bool:
    match v:
        case ast.Var(name=n):
            return n in env
        case ast.BinOp(left=a, right=b):
            return _has_var(a, env) or _has_var(b, env)
        case ast.Neg(operand=o):
            return _has_var(o, env)
        case ast.DepthDims(depth=d, dims=ds):
            return _has_var(d, env) or any(_has_var(x, env) for x in ds)
        case ast.Tuple(items=xs) | ast.SizeExpr(dims=xs):
            return any(_has_var(x, env) for x in xs)
        case ast.Func(args=xs, kwargs=kw):
            return any(_has_var(x, env) for x in xs) or any(_has_var(x, env) for _, x in kw)
        case ast.Range(start=a, stop=b):
            return _has_var(a, env) or _has_var(b, env)
    return False


def _value_text(v: object, env: Env) -> str:
    match v:
        case ast.DepthDims(depth=d, dims=ds):
            return f"{fmt_num(evaluate(d, env))}@" + "x".join(fmt_num(evaluate(x, env)) for x in ds)
        case ast.Tuple(items=xs):
            return "(" + ", ".join(_value_text(x, env) for x in xs) + ")"  # items: numbers or tuples
        case ast.SizeExpr(dims=(ast.Func(name=n, args=(x,)), *rest)) if n not in FUNCTIONS:  # `p(k/2)x0`
            return n + "x".join(_value_text(d, env) for d in (x, *rest))
        case ast.SizeExpr(dims=xs):
            return "x".join(fmt_num(evaluate(x, env)) for x in xs)
        case ast.Range(start=a, stop=b):
            return f"{fmt_num(evaluate(a, env))}:{fmt_num(evaluate(b, env))}"
        case ast.Func(name=n, args=(x,)) if n not in FUNCTIONS:  # `s(k)`: the short option `s2`
            return n + _value_text(x, env)
    return fmt_num(evaluate(v, env))  # type: ignore[arg-type]


def _arg_text(a: ast.Arg, env: Env) -> str:
    """The argument as written, with block parameters replaced by their values."""
    if not _has_var(a.value, env):
        return a.text
    return (f"{a.key}=" if a.key else "") + _value_text(a.value, env)


def input_shape(spec: ast.ShapeSpec) -> Shape:
    d = as_int(evaluate(spec.depth, {}), spec.span, "the input depth", spec.depth)
    dims = tuple(as_int(evaluate(x, {}), spec.span, "an input size", x) for x in spec.dims)
    if d < 1 or any(x < 1 for x in dims):
        raise ShapeError(f"input sizes must be >= 1, got {Shape(d, dims)}", spec.span)
    if len(dims) > 3:
        raise ShapeError(f"inputs have at most 3 spatial axes, got {len(dims)}", spec.span)
    x = Shape(d, dims)
    if x.size > MAX_VALUE:
        raise ShapeError(
            f"the input {x} has {x.size:,} values per example, more than 10^15",
            spec.span,
            hints=["is a size a typo? A tensor this large cannot be computed"],
        )
    return x


def expand(module: ast.Module, source) -> ir.Network:
    """Build the IR of a parsed file (no shapes yet)."""
    if module.input is None:
        first = module.chain.items[0] if module.chain is not None and module.chain.items else None
        raise CnnSyntaxError(
            "the file has no `input` line" if first else "the file has no `input` line and no layers",
            first.span if first is not None else None,
            hints=[
                "start the network with its input shape, like `input 1@28x28` (depth@width x height)"
                + (" before the first layer" if first else ", then the layers joined by `->`")
            ],
        )
    if module.chain is None:
        raise CnnSyntaxError(
            "the file has no layers",
            module.input.span,
            hints=["write the layers after the `input` line, joined by `->`"],
        )
    x = input_shape(module.input)
    expander = _Expander(module)
    check_size(module.chain, expander.blocks)
    try:
        body = expander.chain(module.chain, {}, _Scope(()))
    except CnnError as e:
        raise _together([*expander.errors, e]) from None
    if expander.errors:
        raise _together(expander.errors)
    return ir.Network(
        name=module.name or _stem(source.path),
        input=x,
        body=body,
        source=source,
        input_span=module.input.span,
        ast=module,
    )


def _together(errors: list[CnnError]) -> CnnError:
    """The first error, carrying the others (`err.more`), each reported once, at most `MAX_ERRORS`."""
    seen: set[tuple[object, str]] = set()
    unique = []
    for e in errors:
        if (e.span, e.message) not in seen:
            seen.add((e.span, e.message))
            unique.append(e)
    first = unique[0]
    first.more = unique[1:MAX_ERRORS]  # type: ignore[attr-defined]
    return first


def _more_in_layer(e: CnnError, it: ast.Layer, env: Env) -> list[CnnError]:
    """Further mistakes in the same layer (`conv 6@5x5 strid=2 ciel`): bind again without the
    argument at fault while it is an option or a bare word (leaving out a positional one would
    shift the others and report what follows from it)."""

    def standalone(a: ast.Arg | None) -> bool:
        """An option, or a bare word that is no layer's name (`relu maxpool 2` lacks an `->`)."""
        return a is not None and (a.key is not None or isinstance(a.value, ast.Var) and a.value.name not in REGISTRY)

    found: list[CnnError] = []
    args = list(it.args)
    for _ in range(MAX_ERRORS):
        bad = next((a for a in args if a.span == e.span), None)
        if not standalone(bad):
            break
        args.remove(bad)  # type: ignore[arg-type]
        try:
            bind(lookup(it.op, _op_span(it)), ast.Layer(op=it.op, args=tuple(args), alias=it.alias, span=it.span), env)
        except CnnError as nxt:
            # only a mistake in another option or word is independent: one about a positional
            # argument or the whole layer may follow from the removal (`8@3 x 3`, a missing `->`)
            if not standalone(next((a for a in args if a.span == nxt.span), None)):
                break
            found.append(nxt)
            e = nxt
            continue
        break
    return found


def _stem(path: str) -> str:
    from pathlib import PurePath

    return PurePath(path).stem if path and not path.startswith("<") else "network"
