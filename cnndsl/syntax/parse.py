"""Text -> `ast.Module`, with positions, and Lark's errors rewritten into words.

The grammar (`grammar/cnn.lark`) only knows structure; which layer names and options exist
is checked later against the op registry.
"""

from __future__ import annotations

import functools
import re
from fractions import Fraction
from importlib import resources
from pathlib import Path

import lark
from lark import Token, Transformer, v_args

from ..errors import CnnSyntaxError, Source, Span
from . import ast
from .values import RANGE_HINT, out_of_range

# Lark terminal names -> what a user would call them.
_TOKEN_WORDS = {
    "ARROW": "`->`",
    "NAME": "a name",
    "CALLNAME": "a block call like `name(`",
    "NUMBER": "a number",
    "SIZE": "a size like `5x5`",
    "STRING": "a quoted string",
    "LBRACE": "`{`",
    "RBRACE": "`}`",
    "LPAR": "`(`",
    "RPAR": "`)`",
    "COMMA": "`,`",
    "EQUAL": "`=`",
    "AT": "`@`",
    "VBAR": "`|`",
    "STAR": "`*`",
    "SLASH": "`/`",
    "DSLASH": "`//`",
    "PLUS": "`+`",
    "MINUS": "`-`",
    "$END": "end of input",
    "LAYER": "a layer",
    "RESIDUAL": "`residual`",
    "PROJECT": "`project`",
    "CONCAT": "`concat`",
    "ADD": "`add`",
    "MUL": "`mul`",
    "COLON": "`:`",
    "XSIZE": "`x` and a number",
    "XJOIN": "`x(`",
    "SAVE": "`save`",
    "REPEAT": "`repeat`",
    "NETWORK": "`network`",
    "INPUT": "`input`",
    "BLOCK": "`block`",
    "TRAIN": "`train`",
    "AS": "`as`",
}


def grammar_text() -> str:
    """The grammar shipped in the wheel (`cnndsl/grammar/cnn.lark`), or the source tree's."""
    packaged = resources.files("cnndsl").joinpath("grammar/cnn.lark")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "grammar" / "cnn.lark").read_text(encoding="utf-8")


@functools.cache
def _parser() -> lark.Lark:
    # Built afresh each run (~50 ms), never cached: Lark's `cache=True` unpickles a file in the
    # shared temp dir that another local user can plant (code execution). Nothing is unpickled.
    return lark.Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True)


# Literals with more digits (or a larger exponent) than this are refused from their text:
# Python would spend seconds converting `1e99999999` exactly. The rest must be in `MAX_VALUE`.
_MAX_DIGITS = 30


def _fraction(text: str, span: Span) -> Fraction:
    mantissa, _, exponent = text.lower().partition("e")
    digits = mantissa.replace(".", "").lstrip("0")
    long = len(digits) > _MAX_DIGITS or len(exponent.lstrip("+-0")) > 2
    if long or (exponent and abs(int(exponent)) > _MAX_DIGITS) or out_of_range(value := Fraction(text)):
        raise CnnSyntaxError(f"the number `{text}` is out of range", span, hints=[RANGE_HINT])
    return value


def _span(meta_or_tok: object) -> Span:
    m = meta_or_tok
    return Span(m.line, m.column, m.end_line, m.end_column)  # type: ignore[attr-defined]


