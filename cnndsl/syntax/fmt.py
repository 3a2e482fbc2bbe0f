"""AST -> canonical `.cnn` text (`cnndsl fmt`). `parse(format_module(m)) == m`.

Canonical form: `network`, then blocks, then `input`, then the chain, then `train`.
Arguments keep their written form (`s1`, `stride=s`); expressions print with the parentheses
they need. Given the source text (`format_source`), the formatter also keeps what a reader
put there on purpose, as gofmt does: every comment (re-attached to the code next to it),
single blank lines between statements, where the chain breaks into lines, and whether a
`{ body }` was written on one line. Without it (an AST built in code) every top-level item
gets its own line and every body its own block.

How comments are kept: while printing, each statement, chain item and train setting is
wrapped in invisible markers that carry the source position of its start and end. Once the
text is laid out, the markers give each source position an output line: a trailing comment
goes to the end of the output line of the code just before it, a comment on its own line
goes on its own line before the code just after it. The result is a fixed point:
formatting it again changes nothing.
"""

from __future__ import annotations

import bisect
import contextvars
import re
from dataclasses import dataclass, field

from . import ast

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "//": 2}


def expr(e: ast.Expr, parent: int = 0, right: bool = False, *, spaced: bool = False) -> str:
    """`e` with the parentheses it needs; `spaced` puts blanks around `+` and `-` (not in
    layer arguments, which blanks separate: `repeat n - 1 {`, but `conv c+1@3x3`)."""
    match e:
        case ast.Num(value=v, text=t):
            return t or (str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}")
        case ast.Var(name=n):
            return n
        case ast.Neg(operand=o):
            return "-" + expr(o, 3, spaced=spaced)
        case ast.BinOp(op=op, left=a, right=b):
            p = _PREC[op]
            sep = f" {op} " if spaced and p == 1 else op
            s = f"{expr(a, p, spaced=spaced)}{sep}{expr(b, p, right=True, spaced=spaced)}"
            if p < parent or (right and p == parent):  # blanks are safe inside parentheses
                return f"({expr(e, spaced=True)})" if not spaced else f"({s})"
            return s
        case ast.Func(name=n, args=args, kwargs=kw):
            return f"{n}(" + ", ".join([*(expr(a) for a in args), *(f"{k}={expr(a)}" for k, a in kw)]) + ")"
    raise AssertionError(e)


def _dims(ds: tuple[ast.Expr, ...]) -> str:
    if all(isinstance(d, ast.Num) and d.value.denominator == 1 for d in ds) and len(ds) > 1:
        return "x".join(str(d.value.numerator) for d in ds)  # type: ignore[union-attr]
    if len(ds) == 1:
        return expr(ds[0], 3)
    # `(k)x1`: an axis that is not a plain number is parenthesised (`kx1` would be a name)
    return "x".join(
        expr(d) if isinstance(d, ast.Func) or isinstance(d, ast.Num) and d.value.denominator == 1 else f"({expr(d)})"
        for d in ds
    )


