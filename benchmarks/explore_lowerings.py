"""What makes a JAX train step fast on this CPU? Measures lowerings, layouts and XLA flags.

    python benchmarks/explore_lowerings.py                       # all sections (~15 min)
    python benchmarks/explore_lowerings.py --section layers      # per-layer conv fwd/dx/dw
    python benchmarks/explore_lowerings.py --section lenet --section resnet
    python benchmarks/explore_lowerings.py --section flags --out flags.json

Sections:

* `layers`: every distinct conv of LeNet-5 (batch 128) and CIFAR ResNet-18 (batch 64), each
  part of its train step timed alone: forward `y = conv(x, w)`, input gradient `dx` and
  weight gradient `dw`, for the lowerings in `CONV_IMPLS`, with the CPU cores each one keeps
  busy; also max-pool forward + backward. The fastest lowering per (shape, part) is the
  "tuned" choice an autotuner would cache.
* `lenet`, `resnet`: whole train step and inference with a lowering per network, including
  `tuned` (per layer and per part, from `layers`, via `jax.custom_vjp`).
* `flags`: the same whole-network steps in child processes under XLA flag sets and CPU
  affinities (`XLA_FLAGS` must be set before JAX starts).

Every lowering is checked against `lax.conv_general_dilated` (values and gradients) before
it is timed. Timing method: benchmarks/harness.py.
"""

from __future__ import annotations

import argparse
import ast
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import reference as ref  # noqa: E402
from jax import lax  # noqa: E402

Array = jax.Array
Pad = int  # symmetric padding on both spatial axes

# --------------------------------------------------------------------------------------
# Conv lowerings. All take NHWC x and HWIO w (the NCHW one transposes at its boundary only
# in the per-layer section, where inputs are generated in its own layout).