@v_args(meta=True)
class _ToAst(Transformer):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def _text(self, meta: object) -> str:
        return self.text[meta.start_pos : meta.end_pos]  # type: ignore[attr-defined]

    # expressions
    def number(self, meta, c):
        return ast.Num(value=_fraction(str(c[0]), _span(meta)), text=str(c[0]), span=_span(meta))

    def var(self, meta, c):
        return ast.Var(name=str(c[0]), span=_span(meta))

    def _bin(op):  # a factory used in the class body
        def rule(self, meta, c):
            return ast.BinOp(op=op, left=c[0], right=c[-1], span=_span(meta))

        return rule

    add, sub, mul, div, floordiv = _bin("+"), _bin("-"), _bin("*"), _bin("/"), _bin("//")

    def neg(self, meta, c):
        return ast.Neg(operand=c[0], span=_span(meta))

    def func(self, meta, c):
        args, kwargs = [], []
        for a in c[1:]:
            if isinstance(a, tuple):
                kwargs.append(a)
            elif a is not None:
                args.append(a)
        return ast.Func(name=str(c[0])[:-1], args=tuple(args), kwargs=tuple(kwargs), span=_span(meta))

    # values
    def size_part(self, meta, c):
        (tok,) = c
        return tuple(ast.Num(value=_fraction(v, _span(tok)), text=v) for v in str(tok).strip("x").split("x"))

    def dimjoin(self, meta, c):
        return (c[1],)

    def dims(self, meta, c):
        out: list[ast.Expr] = []
        for part in c:
            out.extend(part if isinstance(part, tuple) else (part,))
        return tuple(out)

    def size_expr(self, meta, c):
        dims = self.dims(meta, c)
        if all(isinstance(d, ast.Num) and d.value.denominator == 1 for d in dims):
            return ast.Size(dims=tuple(int(d.value) for d in dims), span=_span(meta))  # `3x(4)` is `3x4`
        return ast.SizeExpr(dims=dims, span=_span(meta))

    def range(self, meta, c):
        return ast.Range(start=c[0], stop=c[1], span=_span(meta))

    def depth_dims(self, meta, c):
        return ast.DepthDims(depth=c[0], dims=c[1], span=_span(meta))

    def size(self, meta, c):
        return ast.Size(dims=tuple(int(_fraction(v, _span(meta))) for v in str(c[0]).split("x")), span=_span(meta))

    def tuple(self, meta, c):
        return ast.Tuple(items=tuple(c), span=_span(meta))

    def string(self, meta, c):
        return ast.Str(value=str(c[0])[1:-1], span=_span(meta))

    def positional(self, meta, c):
        return ast.Arg(key=None, value=c[0], text=self._text(meta), span=_span(meta))

    def option(self, meta, c):
        return ast.Arg(key=str(c[0]), value=c[1], text=self._text(meta), span=_span(meta))

    # layers and composition
    def alias(self, meta, c):
        return str(c[0])

    def layer(self, meta, c):
        alias = c[-1] if c and isinstance(c[-1], str) and not isinstance(c[-1], Token) else None
        args = tuple(a for a in c[1:] if isinstance(a, ast.Arg))
        return ast.Layer(op=str(c[0]), args=args, alias=alias, span=_span(meta))

    def callarg(self, meta, c):
        return c[0]

    def kwarg(self, meta, c):
        return (str(c[0]), c[1])

    def call(self, meta, c):
        name = str(c[0])[:-1]
        alias = c[-1] if isinstance(c[-1], str) and not isinstance(c[-1], Token) else None
        args, kwargs = [], []
        for a in c[1:]:
            if isinstance(a, tuple):
                kwargs.append(a)
            elif a is not None and not isinstance(a, str):
                args.append(a)
        return ast.Call(
            block=name,
            args=tuple(args),
            kwargs=tuple(kwargs),
            alias=alias,
            text=self._text(meta),
            span=_span(meta),
        )

    def residual(self, meta, c):
        chains = [x for x in c if isinstance(x, ast.Chain)]
        alias = c[-1] if isinstance(c[-1], str) and not isinstance(c[-1], Token) else None
        return ast.Residual(
            body=chains[0],
            project=chains[1] if len(chains) > 1 else None,
            alias=alias,
            span=_span(meta),
        )

    def merge_branches(self, meta, c):
        alias = c[-1] if isinstance(c[-1], str) and not isinstance(c[-1], Token) else None
        chains = tuple(x for x in c if isinstance(x, ast.Chain))
        return ast.Branches(kind=str(c[0]), branches=chains, alias=alias, span=_span(meta))

    def merge_ref(self, meta, c):
        alias = c[2] if len(c) > 2 and c[2] is not None else None
        return ast.MergeRef(kind=str(c[0]), ref=str(c[1]), alias=alias and str(alias), span=_span(meta))

    def save(self, meta, c):
        return ast.Save(name=str(c[1]), span=_span(meta))

    def repeat(self, meta, c):
        index = str(c[2]) if len(c) == 4 else None
        return ast.Repeat(count=c[1], body=c[-1], index=index, span=_span(meta))

    def chain(self, meta, c):
        items = tuple(x for x in c if not isinstance(x, Token))
        return ast.Chain(items=items, span=_span(meta))

    # declarations
    def spatial_shape(self, meta, c):
        return ast.ShapeSpec(depth=c[0], dims=c[1], span=_span(meta))

    def flat_shape(self, meta, c):
        return ast.ShapeSpec(depth=c[0], dims=(), span=_span(meta))

    def input(self, meta, c):
        return ("input", c[0], _span(meta))

    def network(self, meta, c):
        return ("network", str(c[0]), _span(meta))

    def param(self, meta, c):
        return ast.Param(name=str(c[0]), default=c[1], span=_span(meta))

    def block_def(self, meta, c):
        params = tuple(p for p in c[1:-1] if p is not None)
        return ast.BlockDef(name=str(c[0])[:-1], params=params, body=c[-1], span=_span(meta))

    def setting(self, meta, c):
        v = c[1]
        if isinstance(v, ast.Func):  # `optimizer = sgd(lr=0.1)`
            v = ast.SettingCall(name=v.name, args=v.args, kwargs=v.kwargs, span=v.span)
        return ast.Setting(key=str(c[0]), value=v, span=_span(meta))

    def train(self, meta, c):
        return ("train", tuple(c), _span(meta))

    def start(self, meta, c):
        name = inp = chain = None
        blocks: list[ast.BlockDef] = []
        train: tuple[ast.Setting, ...] = ()
        seen: dict[str, Span] = {}
        for d in c:
            if isinstance(d, ast.Chain):
                chain = d
                continue
            if isinstance(d, ast.BlockDef):
                blocks.append(d)
                continue
            kind, value, span = d
            if kind in seen:
                prev = seen[kind]
                raise CnnSyntaxError(
                    f"`{kind}` is given twice",
                    span,
                    notes=[f"the first `{kind}` is at {prev}"],
                    hints=[f"a file has one `{kind}` line"],
                )
            seen[kind] = span
            if kind == "network":
                name = value
            elif kind == "input":
                inp = value
            else:
                train = value
        if inp is not None:
            _check_input(inp, chain)
        return ast.Module(name=name, input=inp, blocks=tuple(blocks), chain=chain, train=train)


