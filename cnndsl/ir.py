"""The IR: an expanded, immutable tree of layers, merges and block instances.

`passes.expand` builds it from the AST (blocks inlined as `Group`s, arguments bound and
evaluated, every layer named); `passes.infer_shapes` fills `x`/`y` shapes; `count_costs`
and `trace_receptive_field` fill the rest. Every report and backend reads this, nothing
re-parses text. Spans and call sites are excluded from equality.

Names: a layer's `path` is its scope path plus its name, e.g. `("basic2", "conv1")`; this is
the key of its variables (`params["basic2"]["conv1"]["kernel"]`) and in checkpoints.

Traversal: the API passes, reports and backends go through the tree with (one walk order,
one rebuild, one dataflow, instead of one recursion each):
- `walk(tree)`: every node with its enclosing nodes, in execution order; `layers(tree)`;
- `rewrite(tree, node=..., chain=...)`: the tree rebuilt bottom-up, unchanged parts shared;
- `Walker`: the dataflow walk, a value threaded through layers, saves and merges (shape
  inference, the receptive-field trace, the backends' forward passes);
- `children(n)` / `with_children(n, chains)`: a node's sub-chains, read and replaced (what
  `rewrite` and `Walker` rebuild nodes with);
- `verify(net)`: the invariants every pass keeps (unique names, spans, consistent shapes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Generic, TypeVar

from .errors import CnnError, Source, Span
from .shape import Shape
from .syntax.binder import Args

node = dataclass(frozen=True, slots=True, kw_only=True)
NOSPAN = Span(0, 0, 0, 0)


def _meta(default: object = None) -> object:
    return field(default=default, compare=False, repr=False)


@node
class Site:
    """A block call on the way to a node: `basic(64)` at 12:4 (for error messages)."""

    text: str
    span: Span


@node
class RF:
    """Receptive field after a layer, per spatial axis (written order): size in input
    pixels, jump (effective stride) and the input coordinate of output 0's centre."""

    size: tuple[Fraction, ...]
    jump: tuple[Fraction, ...]
    start: tuple[Fraction, ...]


@node
class Layer:
    op: str
    args: Args
    path: tuple[str, ...]
    text: str = field(compare=False)  # as written, with block parameters substituted
    span: Span = _meta(NOSPAN)  # type: ignore[assignment]
    sites: tuple[Site, ...] = _meta(())  # type: ignore[assignment]
    x: Shape | None = None
    y: Shape | None = None
    params: int = 0  # trainable
    fixed: int = 0  # non-trainable (BN statistics, fixed filters)
    macs: int = 0
    rf: RF | None = None

    @property
    def name(self) -> str:
        return ".".join(self.path)


@node
class Merge:
    """`add`/`concat` of parallel branches on the same input; `residual` prints as such."""

    kind: str
    branches: tuple[Chain, ...]
    path: tuple[str, ...]
    residual: bool = False
    span: Span = _meta(NOSPAN)  # type: ignore[assignment]
    sites: tuple[Site, ...] = _meta(())  # type: ignore[assignment]
    y: Shape | None = None
    rf: RF | None = None

    @property
    def name(self) -> str:
        return ".".join(self.path)


@node
class MergeRef:
    """`add NAME` / `concat NAME`: the current tensor merged with a saved one."""

    kind: str
    ref: str  # the unique key of the Save
    label: str  # the name as written
    path: tuple[str, ...]
    span: Span = _meta(NOSPAN)  # type: ignore[assignment]
    sites: tuple[Site, ...] = _meta(())  # type: ignore[assignment]
    y: Shape | None = None
    rf: RF | None = None

    @property
    def name(self) -> str:
        return ".".join(self.path)


@node
class Save:
    key: str  # unique: scope path + name
    label: str
    span: Span = _meta(NOSPAN)  # type: ignore[assignment]
    y: Shape | None = None


@node
class Group:
    """A block instance: `basic(64)` expanded, its layers under `path`."""

    block: str
    text: str
    path: tuple[str, ...]
    body: Chain
    span: Span = _meta(NOSPAN)  # type: ignore[assignment]
    y: Shape | None = None

    @property
    def name(self) -> str:
        return ".".join(self.path)


Node = Layer | Merge | MergeRef | Save | Group


@node
class Chain:
    items: tuple[Node, ...] = ()


