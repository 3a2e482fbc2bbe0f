"""text -> parse -> expand -> PASSES: the whole front end, with no JAX import."""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from . import config, ir
from .errors import CnnError, Source, Span, SpecFileError, did_you_mean
from .passes import PASSES, Pass, expand
from .passes.lint import lint
from .syntax.parse import parse


def compile_text(text: str, path: str = "<string>", passes: Sequence[Pass] = PASSES) -> ir.Network:
    """Parse and check `.cnn` text into a fully annotated IR.

    `passes` run in order after `expand` (default `passes.PASSES`: shapes, costs, receptive
    fields; docs/passes.md). Raises `CnnError` with the source attached. A `ShapeError`
    carries `err.partial`: the network analysed up to the failing layer (the later passes
    run on it too). With `CNNDSL_DEBUG=1`, `ir.verify` checks the IR after every pass.
    """
    passes = tuple(passes)
    verify = ir.verify if config.debug() else _keep
    text = text.removeprefix("\ufeff")  # a byte-order mark is not part of the spec
    source = Source(text, path)
    module = parse_or_raise(text, path, source)
    try:
        net = expand(module, source)
    except CnnError as e:
        raise _with_train_errors(e, module, source) from None
    verify(net)
    for i, step in enumerate(passes):
        try:
            net = verify(step(net))
        except CnnError as e:
            partial = getattr(e, "partial", None)
            if isinstance(partial, ir.Network):
                try:
                    for later in passes[i + 1 :]:
                        partial = later(partial)
                except CnnError:
                    pass  # a later pass fails on the partial network too: report the first error
                e.partial = partial  # type: ignore[attr-defined]
            raise _with_train_errors(e, net.ast, source) from None
    try:
        net = _check_train(net)
    except CnnError as e:
        raise e.with_source(source) from None
    net = lint(net)  # a reviewer's warnings, on the network that compiled
    return dataclasses.replace(net, warnings=tuple(w.with_source(source) for w in net.warnings))


def _keep(net: ir.Network) -> ir.Network:
    return net


def parse_or_raise(text: str, path: str, source: Source) -> object:
    try:
        return parse(text, path)
    except CnnError as e:
        raise e.with_source(source) from None


def _with_train_errors(e: CnnError, module: object, source: Source) -> CnnError:
    """`e` (and the errors it carries in `e.more`) with the `train { ... }` section's own
    mistakes added: each setting is read on its own, independent of the network's errors."""
    from .passes.expand import MAX_ERRORS
    from .training.config import settings_to_config

    found = [e, *getattr(e, "more", ())]
    for setting in getattr(module, "train", ()):
        if len(found) >= MAX_ERRORS:
            break
        try:
            settings_to_config([setting])
        except CnnError as bad:
            found.append(bad)
    for f in found:
        f.with_source(source)
    e.more = found[1:MAX_ERRORS]  # type: ignore[attr-defined]
    return e


def _check_train(net: ir.Network) -> ir.Network:
    """The `train { ... }` section checked as `cnndsl train` reads it (settings, values, the
    data spec's form), its `freeze` patterns against the layers: `compile` checks the whole file."""
    settings = getattr(net.ast, "train", ())
    if not settings:
        return net
    from .training.config import check_train_section  # no JAX: the settings table only

    found = check_train_section(settings, ((n.name, n.params) for n in ir.layers(net.body)))
    return dataclasses.replace(net, warnings=(*net.warnings, *found)) if found else net


def compile_file(path: str | Path, passes: Sequence[Pass] = PASSES) -> ir.Network:
    """`compile_text` of the spec file at `path`, read by `read_spec`."""
    return compile_text(read_spec(path), str(path), passes)


# A spec is a short text; anything larger is the wrong file (a data set, `/dev/zero`) and is
# refused before it is read into memory.
MAX_SPEC_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"
_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def read_spec(path: str | Path) -> str:
    """The text of the `.cnn` file at `path`: the one way `compile`, `fmt`, `cnndsl.load` and
    the training commands read a spec.

    Raises `SpecFileError`, before reading anything, for a missing path and for anything but a
    regular file (a FIFO would block, a device never ends, a directory is a mistake), and for a
    file over `MAX_SPEC_BYTES`; at most that many bytes plus one are ever read. A UTF-8
    byte-order mark is skipped; bytes that are not UTF-8 are reported at their line and column.
    """
    shown = str(path)
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise _not_a_file(path, st.st_mode)
        # O_NONBLOCK: should the path become a FIFO after the stat, the open does not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise _not_a_file(path, st.st_mode)
            raw = b"" if st.st_size > MAX_SPEC_BYTES else f.read(MAX_SPEC_BYTES + 1)
            size = max(st.st_size, len(raw))
    except OSError as e:
        raise _os_error(path, e) from None
    if size > MAX_SPEC_BYTES:
        raise SpecFileError(
            f"the file is {size:,} bytes, over the {MAX_SPEC_BYTES:,}-byte (1 MiB) limit for a spec",
            hints=[
                "is this the right file? A `.cnn` spec is a short text (repeated structure is `block` and `repeat`)"
            ],
            source=Source("", shown),
        )
    raw = raw.removeprefix(_BOM)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = len(raw[raw.rfind(b"\n", 0, e.start) + 1 : e.start].decode("utf-8", "replace")) + 1
        raise SpecFileError(
            f"the file is not UTF-8 text: byte 0x{raw[e.start]:02x}",
            Span(line, column, line, column + 1),
            hints=["save it as UTF-8; `.cnn` files are plain text"],
            source=Source(raw.decode("utf-8", "replace"), shown),
        ) from None


def _not_a_file(path: str | Path, mode: int) -> SpecFileError:
    kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
    if stat.S_ISDIR(mode):
        found = sorted(p.name for p in Path(path).glob("*.cnn"))[:3]
        hint = (
            "give a `.cnn` file in it, like `" + str(Path(path) / found[0]) + "`"
            if found
            else "give the path of a `.cnn` file"
        )
        return SpecFileError("this is a directory, not a `.cnn` file", hints=[hint], source=Source("", str(path)))
    return SpecFileError(
        f"this is {kind}, not a regular file",
        hints=["specs are read from regular files only (a pipe or a device may block or never end): save it to a file"],
        source=Source("", str(path)),
    )


def _os_error(path: str | Path, e: OSError) -> SpecFileError:
    source = Source("", str(path))
    if isinstance(e, (FileNotFoundError, NotADirectoryError)):
        p = Path(path)
        near = [q.name for q in p.parent.glob("*.cnn")] if p.parent.is_dir() else []
        return SpecFileError("no such file", hints=did_you_mean(p.name, near) or ["check the path"], source=source)
    if isinstance(e, PermissionError):
        return SpecFileError("permission denied: cannot read the file", source=source)
    return SpecFileError(f"cannot read the file: {e.strerror or type(e).__name__}", source=source)
