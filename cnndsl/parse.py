"""Text -> `ast.Module`, with positions, and Lark's errors rewritten into words.

The grammar (`grammar/cnn.lark`) only knows structure; which layer names and options exist
is checked later against the op registry.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from importlib import resources
from pathlib import Path

import lark
from lark import Token, Transformer, v_args

from . import ast
from .errors import CnnSyntaxError, Source, Span

# Lark terminal names -> what a user would call them.
_TOKEN_WORDS = {
    "ARROW": "`->`",
    "NAME": "a name",
    "CALLNAME": "a block call like `name(`",
    "NUMBER": "a number",
    "SIZE": "a size like `5x5`",
    "STRING": 'a quoted string',
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
    "PLUS": "`+`",
    "MINUS": "`-`",
    "$END": "end of input",
    "LAYER": "a layer",
    "RESIDUAL": "`residual`",
    "PROJECT": "`project`",
    "CONCAT": "`concat`",
    "ADD": "`add`",
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
    return (Path(__file__).resolve().parent.parent / "grammar" / "cnn.lark").read_text(
        encoding="utf-8"
    )


@functools.cache
def _parser() -> lark.Lark:
    # cache=True keeps the LALR tables in the temp dir (keyed by the grammar's hash): the
    # build takes ~50 ms, loading ~5 ms, and `cnndsl compile` should start fast.
    return lark.Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True, cache=True)


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
        return ast.Num(value=Fraction(str(c[0])), text=str(c[0]), span=_span(meta))

    def var(self, meta, c):
        return ast.Var(name=str(c[0]), span=_span(meta))

    def _bin(op):  # noqa: N805 - a factory used in the class body
        def rule(self, meta, c):
            return ast.BinOp(op=op, left=c[0], right=c[1], span=_span(meta))

        return rule

    add, sub, mul, div = _bin("+"), _bin("-"), _bin("*"), _bin("/")

    def neg(self, meta, c):
        return ast.Neg(operand=c[0], span=_span(meta))

    # values
    def dims(self, meta, c):
        (d,) = c
        if isinstance(d, Token):
            return tuple(ast.Num(value=Fraction(int(v)), text=v) for v in str(d).split("x"))
        return (d,)

    def depth_dims(self, meta, c):
        return ast.DepthDims(depth=c[0], dims=c[1], span=_span(meta))

    def size(self, meta, c):
        return ast.Size(dims=tuple(int(v) for v in str(c[0]).split("x")), span=_span(meta))

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
        return ast.Repeat(count=c[1], body=c[2], span=_span(meta))

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

    def scall(self, meta, c):
        args, kwargs = [], []
        for a in c[1:]:
            if isinstance(a, tuple):
                kwargs.append(a)
            elif a is not None:
                args.append(a)
        return ast.SettingCall(
            name=str(c[0])[:-1], args=tuple(args), kwargs=tuple(kwargs), span=_span(meta)
        )

    def setting(self, meta, c):
        return ast.Setting(key=str(c[0]), value=c[1], span=_span(meta))

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
        return ast.Module(name=name, input=inp, blocks=tuple(blocks), chain=chain, train=train)


def parse(text: str, path: str = "<string>") -> ast.Module:
    """Parse `.cnn` text. Raises `CnnSyntaxError` (with the source attached) on bad input."""
    source = Source(text, path)
    try:
        tree = _parser().parse(text)
        return _ToAst(text).transform(tree)
    except lark.exceptions.VisitError as e:
        if isinstance(e.orig_exc, CnnSyntaxError):
            raise e.orig_exc.with_source(source) from None
        raise
    except lark.exceptions.UnexpectedInput as e:
        raise _syntax_error(e, text).with_source(source) from None


def _describe_expected(expected: set[str]) -> str:
    if {"NAME", "CALLNAME", "RESIDUAL"} <= expected:
        expected = (expected - {"NAME", "CALLNAME", "RESIDUAL", "CONCAT", "ADD", "SAVE", "REPEAT"}) | {"LAYER"}
    words = sorted({_TOKEN_WORDS.get(t, f"`{t.lower()}`") for t in expected if not t.startswith("__")})
    if not words:
        return "something else"
    if len(words) > 6:
        words = words[:6] + ["..."]
    return ", ".join(words[:-1]) + (" or " if len(words) > 1 else "") + words[-1]


def _syntax_error(e: lark.exceptions.UnexpectedInput, text: str) -> CnnSyntaxError:
    line, col = e.line, e.column
    if isinstance(e, lark.exceptions.UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else ""
        hints = []
        if ch in "→⇒":
            hints.append("layers are chained with `->`")
        elif ch == "=" and text[e.pos_in_stream : e.pos_in_stream + 2] == "=>":
            hints.append("layers are chained with `->`, not `=>`")
        elif ch == "×":
            hints.append("write sizes with a plain `x`: `5x5`")
        elif ch == ">":
            hints.append("layers are chained with `->`")
        elif ch in "'\"":
            hints.append("names and options are written without quotes")
        return CnnSyntaxError(
            f"unexpected character `{ch}`",
            Span(line, col, line, col + 1),
            hints=hints,
        )
    if isinstance(e, lark.exceptions.UnexpectedEOF) or getattr(e, "token", None) is None or e.token.type == "$END":  # type: ignore[union-attr]
        lines = text.rstrip().splitlines() or [""]
        last = len(lines)
        end = len(lines[-1]) + 1
        expected = _describe_expected(set(getattr(e, "expected", None) or getattr(e, "accepts", None) or []))
        hints = []
        if text.count("{") > text.count("}"):
            hints.append("a `{` is not closed with `}`")
        elif text.rstrip().endswith("->"):
            hints.append("a chain cannot end with `->`: add a layer after it or remove the arrow")
        return CnnSyntaxError(
            f"unexpected end of input, expected {expected}",
            Span(last, max(end - 1, 1), last, end),
            hints=hints,
        )
    tok = e.token  # type: ignore[union-attr]
    expected = set(getattr(e, "accepts", None) or e.expected or [])
    word = str(tok)
    span = Span(tok.line, tok.column, tok.end_line or tok.line, tok.end_column or tok.column + len(word))
    hints = []
    if tok.type == "ARROW" and "ARROW" not in expected:
        hints.append("an arrow must have a layer on both sides")
    if tok.type == "NUMBER" and word.isdigit() and "SIZE" not in expected:
        pass
    if tok.type == "RBRACE" and "RBRACE" not in expected:
        hints.append("a `}` closes a `{` that was not opened, or a branch is empty")
    if tok.type == "VBAR":
        hints.append("`|` separates branches inside `concat { ... }` or `add { ... }`")
    if tok.type == "CALLNAME" and "CALLNAME" not in expected:
        hints.append(f"is an `->` missing before `{word[:-1]}(`?")
    if tok.type == "LBRACE" and "LBRACE" not in expected:
        hints.append("`{` opens the body of `block`, `residual`, `project`, `concat`, `add`, `repeat` or `train`")
    what = {"$END": "end of input"}.get(tok.type, f"`{word}`")
    return CnnSyntaxError(f"unexpected {what}, expected {_describe_expected(expected)}", span, hints=hints)