@node
class Network:
    name: str
    input: Shape
    body: Chain
    source: Source = _meta(Source(""))  # type: ignore[assignment]
    input_span: Span = _meta(NOSPAN)  # type: ignore[assignment]
    warnings: tuple = _meta(())  # type: ignore[assignment]
    ast: object = _meta(None)  # the parsed ast.Module (blocks, train settings)

    @property
    def output(self) -> Shape | None:
        return chain_output(self.body, self.input)


def chain_output(chain: Chain, default: Shape | None) -> Shape | None:
    y = default
    for item in chain.items:
        y = item.y
    return y


# -- traversal -----------------------------------------------------------------------------
# `children` and `with_children` say which fields hold sub-chains (a block instance's body, a
# merge's branches); `rewrite` and `Walker` rebuild through them, `_walk` inlines them for speed.

Tree = Network | Chain | Node
T = TypeVar("T", Network, Chain, Layer, Merge, MergeRef, Save, Group)


def children(n: Node) -> tuple[Chain, ...]:
    """The chains directly inside `n`: a block instance's body, a merge's branches (in order);
    none for a layer, a save or a `MergeRef`."""
    if isinstance(n, Group):
        return (n.body,)
    if isinstance(n, Merge):
        return n.branches
    return ()


def with_children(n: Node, chains: Sequence[Chain]) -> Node:
    """`n` with `chains` in place of `children(n)`; `n` itself when they are the same objects,
    so an unchanged subtree is shared, not copied."""
    if isinstance(n, Group) and len(chains) == 1:
        return n if chains[0] is n.body else dataclasses.replace(n, body=chains[0])
    if isinstance(n, Merge) and len(chains) == len(n.branches):
        if all(a is b for a, b in zip(chains, n.branches)):
            return n
        return dataclasses.replace(n, branches=tuple(chains))
    if not chains and not isinstance(n, (Group, Merge)):
        return n
    raise ValueError(f"{type(n).__name__} has {len(children(n))} child chains, got {len(chains)}")


def walk(tree: Tree) -> Iterator[tuple[tuple[Node, ...], Node]]:
    """Every node in `tree` (a network, a chain or a node) as `(outer, node)`, in execution
    order: a block instance before its body, a merge after its branches (they run first).
    `outer` holds the enclosing groups and merges, outermost first, so `len(outer)` is the
    nesting depth (`report` counts only the groups towards `--depth`); siblings share one
    `outer` tuple."""
    if isinstance(tree, Network):
        return _walk(tree.body, ())
    return _walk(tree if isinstance(tree, Chain) else Chain(items=(tree,)), ())


def _walk(chain: Chain, outer: tuple[Node, ...]) -> Iterator[tuple[tuple[Node, ...], Node]]:
    # `children`, inlined: this runs for every report row and pass
    for n in chain.items:
        if isinstance(n, Group):
            yield outer, n
            yield from _walk(n.body, (*outer, n))
        elif isinstance(n, Merge):
            inner = (*outer, n)
            for b in n.branches:
                yield from _walk(b, inner)
            yield outer, n
        else:
            yield outer, n


def layers(tree: Tree) -> Iterator[Layer]:
    """The layers in `tree`, in execution order."""
    for _, n in walk(tree):
        if isinstance(n, Layer):
            yield n


def rewrite(
    tree: T,
    node: Callable[[Node], Node] | None = None,
    chain: Callable[[tuple[Node, ...]], Iterable[Node]] | None = None,
) -> T:
    """`tree` rebuilt bottom-up: in every chain, each node's own chains are rewritten first,
    then `node(n)` replaces the node; then `chain(items)` replaces the chain's items (to drop,
    merge or insert nodes). Innermost chains go first, so a callback sees rewritten insides.
    A node or chain that comes back unchanged (the same objects) is shared, not copied, so
    `rewrite(net) is net`. The IR is immutable: `tree` itself is never modified.

        ir.rewrite(net, node=lambda n: dataclasses.replace(n, macs=0) if isinstance(n, ir.Layer) else n)
        ir.rewrite(net, chain=lambda items: [n for n in items if not isinstance(n, ir.Save)])
    """
    if isinstance(tree, Network):
        body = _rewrite(tree.body, node, chain)
        return tree if body is tree.body else dataclasses.replace(tree, body=body)
    if isinstance(tree, Chain):
        return _rewrite(tree, node, chain)  # type: ignore[return-value]
    n = with_children(tree, [_rewrite(c, node, chain) for c in children(tree)])
    return node(n) if node is not None else n  # type: ignore[return-value]