def _check_input(inp: ast.ShapeSpec, chain: ast.Chain | None) -> None:
    """Catch `input 28x28` (read as `input 28` and a layer `x28`) and `input` with no shape."""
    first = chain.items[0] if chain is not None and chain.items else None
    if (
        not inp.dims
        and isinstance(inp.depth, ast.Num)
        and isinstance(first, ast.Layer)
        and first.op[:1] == "x"
        and first.op[1:].replace("x", "").isdigit()
        and (first.span.line, first.span.column) == (inp.span.end_line, inp.span.end_column)
    ):
        size = inp.depth.text + first.op
        raise CnnSyntaxError(
            f"the input shape `{size}` has no depth",
            Span(inp.span.line, inp.span.column, inp.span.line, inp.span.end_column + len(first.op)),
            hints=[_depth_hint(size)],
        )
    if not inp.dims and isinstance(inp.depth, ast.Var):
        raise CnnSyntaxError(
            f"`input` needs a shape, got `{inp.depth.name}`",
            inp.span,
            hints=["write the shape as depth@width x height, like `input 1@28x28`, or a length, like `input 120`"],
        )


def _depth_hint(size: str) -> str:
    """`28x28x3` (height x width x channels, as tutorials write it) and `3x28x28` (PyTorch's
    C x H x W) both mean `3@28x28`: a first or last axis of 1, 3 or 4 is taken as the depth."""
    dims = size.split("x")
    if len(dims) == 3:
        depth, rest = (dims[-1], dims[:-1]) if dims[-1] in ("1", "3", "4") else (dims[0], dims[1:])
        if depth in ("1", "3", "4"):
            shape = f"{depth}@{'x'.join(reversed(rest))}"  # written H x W: cnndsl puts width first
            return f"write depth@width x height: `input {shape}` (depth {depth}, width {rest[1]}, height {rest[0]})"
    return f"write depth@width x height: `input 1@{size}` for one channel, `input 3@{size}` for RGB"


