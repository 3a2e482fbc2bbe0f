"""The receptive field, jump (effective stride) and centre of every spatial tensor.

Per axis, through a window of `k` with stride `s` and padding `p` (Araujo et al., 2019):
`size' = size + (k-1)*jump`, `jump' = jump*s`, `start' = start + ((k-1)/2 - p)*jump`.
Merges take the largest field over their inputs and warn when the inputs' grids differ
(different jump or centre): their pixels then do not line up. Flat tensors have none.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

from .. import ir
from ..errors import CnnWarning, ShapeError
from ..ops import REGISTRY
from ..ops.base import COLLAPSE, IDENTITY
from ..syntax.values import out_of_range


class _Trace(ir.Walker["ir.RF | None"]):
    def __init__(self) -> None:
        self.warnings: list[CnnWarning] = []

    def layer(self, n, x):
        if x is None or n.x is None or n.y is None or n.y.is_flat:
            return n, None
        w = REGISTRY[n.op].window(n.args, n.x, n.y)
        if w == COLLAPSE:
            y = None
        elif w == IDENTITY:
            y = x
        else:
            y = ir.RF(
                size=tuple(r + (k - 1) * j for r, k, j in zip(x.size, w.kernel, x.jump)),
                jump=tuple(j * s for j, s in zip(x.jump, w.stride)),
                start=tuple(st + (Fraction(k - 1, 2) - p) * j for st, k, p, j in zip(x.start, w.kernel, w.pad, x.jump)),
            )
            if any(out_of_range(v) for v in (*y.size, *y.jump)):
                raise ShapeError(
                    f"`{n.text}`: the receptive field grows past 10^15 input pixels here (jump {_fmt(y.jump)})",
                    n.span,
                    notes=[f"in `{s.text}` called at {s.span}" for s in reversed(n.sites)],
                    hints=["a stride larger than its input leaves one output pixel: use `gap` or a smaller stride"],
                )
        return dataclasses.replace(n, rf=y), y

    def merge(self, n, xs, labels):
        if n.kind == "mul" and isinstance(n, ir.Merge) and n.y is not None:
            # a gate broadcast over the grid (`D@1x1`) sees the whole map: only full-size inputs must line up
            outs = [ir.chain_output(b, None) for b in n.branches]
            full = [i for i, s in enumerate(outs) if s is None or s.spatial == n.y.spatial]
            xs, labels = [xs[i] for i in full], [labels[i] for i in full]
        fields = [x for x in xs if x is not None]
        if not fields or n.y is None or n.y.is_flat:
            return n, None
        first = fields[0]
        for f, lab in zip(fields[1:], labels[1:]):
            if f.jump != first.jump or f.start != first.start:
                self.warnings.append(
                    CnnWarning(
                        f"{n.kind}: the grids of {labels[0]} and {lab} do not line up "
                        f"(jump {_fmt(first.jump)} vs {_fmt(f.jump)}, centre {_fmt(first.start)} vs {_fmt(f.start)})",
                        n.span,
                        notes=[f"in `{s.text}` called at {s.span}" for s in reversed(n.sites)],
                        hints=["their pixels come from different input positions; check strides and padding"],
                    )
                )
                break
        size = tuple(max(f.size[i] for f in fields) for i in range(len(first.size)))
        y = ir.RF(size=size, jump=first.jump, start=first.start)
        return dataclasses.replace(n, rf=y), y


def _fmt(v: tuple[Fraction, ...]) -> str:
    return "x".join(f"{float(f):g}" for f in v)


def trace_receptive_field(net: ir.Network) -> ir.Network:
    start = None
    if not net.input.is_flat:
        r = net.input.rank
        start = ir.RF(size=(Fraction(1),) * r, jump=(Fraction(1),) * r, start=(Fraction(0),) * r)
    t = _Trace()
    body, _ = t.run(net.body, start)
    return dataclasses.replace(net, body=body, warnings=(*net.warnings, *t.warnings))