def value(v: ast.Value) -> str:
    match v:
        case ast.DepthDims(depth=d, dims=ds):
            # `@` binds looser than arithmetic: `c*4@1x1` is (c*4)@1x1
            return f"{expr(d)}@{_dims(ds)}"
        case ast.Size(dims=ds):
            return "x".join(map(str, ds))
        case ast.SizeExpr(dims=ds):
            return _dims(ds)
        case ast.Range(start=a, stop=b):
            return f"{expr(a)}:{expr(b)}"
        case ast.Tuple(items=items):
            return "(" + ", ".join(value(i) for i in items) + ")"  # items: numbers or tuples (kernel rows)
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
            inner = [expr(a, spaced=True) for a in args] + [f"{k}={expr(v, spaced=True)}" for k, v in kw]
            return f"{b}(" + ", ".join(inner) + ")" + _alias(al)
        case ast.Residual(body=body, project=proj, alias=al):
            s = "residual " + braced(body, indent)
            if proj is not None:
                s += ("\n" + indent if _layout_breaks_before_project(body, proj) else " ") + "project "
                s += braced(proj, indent)
            return s + _alias(al)
        case ast.Branches(kind=k, branches=bs, alias=al):
            if _layout_inline(it):
                return f"{k} {{ " + " | ".join(chain(b, indent) for b in bs) + " }" + _alias(al)
            lines = [f"{k} {{"]  # branches indented by two, `|` under the `{`'s line
            for i, b in enumerate(bs):
                lines.append(indent + ("| " if i else "  ") + chain(b, indent + "  "))
            lines.append(indent + "}")
            return "\n".join(lines) + _alias(al)
        case ast.MergeRef(kind=k, ref=r, alias=al):
            return f"{k} {r}" + _alias(al)
        case ast.Save(name=n):
            return f"save {n}"
        case ast.Repeat(count=c, body=body, index=i):
            return f"repeat {expr(c, spaced=True)} " + (f"as {i} " if i else "") + braced(body, indent)
    raise AssertionError(it)


def braced(c: ast.Chain, indent: str) -> str:
    if _layout_body_inline(c):
        return "{ " + chain(c, indent) + " }"
    inner = indent + "  "
    return "{\n" + inner + chain(c, inner) + "\n" + indent + "}"


def chain(c: ast.Chain, indent: str, *, top: bool = False) -> str:
    out: list[str] = []
    for i, it in enumerate(c.items):
        if i:
            out.append("\n" + indent + "-> " if _layout_breaks_before(c.items[i - 1], it, top) else " -> ")
        out.append(_marked(it.span, item(it, indent)))
    return "".join(out)


def _setting_value(v: object) -> str:
    if isinstance(v, ast.SettingCall):
        inner = [value(a) for a in v.args] + [f"{k}={value(x)}" for k, x in v.kwargs]
        return f"{v.name}(" + ", ".join(inner) + ")"
    return value(v)  # type: ignore[arg-type]


def format_module(m: ast.Module, text: str | None = None) -> str:
    """Canonical text for `m`; pass the text `m` was parsed from to keep its comments and layout."""
    if text is None:
        return _module(m, None)
    layout = _Layout(text)
    token = _LAYOUT.set(layout)
    try:
        marked = _module(m, layout)
    finally:
        _LAYOUT.reset(token)
    return layout.weave(marked)


def format_source(text: str, path: str = "<string>") -> str:
    """Parse `.cnn` text and format it, comments kept. Raises `CnnSyntaxError` on bad text."""
    from .parse import parse

    return format_module(parse(text, path), text)


def _module(m: ast.Module, layout: _Layout | None) -> str:
    """Declarations in canonical order, or with a layout in the order written (the chain
    between those written before it and those after)."""
    decls: list[tuple[tuple[int, int], str]] = []  # (where it was written, text)

    def add(span: ast.Span | None, rank: int, text: str) -> None:
        where = (span.line, span.column) if layout is not None and span is not None and span.line else (rank, 0)
        decls.append((where, _marked(span, text)))

    if m.name:
        add(layout and layout.decl_span("network"), -3, f"network {m.name}")
    for b in m.blocks:
        params = ", ".join(
            p.name + (f"={expr(p.default, spaced=True)}" if p.default is not None else "") for p in b.params
        )
        add(b.span, -2, f"block {b.name}({params}) " + braced(b.body, ""))
    if m.input is not None:
        shape = expr(m.input.depth) + (f"@{_dims(m.input.dims)}" if m.input.dims else "")
        add(layout and layout.decl_span("input", until=m.input.span), -1, f"input {shape}")
    if m.chain is not None:
        add(m.chain.span, 0, chain(m.chain, "", top=True))
    train = layout and layout.decl_span("train", braces=True)
    if m.train or train:
        settings = "".join(f"\n  {_marked(s.span, f'{s.key} = {_setting_value(s.value)}')}" for s in m.train)
        add(train, 1 << 30, "train {" + settings + "\n}")
    return "\n".join(text for _, text in sorted(decls, key=lambda d: d[0])) + "\n"


