"""The IR: an expanded, immutable tree of layers, merges and block instances.

`passes.expand` builds it from the AST (blocks inlined as `Group`s, arguments bound and
evaluated, every layer named); `passes.infer_shapes` fills `x`/`y` shapes; `count_costs`
and `trace_receptive_field` fill the rest. Every report and backend reads this, nothing
re-parses text. Spans and call sites are excluded from equality.

Names: a layer's `path` is its scope path plus its name, e.g. `("basic2", "conv1")`; this is
the key of its variables (`params["basic2"]["conv1"]["kernel"]`) and in checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

from .errors import Source, Span
from .ops.base import Args
from .shape import Shape

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


def walk(chain: Chain, depth: int = 0) -> Iterator[tuple[int, Node]]:
    """Every node in execution order with its nesting depth (branches before their merge)."""
    for item in chain.items:
        if isinstance(item, Group):
            yield depth, item
            yield from walk(item.body, depth + 1)
        elif isinstance(item, Merge):
            for b in item.branches:
                yield from walk(b, depth + 1)
            yield depth, item
        else:
            yield depth, item


def layers(chain: Chain) -> Iterator[Layer]:
    for _, n in walk(chain):
        if isinstance(n, Layer):
            yield n


def map_layers(chain: Chain, fn) -> Chain:
    """A copy of `chain` with `fn(layer)` in place of every layer (groups and branches too)."""
    import dataclasses

    out: list[Node] = []
    for n in chain.items:
        if isinstance(n, Layer):
            n = fn(n)
        elif isinstance(n, Group):
            n = dataclasses.replace(n, body=map_layers(n.body, fn))
        elif isinstance(n, Merge):
            n = dataclasses.replace(n, branches=tuple(map_layers(b, fn) for b in n.branches))
        out.append(n)
    return Chain(items=tuple(out))
