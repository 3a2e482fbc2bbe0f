"""The `cnndsl` command. `cnndsl compile` never imports JAX.

Exit status: 0 ok, 2 a mistake in the input (a `CnnError`, printed as a diagnostic),
70 an internal error (reported in one line, never as a traceback unless CNNDSL_DEBUG=1).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .. import __version__, config
from ..errors import CnnError

EXIT_USER, EXIT_INTERNAL = 2, 70


def color(args: argparse.Namespace) -> bool:
    if args.color == "always":
        return True
    if args.color == "never" or os.environ.get("NO_COLOR"):
        return False
    return sys.stdout.isatty()


def color_err(args: argparse.Namespace) -> bool:
    """Colour for diagnostics on stderr: as `_color`, but asks whether stderr is a terminal."""
    if getattr(args, "color", "auto") == "always":
        return True
    if getattr(args, "color", "auto") == "never" or os.environ.get("NO_COLOR"):
        return False
    return sys.stderr.isatty()


def diagnostic(text: str, args: argparse.Namespace) -> str:
    from ..report import paint_diagnostic

    return paint_diagnostic(text) if color_err(args) else text


def count(lo: int, hi: int = 2**31 - 1):
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

    for module in COMMANDS:
        importlib.import_module(f"{__name__}.{module}").register(sub)
    return p


# One module per sub-command (`train` also holds `predict` and `eval`); each adds its parser with
# `register(subparsers)` and imports what it runs (JAX included) only when it runs.
COMMANDS: tuple[str, ...] = ("compile", "fmt", "train", "export", "weights", "viz")


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
