"""`cnndsl fmt FILE...`: canonical `.cnn` text with comments kept; `--check` for CI, `--write`
to rewrite in place (atomically)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import CnnError
from . import EXIT_USER, diagnostic


def register(sub: Any) -> None:
    f = sub.add_parser("fmt", help="print a file as canonical .cnn text, comments kept")
    f.add_argument("files", nargs="+", metavar="FILE")
    how = f.add_mutually_exclusive_group()
    how.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would be reformatted")
    how.add_argument("--write", action="store_true", help="rewrite the files that change, in place")
    f.set_defaults(func=cmd_fmt)


def cmd_fmt(args: argparse.Namespace) -> int:
    """Print, check (`--check`: exit 1 if a file would change) or rewrite (`--write`) files in
    canonical form, comments kept. A file that does not compile gets `compile`'s diagnostic
    (exit 2) and is left alone: formatting never hides or rewrites a broken network."""
    from pathlib import Path

    from ..compiler import compile_text, read_spec
    from ..syntax.fmt import format_source

    status = 0
    for path in args.files:
        try:
            text = read_spec(path)  # read once: what is checked is what is formatted
            compile_text(text, path)  # the whole check, shapes included, as `compile` does
            out = format_source(text, path)
        except CnnError as e:
            print(diagnostic(e.render(), args), file=sys.stderr)
            status = EXIT_USER
            continue
        except OSError as e:
            print(f"{path}: error: cannot read: {e.strerror}", file=sys.stderr)
            status = EXIT_USER
            continue
        if args.check:
            if out != text:
                print(f"would reformat {path}", file=sys.stderr)
                status = status or 1
        elif args.write:
            if out != text:
                _replace_text(Path(path), out)
                print(f"reformatted {path}", file=sys.stderr)
        else:
            sys.stdout.write(out)
    return status


def _replace_text(path: object, text: str) -> None:
    """Write `text` over `path` at once (temp file beside it, fsync, `os.replace`), keeping its
    permissions: an interrupted `fmt --write` leaves the old file or the new, never half."""
    import tempfile
    from pathlib import Path

    p = Path(path)  # type: ignore[arg-type]
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, os.stat(p).st_mode & 0o7777)
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
