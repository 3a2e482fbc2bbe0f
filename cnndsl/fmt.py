"""AST -> canonical `.cnn` text (`cnndsl fmt`). `parse(format_module(m)) == m`.

Canonical form: `network`, then blocks, then `input`, then the chain with one top-level
item per line (`->` leading continuation lines), then `train`. Arguments keep their written
form (`s1`, `stride=s`); expressions print with the parentheses they need.
"""

from __future__ import annotations

from . import ast

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def expr(e: ast.Expr, parent: int = 0, right: bool = False) -> str:
    match e:
        case ast.Num(value=v, text=t):
            return t or (str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}")
        case ast.Var(name=n):
            return n
        case ast.Neg(operand=o):
            return "-" + expr(o, 3)
        case ast.BinOp(op=op, left=a, right=b):
            p = _PREC[op]
            s = f"{expr(a, p)}{op}{expr(b, p, right=True)}"
            return f"({s})" if p < parent or (right and p == parent) else s
    raise AssertionError(e)


def _dims(ds: tuple[ast.Expr, ...]) -> str:
    if all(isinstance(d, ast.Num) and d.value.denominator == 1 for d in ds) and len(ds) > 1:
        return "x".join(str(d.value.numerator) for d in ds)  # type: ignore[union-attr]
    if len(ds) == 1:
        return expr(ds[0], 3)
    raise AssertionError("sizes with expressions have one axis")


def value(v: ast.Value) -> str:
    match v:
        case ast.DepthDims(depth=d, dims=ds):
            return f"{expr(d, 3)}@{_dims(ds)}"
        case ast.Size(dims=ds):
            return "x".join(map(str, ds))
        case ast.Tuple(items=items):
            return "(" + ", ".join(expr(i) for i in items) + ")"
        case ast.Str(value=s):
            return f'"{s}"'
    return expr(v)  # type: ignore[arg-type]


def _alias(a: str | None) -> str:
    return f" as {a}" if a else ""


def item(it: ast.Item, indent: str) -> str:
    match it:
        case ast.Layer(op=op, args=args, alias=al):
            parts = [op] + [(f"{a.key}=" if a.key else "") + value(a.value) for a in args]
            return " ".join(parts) + _alias(al)
        case ast.Call(block=b, args=args, kwargs=kw, alias=al):
            inner = [expr(a) for a in args] + [f"{k}={expr(v)}" for k, v in kw]
            return f"{b}(" + ", ".join(inner) + ")" + _alias(al)
        case ast.Residual(body=body, project=proj, alias=al):
            s = "residual " + braced(body, indent)
            if proj is not None:
                s += " project " + braced(proj, indent)
            return s + _alias(al)
        case ast.Branches(kind=k, branches=bs, alias=al):
            inner = indent + "  "
            lines = [f"{k} {{"]
            for i, b in enumerate(bs):
                lines.append(inner + ("| " if i else "  ") + chain(b, inner + "  "))
            lines.append(indent + "}")
            return "\n".join(lines) + _alias(al)
        case ast.MergeRef(kind=k, ref=r, alias=al):
            return f"{k} {r}" + _alias(al)
        case ast.Save(name=n):
            return f"save {n}"
        case ast.Repeat(count=c, body=body):
            return f"repeat {expr(c)} " + braced(body, indent)
    raise AssertionError(it)


def braced(c: ast.Chain, indent: str) -> str:
    inner = indent + "  "
    return "{\n" + inner + chain(c, inner) + "\n" + indent + "}"


def chain(c: ast.Chain, indent: str, *, top: bool = False) -> str:
    sep = "\n" + indent + "-> " if top else " -> "
    return sep.join(item(i, indent) for i in c.items)


def _setting_value(v: object) -> str:
    if isinstance(v, ast.SettingCall):
        inner = [value(a) for a in v.args] + [f"{k}={value(x)}" for k, x in v.kwargs]
        return f"{v.name}(" + ", ".join(inner) + ")"
    return value(v)  # type: ignore[arg-type]


def format_module(m: ast.Module) -> str:
    out: list[str] = []
    if m.name:
        out.append(f"network {m.name}")
    for b in m.blocks:
        params = ", ".join(p.name + (f"={expr(p.default)}" if p.default is not None else "") for p in b.params)
        out.append(f"block {b.name}({params}) " + braced(b.body, ""))
    if m.input is not None:
        shape = expr(m.input.depth, 3) + (f"@{_dims(m.input.dims)}" if m.input.dims else "")
        out.append(f"input {shape}")
    if m.chain is not None:
        out.append(chain(m.chain, "", top=True))
    if m.train:
        out.append("train {\n" + "\n".join(f"  {s.key} = {_setting_value(s.value)}" for s in m.train) + "\n}")
    return "\n".join(out) + "\n"
