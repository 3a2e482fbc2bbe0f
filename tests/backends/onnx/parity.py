"""Shared by the ONNX tests: run a network in JAX (`apply`, eval mode) and in onnxruntime.

Parity is measured as `max |onnx - jax| / max |jax|`: the largest difference relative to the
output's scale (an element-wise ratio is meaningless where outputs are near 0).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np
import onnx
import onnxruntime as ort

import cnndsl

TOLERANCE = 1e-4


def randomize(variables: dict, seed: int = 0) -> dict:
    """The variables with every bias, BN scale/shift and statistic, PReLU slope and so on
    moved away from its initial value (zero biases and unit statistics would hide mistakes);
    kernels keep their LeCun-normal draw, fixed filter kernels stay exact."""
    rng = np.random.default_rng(seed)

    def go(tree: dict, coll: str) -> dict:
        out: dict[str, Any] = {}
        for k, v in tree.items():
            if isinstance(v, dict):
                out[k] = go(v, coll)
                continue
            v = np.asarray(v, np.float32)
            if coll == "fixed" or k == "kernel":
                out[k] = v
            elif coll == "batch_stats" and k == "var":
                out[k] = rng.uniform(0.5, 2.0, v.shape).astype(np.float32)
            else:
                out[k] = (v + rng.normal(0.0, 0.3, v.shape)).astype(np.float32)
        return out

    return {coll: go(tree, coll) for coll, tree in variables.items()}


def session(model: onnx.ModelProto, threads: int | None = None) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def rel_diff(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = float(np.abs(want).max())
    return float(np.abs(got - want).max()) / (scale if scale > 0 else 1.0)


def compare(net: cnndsl.Net, batch: int = 2, seed: int = 0, **export: Any) -> tuple[float, onnx.ModelProto]:
    """Export `net` (randomized variables), check the model fully, and return the relative
    difference between onnxruntime and JAX on a random input of `batch` examples."""
    variables, apply = net.functional(jax.random.key(seed))
    variables = randomize(variables, seed)
    model = net.to_onnx(variables, batch=batch, **export)
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(seed + 1).normal(size=net.input.array_shape(batch)).astype(np.float32)
    want = np.asarray(jax.jit(apply)(variables, x))
    layout = export.get("layout", "nhwc")
    feed = x if layout == "nhwc" or not net.input.rank else np.moveaxis(x, -1, 1)
    got = session(model).run(None, {"input": feed})[0]
    if layout == "nchw" and net.output.rank:
        got = np.moveaxis(got, 1, -1)
    return rel_diff(got, want), model


def timed(fn: Any, repeats: int = 5) -> float:
    """The best of `repeats` wall times of `fn()` in seconds (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best