# --- layout: what the source text says about lines, blank lines and comments ----------------
_LAYOUT: contextvars.ContextVar[_Layout | None] = contextvars.ContextVar("cnndsl_fmt_layout", default=None)

# Markers around printed code: START<n>END opens anchor n, STOP<n>END closes it. Control
# characters cannot occur in printed code (names, numbers and operators only; a string
# setting with one would be printed as written and still parse, markers aside).
_START, _STOP, _END = "\x01", "\x02", "\x03"
_MARKER = re.compile(f"[{_START}{_STOP}]([0-9]+){_END}")
_COMMENT_OR_STRING = re.compile(r'#[^\n]*|"[^"\n]*"')


def _marked(span: ast.Span | None, text: str) -> str:
    """`text` wrapped in markers for `span`'s start and end (or as is without a layout)."""
    layout = _LAYOUT.get()
    if layout is None or span is None or span.line == 0:
        return text
    a = layout.anchor((span.line, span.column))
    b = layout.anchor((span.end_line, span.end_column))
    return f"{_START}{a}{_END}{text}{_STOP}{b}{_END}"


def _layout_breaks_before(prev: ast.Item, it: ast.Item, top: bool) -> bool:
    """A chain item starts a new line where the source started it on a later line."""
    if _LAYOUT.get() is None or it.span.line == 0:
        return top
    return it.span.line > prev.span.end_line


def _layout_body_inline(c: ast.Chain) -> bool:
    """`{ a -> b }` stays on one line if it was written on one line after its `{`."""
    layout = _LAYOUT.get()
    if layout is None or c.span.line == 0 or c.span.line != c.span.end_line:
        return False
    return layout.line_of(layout.prev_code(layout.offset(c.span.line, c.span.column))) == c.span.line


def _layout_inline(it: ast.Branches) -> bool:
    layout = _LAYOUT.get()
    return layout is not None and it.span.line != 0 and it.span.line == it.span.end_line


def _layout_breaks_before_project(body: ast.Chain, proj: ast.Chain) -> bool:
    """`project {` starts its own line where the source put it below the residual's `}`."""
    layout = _LAYOUT.get()
    if layout is None or proj.span.line == 0:
        return False
    brace = layout.prev_code(layout.offset(proj.span.line, proj.span.column))  # `{`
    keyword = layout.code.rfind("project", 0, brace)
    close = layout.prev_code(keyword)  # the residual body's `}`
    return layout.line_of(keyword) > layout.line_of(close)


@dataclass(frozen=True, slots=True)
class _Comment:
    line: int
    column: int
    text: str
    own_line: bool  # nothing but blanks before it on its line