def parse(text: str, path: str = "<string>") -> ast.Module:
    """Parse `.cnn` text. Raises `CnnSyntaxError` (with the source attached) on bad input."""
    source = Source(text, path)
    try:
        tree = _parser().parse(text)
        _check_depth(tree)
        return _ToAst(text).transform(tree)
    except CnnSyntaxError as e:
        raise e.with_source(source) from None
    except lark.exceptions.VisitError as e:
        if isinstance(e.orig_exc, CnnSyntaxError):
            raise e.orig_exc.with_source(source) from None
        raise
    except lark.exceptions.UnexpectedInput as e:
        raise _syntax_error(e, text).with_source(source) from None


# Deeper trees would overflow Python's stack in the (recursive) transformer and passes.
_MAX_DEPTH = 200


def _check_depth(tree: lark.Tree) -> None:
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > _MAX_DEPTH:
            meta = node.meta
            raise CnnSyntaxError(
                f"the text is nested too deeply here (more than {_MAX_DEPTH} levels)",
                Span(meta.line, meta.column, meta.line, meta.column + 1) if not meta.empty else None,
                hints=["split long expressions, or deeply nested bodies, into blocks"],
            )
        stack.extend((c, depth + 1) for c in node.children if isinstance(c, lark.Tree))


# Layer-start and declaration tokens, as grouped in messages.
_LAYER_START = {"NAME", "CALLNAME", "RESIDUAL", "CONCAT", "ADD", "MUL", "SAVE", "REPEAT"}
_DECLS = {"$END", "NETWORK", "INPUT", "BLOCK", "TRAIN"}
_VALUE_START = {"LPAR", "MINUS", "NAME", "NUMBER", "SIZE", "CALLNAME"}


def _describe_expected(expected: set[str]) -> str:
    expected = expected - {"XSIZE", "XJOIN"}  # a size's `x1` tail: never what was meant
    if {"NAME", "CALLNAME", "RESIDUAL"} <= expected:
        expected = (expected - _LAYER_START) | {"LAYER"}
    elif "ARROW" in expected and {"NAME", "NUMBER"} <= expected:
        # after a layer's arguments: more arguments, `as NAME`, or the next layer
        expected = (expected - _DECLS - _VALUE_START - {"AS"}) | {"__ARGUMENT"}
    elif {"NUMBER", "NAME"} <= expected and not expected - _VALUE_START:
        return "a number" + (", a size" if "SIZE" in expected else "") + " or a name"
    words = sorted({_TOKEN_WORDS.get(t, f"`{t.lower()}`") for t in expected if not t.startswith("__")})
    if "__ARGUMENT" in expected:
        words.append("another argument")
    if not words:
        return "something else"
    if len(words) > 6:
        words = words[:6] + ["..."]
    return ", ".join(words[:-1]) + (" or " if len(words) > 1 else "") + words[-1]


def _pos(text: str, line: int, col: int) -> int:
    """Offset of a 1-based line and column."""
    starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
    return starts[min(line, len(starts)) - 1] + col - 1


def _code(text: str) -> str:
    """`text` with comments and strings blanked out (same length), to count brackets."""
    return re.sub(r'#[^\n]*|"[^"\n]*"', lambda m: " " * len(m[0]), text)


