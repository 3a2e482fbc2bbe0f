"""The compiler's passes, listed here and only here (docs/passes.md: running a subset,
adding one).

`expand` (AST -> IR) runs first; then `compile_text` runs `PASSES`, each `Network -> Network`,
in order; reports and backends read the result. `INFERENCE_PASSES`, each
`(Network, Weights) -> Network`, rewrite a trained network for eval mode and need its
variables, so a backend runs them (`Net.for_inference`, `backends/jax/inference.py`).
"""

from __future__ import annotations

from collections.abc import Callable

from .. import ir
from .count_costs import count_costs
from .expand import expand
from .fold_inference import drop_random, fold_after, fold_before
from .infer_shapes import infer_shapes
from .receptive_field import trace_receptive_field

Pass = Callable[[ir.Network], ir.Network]

PASSES: tuple[Pass, ...] = (infer_shapes, count_costs, trace_receptive_field)
INFERENCE_PASSES = (drop_random, fold_after, fold_before)

__all__ = [
    "INFERENCE_PASSES",
    "PASSES",
    "Pass",
    "count_costs",
    "drop_random",
    "expand",
    "fold_after",
    "fold_before",
    "infer_shapes",
    "trace_receptive_field",
]
