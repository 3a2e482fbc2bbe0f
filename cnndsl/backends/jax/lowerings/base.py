"""What every JAX lowering has: the trace-time context (`ApplyCtx`) and the `Lowering` object.

A lowering computes one op's layer in JAX from its bound arguments `a`, its variables `p` (by
name), the input array `x` and the context; it reads the IR's shapes (`ctx.x`, `ctx.y`) and
never works a shape out again. What is particular to this backend travels with it: its
alternative implementations (`impls`, the values of `forward(lowering=...)`), the default
choice per shape and mode (`choose`), the ones worth timing (`candidates`, the autotuner's),
why one does not apply (`why_not`) and whether it computes in a low-precision dtype
(`mixed_precision`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ....shape import Shape
from ....syntax.binder import Args


@dataclass
class ApplyCtx:
    """What a lowering may use at trace time: the mode, RNG keys, the IR's shapes for this
    layer (`x`, `y`, so lowerings never recompute a shape), and state updates it makes."""

    train: bool
    key: Any = None  # a jax PRNG key or None
    x: Shape | None = None  # the layer's input and output shapes, from the IR
    y: Shape | None = None
    dropout: bool = True  # False: dropout is off even in training mode (NNX `deterministic`)
    impl: str | None = None  # one of the lowering's `impls`; None: its default (`choose`)
    accumulate: Any = None  # float32 when inputs/kernels were cast to a low compute dtype
    updates: dict[str, Any] = field(default_factory=dict)


Apply = Callable[[Args, dict[str, Any], Any, ApplyCtx], Any]


class Lowering:
    """One op's JAX lowering: `fn(a, p, x, ctx) -> y` (or a subclass overriding `apply`).

    `mixed_precision`: under a low-precision compute dtype the input and `kernel` are cast to
    it and the lowering accumulates in `ctx.accumulate` (float32)."""

    impls: tuple[str, ...] = ("xla",)

    def __init__(self, fn: Apply | None = None, *, mixed_precision: bool = False) -> None:
        self.fn = fn
        self.mixed_precision = mixed_precision
        if fn is not None:
            self.__doc__ = fn.__doc__

    def apply(self, a: Args, p: dict[str, Any], x: Any, ctx: ApplyCtx) -> Any:
        assert self.fn is not None, "a Lowering without a function overrides `apply`"
        return self.fn(a, p, x, ctx)

    def choose(self, a: Args, x: Shape, y: Shape, train: bool, batch: int) -> str:
        """The default implementation for this layer, mode and batch size."""
        return self.impls[0]

    def candidates(self, a: Args, x: Shape, y: Shape, train: bool) -> tuple[str, ...]:
        """The implementations worth measuring for this layer (the autotuner's candidates):
        those that compute it differently from the others here (the rest fall back to XLA's)."""
        return self.impls

    def why_not(self, a: Args, x: Shape, impl: str) -> str | None:
        """Why `impl`, one of `impls`, does not compute this layer (None: no particular reason)."""
        return None


def lowering(fn: Apply) -> Lowering:
    """`@lowering` over `def op(a, p, x, ctx)`: the op's single-implementation lowering."""
    return Lowering(fn)