def _open_brackets(code: str, upto: int, pair: str = "{}") -> list[int]:
    """Offsets of the brackets (`{` by default) still open at `upto`."""
    stack: list[int] = []
    for i, ch in enumerate(code[:upto]):
        if ch == pair[0]:
            stack.append(i)
        elif ch == pair[1] and stack:
            stack.pop()
    return stack


def _line_col(text: str, pos: int) -> tuple[int, int]:
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


def _prev_word(code: str, pos: int) -> str:
    """The word or symbol just before `pos` (comments already blanked)."""
    before = code[:pos].rstrip()
    if before.endswith("->"):
        return "->"
    i = len(before)
    while i > 0 and (before[i - 1].isalnum() or before[i - 1] == "_"):
        i -= 1
    return before[i:] or before[-1:]


# Characters that look like `-` or a space but are not: named in the hint.
_DASHES = {
    c: f"`{c}` is {name} (U+{ord(c):04X}), not a hyphen-minus"
    for c, name in (
        ("\u2010", "a hyphen"),
        ("\u2011", "a non-breaking hyphen"),
        ("\u2012", "a figure dash"),
        ("\u2013", "an en dash"),
        ("\u2014", "an em dash"),
        ("\u2015", "a horizontal bar"),
        ("\u2212", "a minus sign"),
    )
}
_SPACES = {
    "\u00a0": "a non-breaking space",
    "\u2007": "a figure space",
    "\u202f": "a narrow non-breaking space",
    "\u2009": "a thin space",
    "\u200b": "a zero-width space",
    "\u3000": "an ideographic space",
}
# Words that begin a new part of a file: met while a `{` is open, that `{` was never closed.
_SECTION_WORDS = ("train", "block", "input", "network")


def _shown(ch: str) -> str:
    return f"`{ch}`" if ch.isprintable() and not ch.isspace() else f"U+{ord(ch):04X}"


