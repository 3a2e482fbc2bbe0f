"""The `cnndsl` command. `cnndsl compile` never imports JAX.

Exit status: 0 ok, 2 a mistake in the input (a `CnnError`, printed as a diagnostic),
70 an internal error (reported in one line, never as a traceback unless CNNDSL_DEBUG=1).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __version__, config
from .errors import CnnError

EXIT_USER, EXIT_INTERNAL = 2, 70


def _color(args: argparse.Namespace) -> bool:
    if args.color == "always":
        return True
    if args.color == "never" or os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty()


def _color_err(args: argparse.Namespace) -> bool:
    """Colour for diagnostics on stderr: as `_color`, but asks whether stderr is a terminal."""
    if getattr(args, "color", "auto") == "always":
        return True
    if getattr(args, "color", "auto") == "never" or os.environ.get("NO_COLOR"):
        return False
    return sys.stderr.isatty()


def _diagnostic(text: str, args: argparse.Namespace) -> str:
    from .report import paint_diagnostic

    return paint_diagnostic(text) if _color_err(args) else text


def cmd_compile(args: argparse.Namespace) -> int:
    from . import ir
    from .compiler import compile_file
    from .report import batch_json, dumps, render_batch, render_table, terminal_width, to_json

    width = None if args.wide else terminal_width(sys.stdout)

    status = 0
    results = []
    for path in args.files:
        try:
            net = compile_file(path)
        except CnnError as e:
            status = EXIT_USER
            partial = getattr(e, "partial", None)
            if args.json:
                item = to_json(partial) if isinstance(partial, ir.Network) else {"file": path}
                item["error"] = {
                    "kind": type(e).__name__,
                    "message": e.message,
                    "line": e.span.line if e.span else None,
                    "column": e.span.column if e.span else None,
                    "rendered": e.render(),
                }
                item["errors"] = [{"message": m.message, "line": m.span.line if m.span else None,
                                   "column": m.span.column if m.span else None, "rendered": m.render()}
                                  for m in (e, *getattr(e, "more", ()))]  # fmt: skip
                results.append(item)
            else:
                if isinstance(partial, ir.Network) and partial.body.items:
                    sys.stdout.write(
                        render_table(partial, args.depth, color=_color(args), width=width, with_totals=False)
                    )
                    sys.stdout.flush()
                found = [e, *getattr(e, "more", ())]  # every independent error (compiler.py)
                for each in found:
                    print(_diagnostic(each.render(), args), file=sys.stderr)
                if len(found) > 1:
                    print(_diagnostic(f"{path}: error: {len(found)} errors", args), file=sys.stderr)
            continue
        if args.werror and net.warnings:
            status = EXIT_USER  # `--werror`: each warning is reported as an error
            for w in net.warnings:
                w.kind = "error"
                w.notes.append("a warning, made an error by --werror")
        if args.json:
            results.append(to_json(net) | ({"batch": batch_json(net, args.batch)} if args.batch else {}))
            continue
        sys.stdout.write(render_table(net, args.depth, color=_color(args), width=width))
        if args.batch is not None:
            sys.stdout.write("\n" + render_batch(net, args.batch))
        if args.xla:
            from .backends.xla_report import analyse, render

            sys.stdout.write("\n" + render(net, analyse(net, args.batch or 1)))
        for w in net.warnings:
            print(_diagnostic(w.render(), args), file=sys.stderr)
        if len(args.files) > 1:
            print()
    if args.json:
        print(dumps(results[0] if len(results) == 1 else results))
    return status


def cmd_fmt(args: argparse.Namespace) -> int:
    """Print, check (`--check`: exit 1 if a file would change) or rewrite (`--write`) files in
    canonical form, comments kept. A file that does not compile gets `compile`'s diagnostic
    (exit 2) and is left alone: formatting never hides or rewrites a broken network."""
    from pathlib import Path

    from .compiler import compile_text, read_spec
    from .fmt import format_source

    status = 0
    for path in args.files:
        try:
            text = read_spec(path)  # read once: what is checked is what is formatted
            compile_text(text, path)  # the whole check, shapes included, as `compile` does
            out = format_source(text, path)
        except CnnError as e:
            print(_diagnostic(e.render(), args), file=sys.stderr)
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


def _count(lo: int, hi: int = 2**31 - 1):
    """An argparse type: a whole number in [lo, hi]; anything else is a usage error (exit 2)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if n < lo or n > hi:
            raise argparse.ArgumentTypeError(f"must be {lo} or more, got {n}" if n < lo else f"must be at most {hi:,}")
        return n

    parse.__name__ = "count"  # how argparse names the type in its messages
    return parse


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnndsl", description="Compile, check and train .cnn networks.")
    p.add_argument("--version", action="version", version=f"cnndsl {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("compile", help="check shapes and print the layer table")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument(
        "--depth", type=_count(0), default=None, metavar="N", help="collapse block instances nested deeper than N"
    )
    c.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    c.add_argument("--wide", action="store_true", help="every column at full width, whatever the terminal's width")
    c.add_argument(
        "--xla",
        action="store_true",
        help="also compile with XLA and compare its FLOP and memory analysis (imports JAX)",
    )
    c.add_argument(
        "--batch",
        type=_count(1),
        default=None,
        metavar="N",
        help="also print the batch's array shapes and memory estimate (forward, training step); --xla's batch (default 1)",
    )
    c.add_argument("--werror", action="store_true", help="treat warnings as errors (exit 2), e.g. in CI")
    c.set_defaults(func=cmd_compile)

    f = sub.add_parser("fmt", help="print a file as canonical .cnn text, comments kept")
    f.add_argument("files", nargs="+", metavar="FILE")
    how = f.add_mutually_exclusive_group()
    how.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would be reformatted")
    how.add_argument("--write", action="store_true", help="rewrite the files that change, in place")
    f.set_defaults(func=cmd_fmt)

    for module in _EXTRA_COMMANDS:
        __import__(module, fromlist=["register"]).register(sub)
    return p


# Modules that add sub-commands through `register(subparsers)`; imported lazily per run.
_EXTRA_COMMANDS: tuple[str, ...] = ("cnndsl.train_cli", "cnndsl.export_cli", "cnndsl.weights_cli", "cnndsl.viz_cli")


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CnnError as e:
        for each in (e, *getattr(e, "more", ())):  # every independent error of a spec (compiler.py)
            print(each.render(), file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - the CLI never shows a traceback
        if config.debug():
            raise
        print(
            f"cnndsl: internal error: {type(e).__name__}: {e} (set CNNDSL_DEBUG=1 for the traceback; please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
