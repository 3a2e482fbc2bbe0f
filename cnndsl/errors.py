"""One error hierarchy for every user mistake, rendered like a compiler diagnostic.

    lenet.cnn:4:4: error: conv expects its input to be at least 5x5, got 4x4
        -> conv 16@5x5 -> relu
           ^^^^^^^^^^^
      = the input comes from `maxpool 2` at 3:25, which outputs 6@4x4
      = hint: use padding (p2) or a smaller kernel

Errors carry a `Span` into the source text; `render()` draws the underline. Nothing here
imports JAX.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file: 1-based line and column, end column exclusive."""

    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Source:
    """A `.cnn` text with the name it is reported under."""

    text: str
    path: str = "<string>"

    def line(self, n: int) -> str:
        # Lines end at "\n" only, as the parser counts them (not at form feeds, U+2028, ...).
        lines = self.text.split("\n")
        return lines[n - 1].rstrip("\r") if 0 < n <= len(lines) else ""


class CnnError(Exception):
    """A mistake in a `.cnn` file (or in how it is used), with its place and a hint.

    `str(err)` is the full rendered message; `err.message`, `err.span`, `err.notes` and
    `err.hints` hold the parts.
    """

    kind = "error"

    def __init__(
        self,
        message: str,
        span: Span | None = None,
        *,
        source: Source | None = None,
        notes: Iterable[str] = (),
        hints: Iterable[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.span = span
        self.source = source
        self.notes = list(notes)
        self.hints = list(hints)

    def with_source(self, source: Source) -> CnnError:
        if self.source is None:
            self.source = source
        return self

    def render(self) -> str:
        src = self.source
        where = src.path if src else ""
        if self.span is not None:
            where = (where or "<string>") + f":{self.span.line}:{self.span.column}"
        out = [f"{where}: {self.kind}: {self.message}" if where else f"{self.kind}: {self.message}"]
        if src is not None and self.span is not None:
            # one printable column per character, so the carets line up
            text = "".join(c if c.isprintable() else " " if c == "\t" else "\ufffd" for c in src.line(self.span.line))
            if text.strip():
                stripped = text.lstrip()
                indent = len(text) - len(stripped)
                start = max(self.span.column - 1 - indent, 0)
                if self.span.end_line == self.span.line:
                    width = max(self.span.end_column - self.span.column, 1)
                else:
                    width = max(len(text) - self.span.column + 1, 1)
                out.append("    " + stripped.rstrip())
                out.append("    " + " " * start + "^" * width)
        out += [f"  = {n}" for n in self.notes]
        out += [f"  = hint: {h}" for h in self.hints]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.render()


class CnnSyntaxError(CnnError):
    """The text does not follow the grammar."""


class CnnNameError(CnnError):
    """An unknown layer, option, block, variable or saved tensor name."""


class ArgumentError(CnnError):
    """A layer or block got arguments of the wrong kind, count or value."""


class ShapeError(CnnError):
    """A layer cannot accept the shape it is given."""


class DataError(CnnError):
    """A data set, weights file or checkpoint does not fit the network."""


class SpecFileError(CnnError):
    """A `.cnn` file cannot be read as a spec: missing, not a regular file, too large, not UTF-8."""


class CnnWarning(CnnError):
    """A finding that does not stop compilation (printed after the table)."""

    kind = "warning"


def did_you_mean(word: str, choices: Iterable[str]) -> list[str]:
    """`["did you mean `maxpool`?"]` for the closest choices (within 0.05 of the best)."""
    pool = sorted(set(choices))
    scored = sorted(
        ((difflib.SequenceMatcher(None, word.lower(), c.lower()).ratio(), c) for c in pool),
        reverse=True,
    )
    scored = [(r, c) for r, c in scored if r >= 0.6]
    if not scored:
        return []
    best = scored[0][0]
    close = [c for r, c in scored[:3] if r >= best - 0.05]
    return ["did you mean " + " or ".join(f"`{c}`" for c in close) + "?"]
