"""One walk over the IR's dataflow, shared by shape inference, the receptive-field trace
and the JAX forward pass: each supplies what a value is and what layers/merges do to it.

On a `CnnError` the walk attaches `err.partial`: the chain rebuilt up to the failing node
(nested groups and branches included), so reports can show the table up to the failure.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Generic, TypeVar

from .. import ir
from ..errors import CnnError

V = TypeVar("V")


class Walker(Generic[V]):
    rebuild = True  # False for walks that only compute values (the forward pass)

    def layer(self, n: ir.Layer, x: V) -> tuple[ir.Layer, V]:
        raise NotImplementedError

    def merge(self, n: ir.Merge | ir.MergeRef, xs: list[V], labels: list[str]) -> tuple[Any, V]:
        raise NotImplementedError

    def save(self, n: ir.Save, x: V) -> ir.Save:
        return n

    def group(self, n: ir.Group, x: V) -> ir.Group:
        return n

    def group_body(self, n: ir.Group, x: V, env: dict[str, V]) -> tuple[ir.Chain, V]:
        """Run a block instance's body (a hook: the forward pass may rematerialise it)."""
        return self.run(n.body, x, env)

    def run(self, chain: ir.Chain, x: V, env: dict[str, V] | None = None) -> tuple[ir.Chain, V]:
        env = {} if env is None else env
        items: list[ir.Node] = []
        for n in chain.items:
            try:
                n, x = self._node(n, x, env)
            except CnnError as e:
                if self.rebuild:
                    inner = getattr(e, "partial_node", None)
                    e.partial = ir.Chain(items=(*items, inner) if inner is not None else tuple(items))  # type: ignore[attr-defined]
                    e.partial_node = None  # type: ignore[attr-defined]
                raise
            items.append(n)
        return (ir.Chain(items=tuple(items)) if self.rebuild else chain), x

    def _node(self, n: ir.Node, x: V, env: dict[str, V]) -> tuple[ir.Node, V]:
        if isinstance(n, ir.Layer):
            return self.layer(n, x)
        if isinstance(n, ir.Save):
            env[n.key] = x
            return self.save(n, x), x
        if isinstance(n, ir.MergeRef):
            return self.merge(n, [x, env[n.ref]], ["the current tensor", f"`save {n.label}`"])
        if isinstance(n, ir.Group):
            try:
                body, y = self.group_body(n, x, env)
            except CnnError as e:
                if self.rebuild:
                    e.partial_node = dataclasses.replace(n, body=e.partial)  # type: ignore[attr-defined]
                raise
            if self.rebuild:
                n = dataclasses.replace(n, body=body)
            return self.group(n, y), y
        if isinstance(n, ir.Merge):
            outs, branches = [], []
            for b in n.branches:
                try:
                    b2, y = self.run(b, x, dict(env))
                except CnnError as e:
                    if self.rebuild:
                        e.partial_node = dataclasses.replace(n, branches=(*branches, e.partial))  # type: ignore[attr-defined]
                    raise
                branches.append(b2)
                outs.append(y)
            if self.rebuild:
                n = dataclasses.replace(n, branches=tuple(branches))
            labels = (
                [
                    "the residual body",
                    "the shortcut" if len(n.branches) > 1 and n.branches[1].items else "the input (identity shortcut)",
                ]
                if n.residual
                else [f"branch {i}" for i in range(1, len(outs) + 1)]
            )
            try:
                return self.merge(n, outs, labels)
            except CnnError as e:
                if self.rebuild:
                    e.partial_node = n  # type: ignore[attr-defined]
                raise
        raise AssertionError(n)