def _syntax_error(e: lark.exceptions.UnexpectedInput, text: str) -> CnnSyntaxError:
    code = _code(text)
    line, col = e.line, e.column
    if isinstance(e, lark.exceptions.UnexpectedCharacters):
        pos = e.pos_in_stream
        ch = text[pos] if pos < len(text) else ""
        span = Span(line, col, line, col + 1)
        hints = []
        if ch in "→⇒⟶":
            hints.append("layers are chained with `->`")
        elif ch == ">":
            if text[max(pos - 2, 0) : pos] == "--":
                hints.append("layers are chained with `->` (one `-`)")
            else:
                hints.append("layers are chained with `->`")
        elif ch == "×":
            hints.append("write sizes with a plain `x`: `5x5`")
        elif ch in "'\"":
            hints.append("names and options are written without quotes")
        elif ch == ";":
            hints.append("layers are chained with `->`; there is no `;`")
        elif ch == ":":
            hints.append("options are written `name=value` (like `stride=2`) or short (`s2`)")
        elif ch in "[]":
            hints.append("lists are written in parentheses: `(0.5, 0.5, 0.5)`")
        elif ch in _DASHES:
            arrow = text[pos + 1 : pos + 2] == ">"
            hints.append(
                f"{_DASHES[ch]} (a word processor's autocorrect?): "
                + ("layers are chained with `->`, a plain hyphen-minus and `>`" if arrow else "write a plain `-`")
            )
        elif ch in _SPACES:
            hints.append(f"this is {_SPACES[ch]}, often pasted from a web page or a document: type a plain space")
        shown = _shown(ch) + (f" ({_SPACES[ch]})" if ch in _SPACES else "")
        return CnnSyntaxError(f"unexpected character {shown}", span, hints=hints)

    tok = getattr(e, "token", None)
    expected = set(getattr(e, "accepts", None) or getattr(e, "expected", None) or [])
    if tok is None or tok.type == "$END":
        return _end_error(text, code, tok, expected)

    word = str(tok)
    span = Span(tok.line, tok.column, tok.end_line or tok.line, tok.end_column or tok.column + len(word))
    pos = tok.start_pos if tok.start_pos is not None else _pos(text, tok.line, tok.column)
    prev = _prev_word(code, pos)
    depth = len(_open_brackets(code, pos))
    message = f"unexpected `{word}`, expected {_describe_expected(expected)}"
    hints: list[str] = []
    t = tok.type
    network = re.search(r"\bnetwork\s+input\s*$", code[:pos])
    if network and t in ("NUMBER", "NAME"):
        line, col = _line_col(text, network.start())
        span = Span(line, col, line, col + len("network"))
        message, hints = "`network` needs a name", ["write `network MyNet`, or leave the line out"]
        notes = ["it took `input` as the name"]
        return CnnSyntaxError(message, span, notes=notes, hints=hints)
    shapeless = re.search(r"\binput\s+([A-Za-z_][A-Za-z0-9_]*)\s*$", code[:pos])
    if shapeless and "AT" in expected:
        line, col = _line_col(text, shapeless.start())
        return CnnSyntaxError(
            "`input` needs a shape",
            Span(line, col, line, col + len("input")),
            notes=[f"it took `{shapeless[1]}` as the shape"],
            hints=["write the shape as depth@width x height, like `input 1@28x28`, or a length, like `input 120`"],
        )
    opened = _open_brackets(code, pos)
    if opened and "RBRACE" in expected and word in _SECTION_WORDS:
        line, col = _line_col(text, opened[-1])
        return CnnSyntaxError(
            "this `{` is never closed",
            Span(line, col, line, col + 1),
            notes=[f"`{word}` at {tok.line}:{tok.column} begins a new part of the file while it is still open"],
            hints=[f"add `}}` where its body ends, before line {tok.line}"],
        )
    parens = _open_brackets(code, pos, "()")
    if parens and "RPAR" in expected and t in ("NAME", "RBRACE", "CALLNAME"):
        line, col = _line_col(text, parens[-1])
        if t == "RBRACE" or tok.line > line:  # on the opener's line a missing `,` is likelier
            return CnnSyntaxError(
                "this `(` is not closed",
                Span(line, col, line, col + 1),
                notes=[f"`{word}` at {tok.line}:{tok.column} comes while it is still open"],
                hints=[f"is a `)` missing before `{word}` at {tok.line}:{tok.column}?"],
            )
    if prev == "block" and t == "NAME":
        message = f"`block {word}` needs a parameter list"
        hints = [f"write `block {word}(c) {{ ... }}`, or `block {word}() {{ ... }}` with no parameters"]
    elif prev in ("save", "as") and expected == {"NAME"}:
        example = "save skip` (merged later with `concat skip`)" if prev == "save" else "conv 6@5x5 as c1`"
        message, hints = f"`{prev}` needs a name", [f"like `{example}"]
    elif t == "STRING" and "STRING" not in expected:
        hints.append(f"names and options are written without quotes: `{word[1:-1]}`")
    elif t == "EQUAL" and text[pos : pos + 2] == "=>":
        span = Span(tok.line, tok.column, tok.line, tok.column + 2)
        message, hints = "`=>` is not an arrow", ["layers are chained with `->`"]
    elif t == "ARROW" and "ARROW" not in expected:
        if "RPAR" in expected:
            opened = _open_brackets(code, pos, "()")
            if opened:
                line, col = _line_col(text, opened[-1])
                span = Span(line, col, line, col + 1)
            message, hints = "this `(` is not closed", [f"is a `)` missing before the `->` at {tok.line}:{tok.column}?"]
        elif "$END" in expected and not _LAYER_START & expected:
            message = "`->` after the end of the chain"
            hints = ["the layers form one chain joined by `->`; write `block`, `input` and `network` lines before it"]
        elif prev == "->":
            message, hints = "two `->` in a row", ["remove one of them"]
        elif _LAYER_START <= expected and prev in ("{", "|"):
            message, hints = "a body cannot start with `->`", [f"write the first layer right after `{prev}`"]
        elif _LAYER_START <= expected:
            message = "the layers cannot start with `->`"
            hints = ["remove it: the first layer follows the `input` line without an arrow"]
        else:
            hints.append("an arrow must have a layer on both sides")
    elif t == "RBRACE" and "RBRACE" not in expected:
        if depth == 0:
            message, hints = "unexpected `}`: there is no `{` to close", ["remove it, or add the `{` it should close"]
        elif prev in ("{", "|"):
            message = "an empty branch" if prev == "|" else "an empty body `{ }`"
            hints = ["write at least one layer; `identity` passes its input through"]
        else:
            hints.append("a `}` closes a `{` that was not opened, or a branch is empty")
    elif t == "VBAR":
        if depth == 0:
            message = "`|` outside `concat { ... }` or `add { ... }`"
            hints = ["`|` separates the branches of `concat { a | b }` and `add { a | b }`; layers are joined by `->`"]
        elif prev in ("{", "|"):
            message, hints = "an empty branch", ["write at least one layer; `identity` passes its input through"]
        else:
            hints.append("`|` separates branches inside `concat { ... }` or `add { ... }`")
    elif t == "COMMA" and not _open_brackets(code, pos, "()"):
        hints.append("layers are chained with `->`, not `,`")
    elif t in ("STAR", "PLUS") and prev[-1:].isdigit() and "ARROW" in expected:
        hints.append("write sizes with `x`: `3x3`")
    elif t == "CALLNAME" and "CALLNAME" not in expected:
        hints.append(f"is an `->` missing before `{word[:-1]}(`?")
    elif t == "LBRACE" and "LBRACE" not in expected:
        if prev == "project":
            message = "`project { ... }` must follow a `residual { ... }`"
            hints = ["write `residual { body } project { shortcut }`"]
        elif prev == "repeat":
            message, hints = "`repeat` needs a count", ["write `repeat 3 { ... }`"]
        elif "RPAR" in expected:
            hints.append("is a `)` missing before it?")
        else:
            hints.append("`{` opens the body of `block`, `residual`, `project`, `concat`, `add`, `repeat` or `train`")
    elif t == "NAME" and re.fullmatch(r"x[0-9]+(x[0-9]+)*", word):
        hints.append("a size like `3x3` cannot go here: write one number")
    elif t in ("NAME", "NUMBER", "CALLNAME") and _LAYER_START & expected == set() and "$END" in expected:
        message = f"unexpected `{word}` after the end of the chain"
        hints = ["the layers form one chain joined by `->`; write `block`, `input` and `network` lines before it"]
    return CnnSyntaxError(message, span, hints=hints)


def _end_error(text: str, code: str, tok: Token | None, expected: set[str]) -> CnnSyntaxError:
    """The text ends too early: a trailing `->`, an unclosed `{`, or a half-written line."""
    lines = text.rstrip().split("\n")
    last, end = len(lines), len(lines[-1]) + 1
    at_end = Span(last, max(end - 1, 1), last, end)
    open_ = _open_brackets(code, len(code))
    if tok is not None and code.rstrip().endswith("->"):
        i = code.rstrip().rfind("->")
        line, col = _line_col(text, i)
        return CnnSyntaxError(
            "the chain ends with `->`",
            Span(line, col, line, col + 2),
            hints=["add a layer after it, or remove the arrow"],
        )
    if open_:
        line, col = _line_col(text, open_[-1])
        n = len(open_)
        return CnnSyntaxError(
            "this `{` is never closed",
            Span(line, col, line, col + 1),
            notes=[f"the file ends at {last}:{end} while {'it is' if n == 1 else f'{n} bodies are'} still open"],
            hints=["add `}` where its body ends"],
        )
    return CnnSyntaxError(f"unexpected end of input, expected {_describe_expected(expected)}", at_end)
