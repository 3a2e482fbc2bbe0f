"""Warnings a careful reviewer would give on a network that compiles: located, with a hint.

    lenet.cnn:3:40: warning: `softmax` after `softmax`: the second one flattens the probabilities
        -> dense 10 -> softmax -> softmax
                                  ^^^^^^^
      = hint: remove the second `softmax`

The checks ask ops' declared traits (`final_activation`, `random`, `window`, the default of
a `momentum` argument) rather than their names, except `flatten` (no trait says "reshapes
only"). A pattern repeated by a block instance is reported once, at its source position.
Nothing here imports JAX.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from fractions import Fraction

from .. import ir
from ..errors import CnnWarning
from ..ops import REGISTRY
from ..ops.base import CLASS_NORMALISERS, Window

# A `momentum` below this, where the op's default is above it, is PyTorch's convention.
_PYTORCH_MOMENTUM = Fraction(1, 2)


def _final(n: ir.Node) -> str | None:
    """The layer's `Op.final_activation` trait (softmax, logsoftmax, sigmoid) or None."""
    if not isinstance(n, ir.Layer):
        return None
    return REGISTRY[n.op].final_activation


def _main_path(chain: ir.Chain) -> Iterator[ir.Node]:
    """The nodes data flows through in order, block instances opened, a merge as one node."""
    for item in chain.items:  # not `ir.walk`: a merge's insides are skipped, not walked
        if isinstance(item, ir.Group):
            yield from _main_path(item.body)
        elif not isinstance(item, ir.Save):
            yield item


def _warning(n: ir.Layer, message: str, hint: str, notes: tuple[str, ...] = ()) -> CnnWarning:
    where = [f"in `{s.text}` called at {s.span}" for s in reversed(n.sites)]
    return CnnWarning(message, n.span, notes=[*notes, *where], hints=[hint])


def _path_checks(net: ir.Network) -> Iterator[CnnWarning]:
    path = list(_main_path(net.body))
    for prev, n in zip([None, *path], path):
        if not isinstance(n, ir.Layer):
            continue
        kind, before = _final(n), _final(prev) if prev is not None else None
        if kind is not None and before in CLASS_NORMALISERS and isinstance(prev, ir.Layer):
            yield _warning(
                n,
                f"`{n.text}` after `{prev.text}`: a second softmax squashes the probabilities towards uniform",
                f"remove one of them (the network already outputs {'log-' if before == 'logsoftmax' else ''}probabilities)",
            )
        elif before in CLASS_NORMALISERS and isinstance(prev, ir.Layer):
            yield _warning(
                prev,
                f"`{prev.text}` is not the last layer: `{n.text}` follows it",
                "a softmax turns the final scores into probabilities: put it last, or leave it out "
                "(`cnndsl train`'s losses take the scores)",
            )
        if n.op == "flatten" and n.x is not None and n.x.is_flat:
            made = f"`{prev.text}`'s output" if isinstance(prev, ir.Layer) else "its input"
            yield _warning(n, f"`{n.text}` does nothing here: {made} is already flat ({n.x})", f"remove `{n.text}`")
    tail = [n for n in path if not (isinstance(n, ir.Layer) and _final(n))]
    last = tail[-1] if tail else None
    if isinstance(last, ir.Layer) and REGISTRY[last.op].random:
        yield _warning(
            last,
            f"`{last.text}` right before the output randomly zeroes the network's outputs in training",
            "put dropout before the last layer with weights (`dropout 0.5 -> dense 10`), where it regularises",
        )


def _momentum(n: ir.Layer) -> CnnWarning | None:
    op = REGISTRY[n.op]
    decl = next((p for p in op.params if p.name == "momentum"), None)
    m = n.args.get("momentum")
    if decl is None or m is None or not isinstance(decl.default, (int, float, Fraction)):
        return None
    if Fraction(decl.default) > _PYTORCH_MOMENTUM and Fraction(m) < _PYTORCH_MOMENTUM:
        keep = Fraction(m)
        return _warning(
            n,
            f"`{n.text}`: the running statistics keep only {float(keep):.0%} of their value per step "
            f"(`m * old + (1 - m) * batch`)",
            f"this is PyTorch's convention reversed: PyTorch's momentum={float(keep):g} is "
            f"`momentum={float(1 - keep):g}` here (the default is {float(decl.default):g})",
        )
    return None


def _strides(chain: ir.Chain) -> Iterator[tuple[ir.Layer, tuple[int, ...], tuple[Fraction, ...]]]:
    """Layers whose windows are further apart than they are wide (input pixels no output
    sees). Inside a merge only where every branch skips: a 1x1 stride-2 shortcut beside a
    3x3 stride-2 convolution loses nothing."""
    for item in chain.items:
        if isinstance(item, ir.Layer):
            skip = _skips(item)
            if skip is not None:
                yield item, *skip
        else:  # a block instance's body, a merge's branches
            found = [list(_strides(c)) for c in ir.children(item)]
            if isinstance(item, ir.Group) or all(found):
                for f in found:
                    yield from f


def _skips(n: ir.Layer) -> tuple[tuple[int, ...], tuple[Fraction, ...]] | None:
    if n.x is None or n.y is None or n.x.is_flat:
        return None
    w = REGISTRY[n.op].window(n.args, n.x, n.y)
    if not isinstance(w, Window):
        return None
    return (w.kernel, w.stride) if any(s > k for k, s in zip(w.kernel, w.stride)) else None


def _fmt(v: tuple) -> str:
    return "x".join(f"{float(x):g}" for x in v)


def lint(net: ir.Network) -> ir.Network:
    """`net` with the reviewer's warnings added to `net.warnings` (one per source position)."""
    found = list(_path_checks(net))
    found += [w for n in ir.layers(net.body) if (w := _momentum(n)) is not None]
    for n, kernel, stride in _strides(net.body):
        seen = 1 - _prod(tuple(min(Fraction(k), s) / s for k, s in zip(kernel, stride)))
        found.append(
            _warning(
                n,
                f"`{n.text}`: stride {_fmt(stride)} is larger than the window {_fmt(kernel)}, "
                f"so {float(seen):.0%} of its input pixels are never seen",
                "use a window at least as large as the stride (e.g. `conv 3x3 s2`), or pool before a 1x1 layer",
            )
        )
    out: list[CnnWarning] = []
    places: set[tuple[object, str]] = set()
    for w in found:
        key = (w.span, w.message)
        if key not in places:
            places.add(key)
            out.append(w)
    out.sort(key=lambda w: (w.span.line, w.span.column) if w.span is not None else (0, 0))
    return dataclasses.replace(net, warnings=(*net.warnings, *out)) if out else net


def _prod(v: tuple) -> Fraction:
    p = Fraction(1)
    for x in v:
        p *= Fraction(x)
    return p