@dataclass
class _Layout:
    """The source text, its comments, and the anchors handed out while printing."""

    text: str
    code: str = ""  # text with comments and strings blanked (same length)
    lines: list[str] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    comments: list[_Comment] = field(default_factory=list)
    anchors: list[tuple[int, int]] = field(default_factory=list)  # (line, column) per anchor id

    def __post_init__(self) -> None:
        self.code = _COMMENT_OR_STRING.sub(lambda m: " " * len(m[0]), self.text)
        self.lines = self.text.split("\n")
        self.starts = [0]
        for ln in self.lines[:-1]:
            self.starts.append(self.starts[-1] + len(ln) + 1)
        for m in _COMMENT_OR_STRING.finditer(self.text):
            if m[0].startswith("#"):
                line = self.line_of(m.start())
                column = m.start() - self.starts[line - 1] + 1
                own = not self.text[self.starts[line - 1] : m.start()].strip()
                self.comments.append(_Comment(line, column, m[0].rstrip(), own))

    def anchor(self, pos: tuple[int, int]) -> int:
        self.anchors.append(pos)
        return len(self.anchors) - 1

    def offset(self, line: int, column: int) -> int:
        return self.starts[line - 1] + column - 1

    def line_of(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, max(offset, 0))

    def prev_code(self, offset: int) -> int:
        """Offset of the last non-blank code character before `offset` (-1 if none)."""
        i = offset - 1
        while i >= 0 and self.code[i].isspace():
            i -= 1
        return i

    def decl_span(self, word: str, *, until: ast.Span | None = None, braces: bool = False) -> ast.Span | None:
        """Where the declaration starting with keyword `word` is (the grammar never takes a
        keyword as a name): up to its name, to `until`, or with `braces` to the `}` closing
        the body after it."""
        m = re.search(rf"(?<![A-Za-z0-9_]){word}(?![A-Za-z0-9_])\s*[A-Za-z0-9_]*", self.code)
        if m is None:
            return None
        end = m.end()
        if until is not None:
            end = self.offset(until.end_line, until.end_column)
        elif braces:
            depth, i = 0, self.code.find("{", m.start())
            while 0 <= i < len(self.code):
                depth += {"{": 1, "}": -1}.get(self.code[i], 0)
                if depth == 0:
                    break
                i += 1
            end = i + 1 if i >= 0 else m.end()
        line, end_line = self.line_of(m.start()), self.line_of(max(end - 1, m.start()))
        return ast.Span(line, m.start() - self.starts[line - 1] + 1, end_line, end - self.starts[end_line - 1])

    def _blank_before(self, line: int) -> bool:
        """Whether the source has a blank line just before `line`, after some content."""
        return line > 2 and not self.lines[line - 2].strip() and any(s.strip() for s in self.lines[: line - 2])

    def weave(self, marked: str) -> str:
        """Strip the markers from `marked` and put the comments and blank lines back."""
        out_lines: list[str] = []
        where: dict[int, int] = {}  # anchor id -> output line
        first: dict[int, int] = {}  # output line -> the anchor printed first on it
        body = marked.rstrip("\n")
        for k, ln in enumerate(body.split("\n") if body else []):
            for m in _MARKER.finditer(ln):
                where[int(m[1])] = k
                first.setdefault(k, int(m[1]))
            out_lines.append(_MARKER.sub("", ln))
        placed = sorted((self.anchors[a], a) for a in where)
        keys = [p for p, _ in placed]
        leading: dict[int, list[_Comment]] = {}
        trailing: dict[int, list[_Comment]] = {}
        for c in self.comments:
            i = bisect.bisect_left(keys, (c.line, c.column))
            if c.own_line or not placed:
                target = where[placed[i][1]] if i < len(placed) else len(out_lines)
                leading.setdefault(target, []).append(c)
            else:
                j = i - 1 if i > 0 else 0
                trailing.setdefault(where[placed[j][1]], []).append(c)

        result: list[str] = []

        def emit(line: str, source_line: int | None) -> None:
            if source_line is not None and result and result[-1] and self._blank_before(source_line):
                result.append("")
            result.append(line)

        for k in range(len(out_lines) + 1):
            code = out_lines[k] if k < len(out_lines) else None
            indent = re.match(r"\s*", code).group() if code is not None else ""
            if code is not None and code.lstrip().startswith("}"):
                indent += "  "  # a comment at the end of a body stays inside it
            for c in leading.get(k, ()):
                emit(indent + c.text, c.line)
            if code is None:
                break
            anchor = first.get(k)
            if code.strip() and anchor is not None and self.anchors[anchor][0] > 0:
                src = self.anchors[anchor][0]
                source_line = src if not leading.get(k) or leading[k][-1].line < src else None
            else:
                source_line = None
            if k in trailing:
                cs = trailing[k]
                # the column the comment was written at, where the code before it is unchanged
                written = self.lines[cs[0].line - 1][: cs[0].column - 1]
                width = len(written) if written.rstrip() == code.rstrip() else len(code) + 2
                width = max(width, len(code) + 2)
                code = code.ljust(width) + "  ".join(c.text for c in cs)
            emit(code, source_line)
        return "\n".join(result) + "\n" if result else ""
