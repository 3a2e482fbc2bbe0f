"""Parameters (trainable / non-trainable) and multiply-accumulates of every layer.

A MAC is one multiply-add (reported FLOPs = 2 x MACs); activations, pooling, normalisation
and merges are not counted. Needs shapes (`infer_shapes`).
"""

from __future__ import annotations

import dataclasses

from .. import ir
from ..ops import REGISTRY


def count_costs(net: ir.Network) -> ir.Network:
    def cost(n: ir.Node) -> ir.Node:
        if not isinstance(n, ir.Layer) or n.x is None or n.y is None:
            return n
        op = REGISTRY[n.op]
        params, fixed = op.count(n.args, n.x, n.y)
        return dataclasses.replace(n, params=params, fixed=fixed, macs=op.macs(n.args, n.x, n.y))

    return ir.rewrite(net, node=cost)