def conv_lax(x: Array, w: Array, stride: int, pad: Pad) -> Array:
    """`lax.conv_general_dilated`, NHWC / HWIO."""
    return lax.conv_general_dilated(
        x, w, (stride, stride), [(pad, pad)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def conv_lax_nchw(x: Array, w: Array, stride: int, pad: Pad) -> Array:
    """`lax.conv_general_dilated` with x: (N, C, H, W) and w: (C_out, C_in, kh, kw)."""
    return lax.conv_general_dilated(
        x, w, (stride, stride), [(pad, pad)] * 2, dimension_numbers=("NCHW", "OIHW", "NCHW")
    )


def patches_by_slicing(x: Array, kh: int, kw: int, stride: int, pad: Pad) -> Array:
    """im2col by strided slices: (N, H, W, C) -> (N, H', W', kh * kw * C), (kh, kw, C) order."""
    if pad:
        x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, h, w, c = x.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    cols = [
        lax.slice(x, (0, i, j, 0), (n, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c), (1, stride, stride, 1))
        for i in range(kh)
        for j in range(kw)
    ]
    return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def conv_im2col(x: Array, w: Array, stride: int, pad: Pad) -> Array:
    """Patches by slicing + one matmul `(N H' W', kh kw C_in) @ (kh kw C_in, C_out)`."""
    kh, kw, c_in, c_out = w.shape
    p = patches_by_slicing(x, kh, kw, stride, pad)
    n, ho, wo, k = p.shape
    return (p.reshape(n * ho * wo, k) @ w.reshape(k, c_out)).reshape(n, ho, wo, c_out)


def conv_patches(x: Array, w: Array, stride: int, pad: Pad) -> Array:
    """`lax.conv_general_dilated_patches` (itself a conv with a one-hot kernel) + matmul.

    Its patch features come in (C_in, kh, kw) order, so the kernel is transposed to match.
    """
    kh, kw, c_in, c_out = w.shape
    p = lax.conv_general_dilated_patches(
        x, (kh, kw), (stride, stride), [(pad, pad)] * 2, dimension_numbers=("NHWC", "OIHW", "NHWC")
    )
    n, ho, wo, k = p.shape
    wm = w.transpose(2, 0, 1, 3).reshape(k, c_out)
    return (p.reshape(n * ho * wo, k) @ wm).reshape(n, ho, wo, c_out)


def conv_shifted(x: Array, w: Array, stride: int, pad: Pad) -> Array:
    """Sum over the kh * kw kernel offsets of (shifted slice of x) @ w[i, j].

    The same FLOPs as im2col without materializing the (N H' W', kh kw C_in) patch matrix
    (kh * kw times the input): its gradient is kh * kw matmuls `slice^T @ g` for `dw` and
    `g @ w[i, j]^T` padded back into place for `dx`.
    """
    kh, kw, c_in, c_out = w.shape
    if pad:
        x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, h, wd, _ = x.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    y = None
    for i in range(kh):
        for j in range(kw):
            xs = lax.slice(
                x, (0, i, j, 0), (n, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c_in), (1, stride, stride, 1)
            )
            t = xs.reshape(n * ho * wo, c_in) @ w[i, j]
            y = t if y is None else y + t
    assert y is not None
    return y.reshape(n, ho, wo, c_out)


CONV_IMPLS: dict[str, Callable[[Array, Array, int, Pad], Array]] = {
    "lax": conv_lax,
    "im2col": conv_im2col,
    "patches": conv_patches,
    "shifted": conv_shifted,
}
PARTS = ("fwd", "dx", "dw")


def dw_shifted_per_image(x: Array, g: Array, w_shape: Sequence[int], stride: int, pad: Pad) -> Array:
    """Weight gradient as kh * kw batched matmuls over images, summed: no patch matrix.

    dw[i, j] = sum_n slice_ij(x)[n]^T @ g[n], with `n` kept as a dot batch dimension (XLA
    parallelizes over it; contracting over n, h, w at once runs as one long, slow reduction).
    x: (N, H, W, C_in), g: (N, H', W', C_out) -> (kh, kw, C_in, C_out).
    """
    kh, kw, c_in, c_out = w_shape
    if pad:
        x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, ho, wo, _ = g.shape
    parts = []
    for i in range(kh):
        for j in range(kw):
            xs = lax.slice(
                x, (0, i, j, 0), (n, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, c_in), (1, stride, stride, 1)
            )
            parts.append(jnp.einsum("nhwc,nhwo->nco", xs, g).sum(axis=0))
    return jnp.stack(parts).reshape(kh, kw, c_in, c_out)


# Weight-gradient-only lowerings (the other parts come from CONV_IMPLS' autodiff).
DW_IMPLS: dict[str, Callable[[Array, Array, Sequence[int], int, Pad], Array]] = {
    "shifted_per_image": dw_shifted_per_image,
}


def composed_conv(fwd: str, dx: str, dw: str) -> Callable[[Array, Array, int, Pad], Array]:
    """A conv whose forward, input gradient and weight gradient use separate lowerings.

    Each part is the corresponding part of `CONV_IMPLS[name]` (its JAX autodiff) or, for `dw`,
    a `DW_IMPLS` function, glued with `jax.custom_vjp`; residuals are just (x, w).
    """

    @functools.cache
    def for_config(stride: int, pad: Pad) -> Callable[[Array, Array], Array]:
        def part(name: str) -> Callable[[Array, Array], Array]:
            return lambda x, w: CONV_IMPLS[name](x, w, stride, pad)

        @jax.custom_vjp
        def f(x: Array, w: Array) -> Array:
            return part(fwd)(x, w)

        def f_fwd(x: Array, w: Array) -> tuple[Array, tuple[Array, Array]]:
            return part(fwd)(x, w), (x, w)

        def f_bwd(res: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
            x, w = res
            gx = jax.vjp(lambda x_: part(dx)(x_, w), x)[1](g)[0]
            if dw in DW_IMPLS:
                gw = DW_IMPLS[dw](x, g, w.shape, stride, pad)
            else:
                gw = jax.vjp(lambda w_: part(dw)(x, w_), w)[1](g)[0]
            return gx, gw

        f.defvjp(f_fwd, f_bwd)
        return f

    def conv(x: Array, w: Array, stride: int, pad: Pad) -> Array:
        return for_config(stride, _pad_int(pad))(x, w)

    return conv


def _pad_int(pad: Any) -> int:
    """Padding given as int, 'VALID' or ((p, p), (p, p)) -> p."""
    if isinstance(pad, str):
        if pad != "VALID":
            raise ValueError(f"unsupported padding {pad!r}")
        return 0
    if isinstance(pad, int):
        return pad
    (a, b), (c, d) = pad
    assert a == b == c == d, pad
    return int(a)


def tuned_conv(table: dict[tuple[Any, ...], tuple[str, str, str]], default: str = "lax") -> Callable[..., Array]:
    """A conv that looks up (fwd, dx, dw) lowerings by layer key, as an autotuner's cache would."""

    def conv(x: Array, w: Array, stride: int, pad: Any) -> Array:
        key = layer_key(x.shape, w.shape, stride, _pad_int(pad))
        choice = table.get(key, (default, default, default))
        return composed_conv(*choice)(x, w, stride, pad)

    return conv


def layer_key(x_shape: Sequence[int], w_shape: Sequence[int], stride: int, pad: int) -> tuple[Any, ...]:
    return (tuple(x_shape), tuple(w_shape), stride, pad)


# Pooling, k x k stride k, NHWC.
def pool_reduce_window(x: Array) -> Array:
    return ref.max_pool_lax(x, 2)


def pool_reshape(x: Array) -> Array:
    return ref.max_pool_reshape(x, 2)


@jax.custom_vjp
def pool_reshape_mask(x: Array) -> Array:
    """reshape + max forward; backward routes the gradient through an equality mask.

    One fused elementwise pass instead of JAX's tie-averaging max gradient. Ties all receive
    the gradient, so it equals the true gradient only where tied windows get zero cotangent
    (e.g. relu -> pool, where the tied zeros have zero relu gradient anyway).
    """
    return ref.max_pool_reshape(x, 2)


def _pool_mask_fwd(x: Array) -> tuple[Array, tuple[Array, Array]]:
    y = ref.max_pool_reshape(x, 2)
    return y, (x, y)


def _pool_mask_bwd(res: tuple[Array, Array], g: Array) -> tuple[Array]:
    x, y = res
    n, h, w, c = x.shape
    x6 = x.reshape(n, h // 2, 2, w // 2, 2, c)
    mask = x6 == y.reshape(n, h // 2, 1, w // 2, 1, c)
    return (jnp.where(mask, g.reshape(n, h // 2, 1, w // 2, 1, c), 0.0).reshape(x.shape),)


pool_reshape_mask.defvjp(_pool_mask_fwd, _pool_mask_bwd)

POOL_IMPLS = {"reduce_window": pool_reduce_window, "reshape": pool_reshape, "reshape_mask": pool_reshape_mask}


# --------------------------------------------------------------------------------------
# Layers


@dataclass(frozen=True, slots=True)
class ConvLayer:
    name: str
    batch: int
    hw: int
    c_in: int
    c_out: int
    k: int
    stride: int
    pad: int
    needs_dx: bool = True

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.hw, self.hw, self.c_in)

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        return (self.k, self.k, self.c_in, self.c_out)

    @property
    def out_hw(self) -> int:
        return (self.hw + 2 * self.pad - self.k) // self.stride + 1

    @property
    def fwd_flops(self) -> int:
        return 2 * self.batch * self.out_hw**2 * self.k**2 * self.c_in * self.c_out

    @property
    def key(self) -> tuple[Any, ...]:
        return layer_key(self.x_shape, self.w_shape, self.stride, self.pad)


def lenet_layers(batch: int) -> list[ConvLayer]:
    return [
        ConvLayer(f"lenet.conv1 b{batch}", batch, 32, 1, 6, 5, 1, 0, needs_dx=False),
        ConvLayer(f"lenet.conv2 b{batch}", batch, 14, 6, 16, 5, 1, 0),
    ]


def resnet_layers(batch: int) -> list[ConvLayer]:
    """The distinct convs of the CIFAR ResNet-18 (a repeated shape is listed once)."""
    out = [ConvLayer("resnet.stem 3>64 32x32", batch, 32, 3, 64, 3, 1, 1, needs_dx=False)]
    seen = {out[0].key}
    hw = 32
    for c_in, c_out, stride in ref.RESNET18_BLOCKS:
        ho = hw // stride
        cands = [
            ConvLayer(f"resnet.3x3 {c_in}>{c_out} {hw}x{hw} s{stride}", batch, hw, c_in, c_out, 3, stride, 1),
            ConvLayer(f"resnet.3x3 {c_out}>{c_out} {ho}x{ho}", batch, ho, c_out, c_out, 3, 1, 1),
        ]
        if stride != 1 or c_in != c_out:
            cands.append(
                ConvLayer(f"resnet.1x1 {c_in}>{c_out} {hw}x{hw} s{stride}", batch, hw, c_in, c_out, 1, stride, 0)
            )
        for layer in cands:
            if layer.key not in seen:
                seen.add(layer.key)
                out.append(layer)
        hw = ho
    return out


def _layer_fns(layer: ConvLayer, impl: str) -> tuple[dict[str, Callable[[], Array]], dict[str, Array]]:
    """Zero-argument callables for each part of `layer` under lowering `impl`, and outputs."""
    kx, kw_, kg = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(kx, layer.x_shape, jnp.float32)
    w = jax.random.normal(kw_, layer.w_shape, jnp.float32) / np.sqrt(layer.k**2 * layer.c_in)
    ho = layer.out_hw
    g = jax.random.normal(kg, (layer.batch, ho, ho, layer.c_out), jnp.float32)
    s, p = layer.stride, layer.pad
    if impl == "torch":
        return _torch_layer_fns(layer, x, w, g)
    if impl in DW_IMPLS:
        f_dw = jax.jit(lambda x, g: DW_IMPLS[impl](x, g, layer.w_shape, s, p))
        return {"dw": lambda: f_dw(x, g)}, {"dw": f_dw(x, g)}
    if impl == "lax_nchw":
        x, g = x.transpose(0, 3, 1, 2), g.transpose(0, 3, 1, 2)
        w = w.transpose(3, 2, 0, 1)
        f = conv_lax_nchw
    else:
        f = CONV_IMPLS[impl]
    fwd = jax.jit(lambda x, w: f(x, w, s, p))
    dx = jax.jit(lambda x, w, g: jax.vjp(lambda x_: f(x_, w, s, p), x)[1](g)[0])
    dw = jax.jit(lambda x, w, g: jax.vjp(lambda w_: f(x, w_, s, p), w)[1](g)[0])
    fns = {"fwd": lambda: fwd(x, w), "dx": lambda: dx(x, w, g), "dw": lambda: dw(x, w, g)}
    outs = {k: v() for k, v in fns.items()}
    if impl == "lax_nchw":  # back to NHWC / HWIO for comparison
        outs = {
            "fwd": outs["fwd"].transpose(0, 2, 3, 1),
            "dx": outs["dx"].transpose(0, 2, 3, 1),
            "dw": outs["dw"].transpose(2, 3, 1, 0),
        }
    return fns, outs


def _torch_layer_fns(
    layer: ConvLayer, x: Array, w: Array, g: Array
) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    """PyTorch (oneDNN) eager fwd / dx / dw of the same conv, NCHW, for reference."""
    import torch
    import torch.nn.functional as F

    def t(a: Array, perm: tuple[int, ...]) -> Any:
        return torch.tensor(np.asarray(a).transpose(perm))

    tx, tw, tg = t(x, (0, 3, 1, 2)), t(w, (3, 2, 0, 1)), t(g, (0, 3, 1, 2))
    s, p = layer.stride, layer.pad

    def grads(mask: tuple[bool, bool, bool]) -> Any:
        return torch.ops.aten.convolution_backward(
            tg, tx, tw, None, (s, s), (p, p), (1, 1), False, (0, 0), 1, list(mask)
        )

    fns = {
        "fwd": lambda: F.conv2d(tx, tw, stride=s, padding=p),
        "dx": lambda: grads((True, False, False))[0],
        "dw": lambda: grads((False, True, False))[1],
    }
    with torch.no_grad():
        o = {k: f().numpy() for k, f in fns.items()}
    outs = {
        "fwd": o["fwd"].transpose(0, 2, 3, 1),
        "dx": o["dx"].transpose(0, 2, 3, 1),
        "dw": o["dw"].transpose(2, 3, 1, 0),
    }
    return fns, outs


def cores_used(fn: Callable[[], Any], seconds: float = 0.3) -> float:
    """Average number of CPU cores this process keeps busy while calling `fn` repeatedly."""
    t = os.times()
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < seconds or n == 0:
        harness.block(fn())
        n += 1
    wall = time.perf_counter() - t0
    t1 = os.times()
    return ((t1.user - t.user) + (t1.system - t.system)) / wall


def section_layers(reps: int, min_sample_s: float, impls: Sequence[str]) -> dict[str, Any]:
    """Per-layer, per-part timing of each conv lowering; returns rows and the tuned table."""
    rows: list[dict[str, Any]] = []
    table: dict[str, dict[str, str]] = {}
    layers = lenet_layers(128) + lenet_layers(512) + resnet_layers(64)
    for layer in layers:
        fns: dict[str, dict[str, Callable[[], Array]]] = {}
        ref_out: dict[str, Array] | None = None
        for impl in impls:
            fns[impl], outs = _layer_fns(layer, impl)
            if ref_out is None:
                ref_out = outs
            for part in outs:  # every lowering must agree with the first (lax), relative to scale
                want = np.asarray(ref_out[part])
                atol = 1e-5 * float(np.abs(want).max())
                np.testing.assert_allclose(
                    outs[part], want, rtol=1e-4, atol=atol, err_msg=f"{layer.name} {impl} {part}"
                )
        best: dict[str, str] = {}
        for part in PARTS:
            if part == "dx" and not layer.needs_dx:
                best[part] = "lax"
                continue
            have = [impl for impl in impls if part in fns[impl]]
            t = harness.run_interleaved({impl: fns[impl][part] for impl in have}, reps=reps, min_sample_s=min_sample_s)
            for impl in have:
                rows.append({
                    "layer": layer.name, "part": part, "impl": impl, "ms": 1e3 * t[impl].median,
                    "iqr_ms": 1e3 * t[impl].iqr, "gflops": layer.fwd_flops / t[impl].median / 1e9,
                    "cores": cores_used(fns[impl][part]), "finite": t[impl].finite,
                    "other_load": t[impl].max_other_load,
                })  # fmt: skip
            jax_nhwc = [i for i in have if i in CONV_IMPLS or i in DW_IMPLS]
            best[part] = min(jax_nhwc, key=lambda i: t[i].median)
        table[repr(layer.key)] = best
        print(f"{layer.name}: best fwd={best['fwd']} dx={best['dx']} dw={best['dw']}", flush=True)
    return {"rows": rows, "tuned": table}


def section_pool(reps: int, min_sample_s: float) -> list[dict[str, Any]]:
    """Max-pool 2x2 forward and forward+backward at LeNet's shapes."""
    rows = []
    for shape in ((128, 28, 28, 6), (128, 10, 10, 16), (512, 28, 28, 6)):
        x = jax.random.normal(jax.random.key(0), shape, jnp.float32)
        fns: dict[str, Callable[[], Any]] = {}
        for name, pool in POOL_IMPLS.items():
            f = jax.jit(pool)
            b = jax.jit(lambda x, pool=pool: jax.vjp(pool, x)[1](pool(x))[0])
            fns[f"{name} fwd"] = functools.partial(f, x)
            fns[f"{name} fwd+bwd"] = functools.partial(b, x)
        t = harness.run_interleaved(fns, reps=reps, min_sample_s=min_sample_s)
        for name, tt in t.items():
            rows.append({"shape": shape, "impl": name, "ms": 1e3 * tt.median, "cores": cores_used(fns[name])})
    return rows


# --------------------------------------------------------------------------------------
# Whole networks


def lenet_apply_with(conv: Callable[..., Array], pool: Callable[[Array], Array]) -> ref.ApplyFn:
    """LeNet-5 `ApplyFn` (NHWC) with the given conv and pool lowerings."""

    def apply(params: ref.Params, state: Any, x: Array, train: bool) -> tuple[Array, Any]:
        for name in ("conv1", "conv2"):
            x = pool(jax.nn.relu(conv(x, params[name]["w"], 1, 0) + ref.per_channel(params[name]["b"], 4)))
        return ref._lenet_head(params, x), state

    return apply


def lenet_apply_nchw(params: ref.Params, state: Any, x: Array, train: bool) -> tuple[Array, Any]:
    """LeNet-5 with the whole conv trunk in NCHW / OIHW (input transposed once)."""
    x = x.transpose(0, 3, 1, 2)
    for name in ("conv1", "conv2"):
        w = params[name]["w"].transpose(3, 2, 0, 1)
        y = conv_lax_nchw(x, w, 1, 0) + params[name]["b"].reshape(1, -1, 1, 1)
        n, c, h, wd = y.shape
        x = jax.nn.relu(y).reshape(n, c, h // 2, 2, wd // 2, 2).max(axis=(3, 5))
    return ref._lenet_head(params, x.transpose(0, 2, 3, 1)), state


def _tuned_table(path: str | None) -> dict[tuple[Any, ...], tuple[str, str, str]]:
    if not path or not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)["layers"]["tuned"]
    return {ast.literal_eval(k): (v["fwd"], v["dx"], v["dw"]) for k, v in raw.items()}  # keys: repr() of tuples


def lenet_variants(tuned: dict[tuple[Any, ...], tuple[str, str, str]]) -> dict[str, ref.ApplyFn]:
    v = {
        "lax+reduce_window": lenet_apply_with(conv_lax, pool_reduce_window),
        "lax+reshape": lenet_apply_with(conv_lax, pool_reshape),
        "lax_nchw+reshape": lenet_apply_nchw,
        "im2col+reduce_window": lenet_apply_with(conv_im2col, pool_reduce_window),
        "im2col+reshape": lenet_apply_with(conv_im2col, pool_reshape),
        "patches+reshape": lenet_apply_with(conv_patches, pool_reshape),
        "fwd lax/dx lax/dw im2col+reshape": lenet_apply_with(composed_conv("lax", "lax", "im2col"), pool_reshape),
        "fwd im2col/dx lax/dw im2col+reshape": lenet_apply_with(composed_conv("im2col", "lax", "im2col"), pool_reshape),
        "im2col+reshape_mask": lenet_apply_with(conv_im2col, pool_reshape_mask),
        "fwd im2col/dx lax/dw im2col+reshape_mask": lenet_apply_with(
            composed_conv("im2col", "lax", "im2col"), pool_reshape_mask
        ),
        "fwd lax/dx lax/dw shifted_per_image+reshape": lenet_apply_with(
            composed_conv("lax", "lax", "shifted_per_image"), pool_reshape
        ),
    }
    if tuned:
        v["tuned+reshape"] = lenet_apply_with(tuned_conv(tuned), pool_reshape)
    return v


def resnet_variants(tuned: dict[tuple[Any, ...], tuple[str, str, str]]) -> dict[str, ref.ApplyFn]:
    def with_conv(conv: Callable[..., Array]) -> ref.ApplyFn:
        def conv_any_pad(x: Array, w: Array, stride: int, pad: Any) -> Array:
            return conv(x, w, stride, _pad_int(pad))

        return lambda p, s, x, train: ref.resnet_apply(p, s, x, train, conv=conv_any_pad)

    v = {
        "lax": ref.resnet_apply,
        "im2col": with_conv(conv_im2col),
        "fwd lax/dx lax/dw im2col": with_conv(composed_conv("lax", "lax", "im2col")),
        "fwd lax/dx lax/dw shifted_per_image": with_conv(composed_conv("lax", "lax", "shifted_per_image")),
    }
    if tuned:
        v["tuned"] = with_conv(tuned_conv(tuned))
    return v


def bench_network(
    model: str,
    batch: int,
    variants: dict[str, ref.ApplyFn],
    reps: int,
    min_sample_s: float,
) -> list[dict[str, Any]]:
    """Train step and inference of each variant, interleaved; checks outputs agree."""
    spec = ref.SPECS[model]
    if model == "lenet5":
        params, st = ref.init_lenet_params(jax.random.key(0)), {}
    else:
        params, st = ref.init_resnet_params(jax.random.key(0))
    xs, ys = ref.random_batch(spec, batch)
    x, y = jnp.asarray(xs), jnp.asarray(ys)
    states, trains, infers = {}, {}, {}
    first_logits = None
    for name, apply in variants.items():
        states[name], trains[name], infers[name] = ref.make_jax_fns(
            apply, jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, st)
        )
        logits = infers[name](states[name], x)
        if first_logits is None:
            first_logits = logits
        np.testing.assert_allclose(logits, first_logits, rtol=1e-3, atol=1e-3, err_msg=name)

    def train_fn(name: str) -> Callable[[], Any]:
        def step() -> Any:
            states[name], loss = trains[name](states[name], x, y)
            return states[name], loss

        return step

    t_train = harness.run_interleaved(
        {n: train_fn(n) for n in variants}, reps=reps, min_sample_s=min_sample_s, sync_each=False
    )
    t_infer = harness.run_interleaved(
        {n: functools.partial(infers[n], states[n], x) for n in variants}, reps=reps, min_sample_s=min_sample_s
    )
    rows = []
    for mode, t in (("train", t_train), ("infer", t_infer)):
        for name, tt in t.items():
            fn = train_fn(name) if mode == "train" else functools.partial(infers[name], states[name], x)
            rows.append({
                "model": model, "batch": batch, "mode": mode, "variant": name, "ms": 1e3 * tt.median,
                "iqr_ms": 1e3 * tt.iqr, "images_per_s": batch / tt.median, "cores": cores_used(fn),
                "finite": tt.finite, "other_load": tt.max_other_load,
            })  # fmt: skip
    return rows


# --------------------------------------------------------------------------------------
# Flags (child processes)

FLAG_SETS: dict[str, tuple[str, str | None]] = {
    # name: (XLA_FLAGS, CPU affinity for taskset or None)
    "default": ("", None),
    "one core (taskset -c 0)": ("", "0"),
    "multi_thread_eigen=false": ("--xla_cpu_multi_thread_eigen=false", None),
    "ynn off (NaN workaround)": ("--xla_cpu_experimental_ynn_fusion_type=-dot,-eltwise,-reduce", None),
    "xnn fusion dot,eltwise,reduce": ("--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce", None),
    "xnn graph fusion greedy": ("--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY", None),
    "onednn custom call": ("--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true", None),
    "onednn fusion dot,eltwise,reduce": ("--xla_cpu_experimental_onednn_fusion_type=dot,eltwise,reduce", None),
    "fast math": ("--xla_cpu_enable_fast_math=true", None),
    "concurrency-optimized scheduler": ("--xla_cpu_enable_concurrency_optimized_scheduler=true", None),
}


def section_flags(
    reps: int, min_sample_s: float, flag_names: Sequence[str], nets: Sequence[str]
) -> list[dict[str, Any]]:
    """Run the `--child` network benchmark under each flag set; one process per set."""
    rows = []
    for name in flag_names:
        flags, cpus = FLAG_SETS[name]
        env = {**os.environ, "XLA_FLAGS": flags}
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--child",
            ",".join(nets),
            "--reps",
            str(reps),
            "--min-sample-s",
            str(min_sample_s),
        ]
        if cpus is not None:
            cmd = ["taskset", "-c", cpus, *cmd]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            err = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(f"[{name}] failed: {err}", flush=True)
            rows.append({"flags": name, "xla_flags": flags, "error": err[-300:]})
            continue
        for r in json.loads(proc.stdout.strip().splitlines()[-1]):
            rows.append({"flags": name, "xla_flags": flags, **r})
        print(f"[{name}] done", flush=True)
    return rows


def child(nets: Sequence[str], reps: int, min_sample_s: float) -> None:
    """Child of `section_flags`: a few network variants; prints the rows as one JSON line."""
    rows = []
    if "lenet" in nets:
        v = lenet_variants({})
        keep = ("lax+reduce_window", "im2col+reshape")
        rows += bench_network("lenet5", 128, {k: v[k] for k in keep}, reps, min_sample_s)
    if "resnet" in nets:
        v = resnet_variants({})
        rows += bench_network("resnet18", 64, {k: v[k] for k in ("lax", "im2col")}, reps, min_sample_s)
    print(json.dumps(rows))


# --------------------------------------------------------------------------------------


def _md_table(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
        return str(v)

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--section", action="append", choices=["layers", "pool", "lenet", "resnet", "flags"])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--min-sample-s", type=float, default=0.2)
    p.add_argument(
        "--impls", default="lax,lax_nchw,im2col,shifted,shifted_per_image,patches,torch",
        help="conv lowerings for `layers` (the first is the reference; torch: PyTorch eager, if installed)",
    )  # fmt: skip
    p.add_argument("--flags", default=",".join(FLAG_SETS), help="flag-set names for `flags`")
    p.add_argument("--flag-nets", default="lenet,resnet")
    p.add_argument("--tuned", default=None, help="JSON from a previous run with `layers`, for `tuned` variants")
    p.add_argument("--out", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child.split(","), args.reps, args.min_sample_s)
        return {}
    sections = args.section or ["layers", "pool", "lenet", "resnet", "flags"]
    result: dict[str, Any] = {"machine": harness.machine_info()}
    print(harness.machine_markdown(result["machine"]), flush=True)
    tuned = _tuned_table(args.tuned)
    if "layers" in sections:
        result["layers"] = section_layers(args.reps, args.min_sample_s, args.impls.split(","))
        print(
            _md_table(result["layers"]["rows"], ["layer", "part", "impl", "ms", "gflops", "cores", "finite"]),
            flush=True,
        )
        tuned = {ast.literal_eval(k): (v["fwd"], v["dx"], v["dw"]) for k, v in result["layers"]["tuned"].items()}
    if "pool" in sections:
        result["pool"] = section_pool(args.reps, args.min_sample_s)
        print(_md_table(result["pool"], ["shape", "impl", "ms", "cores"]), flush=True)
    for net, batches in (("lenet", (128, 512)), ("resnet", (64,))):
        if net in sections:
            rows = []
            for b in batches:
                variants = lenet_variants(tuned) if net == "lenet" else resnet_variants(tuned)
                rows += bench_network(
                    "lenet5" if net == "lenet" else "resnet18", b, variants, args.reps, args.min_sample_s
                )
            result[net] = rows
            print(
                _md_table(
                    rows,
                    [
                        "model",
                        "batch",
                        "mode",
                        "variant",
                        "images_per_s",
                        "ms",
                        "iqr_ms",
                        "cores",
                        "finite",
                        "other_load",
                    ],
                ),
                flush=True,
            )
    if "flags" in sections:
        result["flags"] = section_flags(args.reps, args.min_sample_s, args.flags.split(","), args.flag_nets.split(","))
        print(
            _md_table(
                result["flags"],
                ["flags", "model", "mode", "variant", "images_per_s", "ms", "cores", "finite", "other_load"],
            ),
            flush=True,
        )
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1, default=str)
    return result


if __name__ == "__main__":
    main()