def _rewrite(c: Chain, node, chain) -> Chain:
    items: list[Node] = []
    same = True
    for n in c.items:
        m = n
        if isinstance(m, (Group, Merge)):
            m = with_children(m, [_rewrite(k, node, chain) for k in children(m)])
        if node is not None:
            m = node(m)
        same = same and m is n
        items.append(m)
    if chain is not None:
        out = tuple(chain(tuple(items)))
        same = len(out) == len(c.items) and all(a is b for a, b in zip(out, c.items))
        return c if same else Chain(items=out)
    return c if same else Chain(items=tuple(items))


# -- dataflow ------------------------------------------------------------------------------

V = TypeVar("V")


class Walker(Generic[V]):
    """One walk over the IR's dataflow, shared by shape inference, the receptive-field trace,
    `verify` and the backends (the JAX forward pass, the ONNX emitter): a subclass says what
    a value is and what layers and merges do to it; `run(chain, x)` threads the value through
    in execution order (a merge's branches each from the same input, a `MergeRef` with the
    value its `save` kept) and returns the chain rebuilt from what the hooks return and the
    output value.

    On a `CnnError` the walk attaches `err.partial`: the chain rebuilt up to the failing node
    (nested groups and branches included), so reports can show the table up to the failure.
    """

    rebuild = True  # False for walks that only compute values (the forward pass)

    def layer(self, n: Layer, x: V) -> tuple[Layer, V]:
        raise NotImplementedError

    def merge(self, n: Merge | MergeRef, xs: list[V], labels: list[str]) -> tuple[Any, V]:
        raise NotImplementedError

    def save(self, n: Save, x: V) -> Save:
        return n

    def group(self, n: Group, x: V) -> Group:
        return n

    def group_body(self, n: Group, x: V, env: dict[str, V]) -> tuple[Chain, V]:
        """Run a block instance's body (a hook: the forward pass may rematerialise it)."""
        return self.run(n.body, x, env)

    def run(self, chain: Chain, x: V, env: dict[str, V] | None = None) -> tuple[Chain, V]:
        env = {} if env is None else env
        items: list[Node] = []
        for n in chain.items:
            try:
                n, x = self._node(n, x, env)
            except CnnError as e:
                if self.rebuild:
                    inner = getattr(e, "partial_node", None)
                    e.partial = Chain(items=(*items, inner) if inner is not None else tuple(items))  # type: ignore[attr-defined]
                    e.partial_node = None  # type: ignore[attr-defined]
                raise
            items.append(n)
        return (Chain(items=tuple(items)) if self.rebuild else chain), x

    def _node(self, n: Node, x: V, env: dict[str, V]) -> tuple[Node, V]:
        if isinstance(n, Layer):
            return self.layer(n, x)
        if isinstance(n, Save):
            env[n.key] = x
            return self.save(n, x), x
        if isinstance(n, MergeRef):
            return self.merge(n, [x, env[n.ref]], ["the current tensor", f"`save {n.label}`"])
        if isinstance(n, Group):
            try:
                body, y = self.group_body(n, x, env)
            except CnnError as e:
                if self.rebuild:
                    e.partial_node = with_children(n, [e.partial])  # type: ignore[attr-defined]
                raise
            if self.rebuild:
                n = with_children(n, [body])
            return self.group(n, y), y
        if isinstance(n, Merge):
            outs, branches = [], []
            for b in n.branches:
                try:
                    b2, y = self.run(b, x, dict(env))
                except CnnError as e:
                    if self.rebuild:
                        # the branches so far, the failing one partial, none after it
                        e.partial_node = dataclasses.replace(n, branches=(*branches, e.partial))  # type: ignore[attr-defined]
                    raise
                branches.append(b2)
                outs.append(y)
            if self.rebuild:
                n = with_children(n, branches)
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


# -- verification --------------------------------------------------------------------------


class IRError(AssertionError):
    """`verify` found the IR inconsistent: a compiler bug (a pass built a wrong tree), never a
    user's mistake (those are `CnnError`s, raised before any IR is built)."""


