"""text -> parse -> expand -> PASSES: the whole front end, with no JAX import."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import ir
from .errors import CnnError, DataError, Source
from .parse import parse
from .passes import PASSES, expand


def compile_text(text: str, path: str = "<string>") -> ir.Network:
    """Parse and check `.cnn` text into a fully annotated IR.

    Raises `CnnError` with the source attached. A `ShapeError` carries `err.partial`: the
    network analysed up to the failing layer (costs and receptive fields included).
    """
    source = Source(text, path)
    try:
        net = expand(parse(text, path), source)
    except CnnError as e:
        raise e.with_source(source) from None
    for i, step in enumerate(PASSES):
        try:
            net = step(net)
        except CnnError as e:
            partial = getattr(e, "partial", None)
            if isinstance(partial, ir.Network):
                for later in PASSES[i + 1 :]:
                    partial = later(partial)
                e.partial = partial  # type: ignore[attr-defined]
            raise e.with_source(source) from None
    return dataclasses.replace(net, warnings=tuple(w.with_source(source) for w in net.warnings))


def compile_file(path: str | Path) -> ir.Network:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"no such file: {p}", hints=["check the path; .cnn files are plain text"]) from None
    except UnicodeDecodeError as e:
        raw = p.read_bytes()
        line = raw.count(b"\n", 0, e.start) + 1
        column = len(raw[raw.rfind(b"\n", 0, e.start) + 1 : e.start].decode("utf-8", "replace")) + 1
        raise DataError(
            f"the file is not UTF-8 text: byte 0x{raw[e.start]:02x} at {line}:{column}",
            hints=["save it as UTF-8; `.cnn` files are plain text"],
            source=Source("", str(path)),
        ) from None
    except (IsADirectoryError, PermissionError) as e:
        raise DataError(f"cannot read {p}: {e.__class__.__name__}") from None
    return compile_text(text, str(path))
