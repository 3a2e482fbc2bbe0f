"""`cnndsl compile FILE...`: check every file (shapes, counts, the `train {}` section) and print
the layer table, or `--json`. Never imports JAX unless `--xla` asks for XLA's analysis."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import CnnError
from . import EXIT_USER, color, count, diagnostic


def register(sub: Any) -> None:
    c = sub.add_parser("compile", help="check shapes and print the layer table")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--json", action="store_true", help="print the report as JSON")
    c.add_argument(
        "--depth", type=count(0), default=None, metavar="N", help="collapse block instances nested deeper than N"
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
        type=count(1),
        default=None,
        metavar="N",
        help="also print the batch's array shapes and memory estimate (forward, training step); --xla's batch (default 1)",
    )
    c.add_argument("--werror", action="store_true", help="treat warnings as errors (exit 2), e.g. in CI")
    c.set_defaults(func=cmd_compile)


def cmd_compile(args: argparse.Namespace) -> int:
    from .. import ir
    from ..compiler import compile_file
    from ..report import batch_json, dumps, render_batch, render_table, terminal_width, to_json

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
                        render_table(partial, args.depth, color=color(args), width=width, with_totals=False)
                    )
                    sys.stdout.flush()
                found = [e, *getattr(e, "more", ())]  # every independent error (compiler.py)
                for each in found:
                    print(diagnostic(each.render(), args), file=sys.stderr)
                if len(found) > 1:
                    print(diagnostic(f"{path}: error: {len(found)} errors", args), file=sys.stderr)
            continue
        if args.werror and net.warnings:
            status = EXIT_USER  # `--werror`: each warning is reported as an error
            for w in net.warnings:
                w.kind = "error"
                w.notes.append("a warning, made an error by --werror")
        if args.json:
            results.append(to_json(net) | ({"batch": batch_json(net, args.batch)} if args.batch else {}))
            continue
        sys.stdout.write(render_table(net, args.depth, color=color(args), width=width))
        if args.batch is not None:
            sys.stdout.write("\n" + render_batch(net, args.batch))
        if args.xla:
            from ..backends.jax.xla_report import analyse, render

            sys.stdout.write("\n" + render(net, analyse(net, args.batch or 1)))
        for w in net.warnings:
            print(diagnostic(w.render(), args), file=sys.stderr)
        if len(args.files) > 1:
            print()
    if args.json:
        print(dumps(results[0] if len(results) == 1 else results))
    return status