def verify(net: Network, *, shapes: bool | None = None) -> Network:
    """`net`, after checking the invariants every pass keeps; raises `IRError` listing each
    violation (at most 20), named by node path.

    - names: every layer, merge and block instance has a path of its own; a `MergeRef` names
      a `save` on its way (before it, in its chain or an enclosing one);
    - spans: every node has its source span when the network was compiled from text;
    - shapes: set on every node or (before `infer_shapes`) on none; when set, a layer's `x` is
      its producer's output and its `y` its op's rule applied to `x`; a merge's `y` is its
      rule (`ops.merge`) applied to its inputs; a save passes its input on and a block
      instance its body's output. `shapes=True` requires them set, `False` unset.

    `CNNDSL_DEBUG=1` makes `compile_text` run this after every pass; the tests run it on
    every example and on generated networks.
    """
    problems: list[str] = []
    seen: dict[tuple[str, ...], Node] = {}
    spans = bool(net.source.text)
    for _, n in walk(net):
        label = _label(n)
        if spans and n.span == NOSPAN:
            problems.append(f"{label} has no source span")
        if not isinstance(n, Save):
            if n.path in seen:
                problems.append(f"{label}: its path is also that of {_label(seen[n.path])}")
            seen.setdefault(n.path, n)
    if shapes is None:
        have = [getattr(n, "y", None) is not None for _, n in walk(net)]
        shapes = any(have)
        if shapes and not all(have):
            problems.append(f"only {sum(have)} of its {len(have)} nodes have shapes")
    try:
        _Check(shapes, problems).run(net.body, net.input if shapes else None)
    except KeyError as e:
        problems.append(f"a merge refers to `save` key {e.args[0]!r}, saved nowhere on its way")
    if problems:
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise IRError(f"the IR of `{net.name}` is inconsistent:\n  " + "\n  ".join(problems[:20]) + more)
    return net


def _label(n: Node) -> str:
    if isinstance(n, Save):
        return f"`save {n.label}` ({n.key})"
    what = n.op if isinstance(n, Layer) else n.block if isinstance(n, Group) else n.kind
    return f"`{what}` {'.'.join(n.path)}"


class _Check(Walker["Shape | None"]):
    """The dataflow over shapes, comparing each node's recorded shapes with the one that flows
    into it and its rule's output; it notes every difference and rebuilds nothing."""

    rebuild = False

    def __init__(self, shapes: bool, problems: list[str]) -> None:
        self.shapes, self.problems = shapes, problems

    def _set(self, n: Node, *values: Shape | None) -> bool:
        if not self.shapes:
            if any(v is not None for v in values):
                self.problems.append(f"{_label(n)} has a shape, though other nodes have none")
            return False
        if any(v is None for v in values):
            self.problems.append(f"{_label(n)} has no shape")
            return False
        return True

    def _same(self, n: Node, what: str, got: Shape | None, want: Shape | None) -> None:
        if want is not None and got != want:
            self.problems.append(f"{_label(n)}: {what} is {got}, but {want} flows there")

    def layer(self, n: Layer, x: Shape | None) -> tuple[Layer, Shape | None]:
        from .ops import REGISTRY
        from .ops.base import ShapeCtx

        if self._set(n, n.x, n.y):
            self._same(n, "its input shape `x`", n.x, x)
            ctx = ShapeCtx(span=n.span, text=n.text, producer="its producer", x=n.x)  # type: ignore[arg-type]
            try:
                self._same(n, "its output shape `y`", n.y, REGISTRY[n.op].infer(n.args, n.x, ctx))
            except CnnError as e:
                self.problems.append(f"{_label(n)}: its op's shape rule rejects its input {n.x}: {e.message}")
        return n, n.y

    def merge(self, n: Merge | MergeRef, xs: list[Shape | None], labels: list[str]) -> tuple[Node, Shape | None]:
        from .ops import MERGES

        if self._set(n, n.y) and all(x is not None for x in xs):
            try:
                want = MERGES[n.kind].infer(xs, labels, n.span, residual=getattr(n, "residual", False))
                self._same(n, "its output shape `y`", n.y, want)
            except CnnError as e:
                self.problems.append(f"{_label(n)}: its inputs {', '.join(map(str, xs))} do not merge: {e.message}")
        return n, n.y

    def save(self, n: Save, x: Shape | None) -> Save:
        if self._set(n, n.y):
            self._same(n, "its shape", n.y, x)
        return n

    def group(self, n: Group, y: Shape | None) -> Group:
        if self._set(n, n.y):
            self._same(n, "its output shape", n.y, y)
        return n
