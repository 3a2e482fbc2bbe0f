"""The compiler's passes, in order. Each is `Network -> Network`.

`expand` (AST -> IR) runs before these; reports and backends read their result.
"""

from __future__ import annotations

from .count_costs import count_costs
from .expand import expand
from .infer_shapes import infer_shapes
from .receptive_field import trace_receptive_field

PASSES = (infer_shapes, count_costs, trace_receptive_field)

__all__ = ["PASSES", "count_costs", "expand", "infer_shapes", "trace_receptive_field"]
