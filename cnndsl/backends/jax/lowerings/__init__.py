"""The JAX lowering table: op (registry name) -> `Lowering`, and merge kind -> function.

One module per module of `cnndsl/ops/` holds the lowerings of its ops; the CPU kernels they
choose between are in `../kernels/`. A lowering (`base.Lowering`) computes a layer from its
arguments, variables and input, reading the IR's shapes (`ApplyCtx.x`, `.y`), and carries
what is particular to this backend: its implementations (`impls`), the default per shape,
mode and batch (`choose`), the autotuner's candidates, and mixed-precision support.
tests/backends/jax/test_lowerings.py checks that every registered op and merge kind is here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import activation, channel, conv, dense, filters, merge, norm, pool, preprocess, resample
from .base import ApplyCtx, Lowering, lowering

LOWERINGS: dict[str, Lowering] = {
    "relu": activation.relu,
    "relu6": activation.relu6,
    "silu": activation.silu,
    "softplus": activation.softplus,
    "sigmoid": activation.sigmoid,
    "tanh": activation.tanh,
    "softmax": activation.softmax,
    "logsoftmax": activation.logsoftmax,
    "identity": activation.identity,
    "leakyrelu": activation.leakyrelu,
    "elu": activation.elu,
    "prelu": activation.prelu,
    "glu": activation.glu,
    "gelu": activation.gelu,
    "hardsigmoid": activation.hardsigmoid,
    "hardswish": activation.hardswish,
    "mish": activation.mish,
    "conv": conv.conv,
    "dwconv": conv.dwconv,
    "deconv": conv.deconv,
    "flatten": dense.flatten,
    "dense": dense.dense,
    "dropout": dense.dropout,
    "droppath": dense.droppath,
    "slice": channel.slice_,
    "shuffle": channel.shuffle,
    "layerscale": channel.layerscale,
    "bn": norm.bn,
    "layernorm": norm.layernorm,
    "groupnorm": norm.groupnorm,
    "instancenorm": norm.instancenorm,
    "lrn": norm.lrn,
    "maxpool": pool.maxpool,
    "minpool": pool.minpool,
    "sumpool": pool.sumpool,
    "avgpool": pool.avgpool,
    "gap": pool.gap,
    "gmp": pool.gmp,
    "scale": preprocess.scale,
    "normalize": preprocess.normalize,
    "grayscale": preprocess.grayscale,
    "filter": filters.filter_,
    "upsample": resample.upsample,
    "pad": resample.pad,
    "adaptiveavgpool": resample.adaptiveavgpool,
    "adaptivemaxpool": resample.adaptivemaxpool,
    "fracmaxpool": resample.fracmaxpool,
}

# Merge kinds (`cnndsl.ops.MERGES`) -> `fn(xs)` joining the branches' outputs.
MERGE_LOWERINGS: dict[str, Callable[[list[Any]], Any]] = {
    "add": merge.add,
    "concat": merge.concat,
    "mul": merge.mul,
}

__all__ = ["LOWERINGS", "MERGE_LOWERINGS", "ApplyCtx", "Lowering", "lowering"]
