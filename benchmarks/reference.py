"""Hand-written reference models: the baselines the cnndsl compiler is measured against.

Written the way a competent user would write them by hand, with no compiler knowledge:

* LeNet-5 on 1@32x32 (array `(N, 32, 32, 1)`), 61,706 parameters:
  - Flax NNX (`LeNet5`): `nnx.Conv` with kernel tuples, `nnx.Linear`, `nnx.max_pool`;
  - plain JAX, two lowerings of the same parameters (`lenet_apply_lax`, `lenet_apply_im2col`):
    (a) `lax.conv_general_dilated` + `lax.reduce_window`,
    (b) convolution as patches + matmul (im2col by explicit slicing), pooling as reshape + max;
  - PyTorch eager (`torch_lenet5`).
* CIFAR ResNet-18 on 3@32x32 (torchvision `BasicBlock` layout, CIFAR stem: conv 64 3x3 s1 p1
  without bias -> BN -> relu, no max-pool; stages 64/128/256/512 x 2 blocks; stride 2 with a
  1x1 conv + BN projection at the start of stages 2-4; global average pool; dense 10),
  11,173,962 parameters:
  - Flax NNX (`ResNet18`), plain JAX (`resnet_apply`), PyTorch eager (`torch_resnet18`).

Every model comes with a train step (softmax cross-entropy, `optax.sgd(0.01, momentum=0.9)`,
the same update rule as `torch.optim.SGD(lr=0.01, momentum=0.9)`) and an inference function:

* JAX (Flax and plain): `make_jax_fns` builds a pure `train_step(state, x, y) -> (state, loss)`
  jitted once with the whole state donated (`nnx.split` once, never `nnx.jit` in the hot loop:
  see docs/STYLE.md), BatchNorm in train mode, and a jitted `infer(state, x) -> logits` with
  BatchNorm in eval mode (running statistics).
* PyTorch: `make_torch_fns` wraps a module and `torch.optim.SGD` the usual way.

Conventions: arrays are NHWC (`(N, H, W, D)`) in JAX and NCHW in PyTorch; conv kernels are
HWIO in JAX and OIHW in PyTorch; dense kernels `(in, out)` in JAX, `(out, in)` in PyTorch.
BatchNorm momentum is 0.9 in Flax terms (PyTorch's default 0.1), epsilon 1e-5, so the
frameworks compute the same function.

FLOPs: one multiply-add is 2 FLOPs; only conv and dense layers are counted (`ModelSpec`);
a train step is counted as 3x the forward pass (forward, input gradient, weight gradient).

`python benchmarks/reference.py` checks the models: equal parameter counts across
frameworks and numerically equal outputs (and LeNet gradients) given the same weights.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import lax

Array: TypeAlias = jax.Array
Params: TypeAlias = Any  # a pytree of arrays
# JAX train state: (params, model_state, opt_state); model_state holds BatchNorm statistics.
JaxState: TypeAlias = tuple[Any, Any, Any]
# conv(x, w, stride, padding): x (N, H, W, C_in), w (kh, kw, C_in, C_out) -> (N, H', W', C_out)
ConvFn: TypeAlias = Callable[[Array, Array, int, Any], Array]
# apply(params, model_state, x, train) -> (logits, new_model_state)
ApplyFn: TypeAlias = Callable[[Params, Any, Array, bool], tuple[Array, Any]]

LEARNING_RATE = 0.01
MOMENTUM = 0.9
BN_MOMENTUM = 0.9  # Flax convention: running = m * running + (1 - m) * batch
BN_EPSILON = 1e-5


def make_optimizer() -> optax.GradientTransformation:
    """SGD with momentum 0.9, the optimizer every contender uses."""
    return optax.sgd(LEARNING_RATE, momentum=MOMENTUM)


# --------------------------------------------------------------------------------------
# Model specifications and FLOP counts


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What a benchmark needs to know about a model, independent of the framework.

    `forward_flops` is per image, conv and dense layers only, 2 FLOPs per multiply-add.
    """

    name: str
    input_hwc: tuple[int, int, int]
    num_classes: int
    params: int
    forward_flops: int

    @property
    def forward_macs(self) -> int:
        return self.forward_flops // 2

    def train_flops(self, batch: int) -> int:
        """FLOPs of one train step: 3x forward (forward + input grad + weight grad)."""
        return 3 * self.forward_flops * batch

    def infer_flops(self, batch: int) -> int:
        return self.forward_flops * batch


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def _lenet_macs() -> int:
    # (H, kernel, c_in, c_out) for the valid 5x5 convs, then dense (in, out).
    conv = 28 * 28 * 25 * 1 * 6 + 10 * 10 * 25 * 6 * 16
    dense = 400 * 120 + 120 * 84 + 84 * 10
    return conv + dense


# (c_in, c_out, stride) of each BasicBlock of the CIFAR ResNet-18.
RESNET18_BLOCKS: tuple[tuple[int, int, int], ...] = (
    (64, 64, 1),
    (64, 64, 1),
    (64, 128, 2),
    (128, 128, 1),
    (128, 256, 2),
    (256, 256, 1),
    (256, 512, 2),
    (512, 512, 1),
)


def _resnet18_macs(size: int = 32, num_classes: int = 10) -> int:
    h = size
    macs = h * h * 9 * 3 * 64  # stem
    for c_in, c_out, stride in RESNET18_BLOCKS:
        ho = _conv_out(h, 3, stride, 1)
        macs += ho * ho * 9 * c_in * c_out + ho * ho * 9 * c_out * c_out
        if stride != 1 or c_in != c_out:
            macs += ho * ho * c_in * c_out
        h = ho
    return macs + 512 * num_classes


def _resnet18_params(num_classes: int = 10) -> int:
    n = 9 * 3 * 64 + 2 * 64  # stem conv + BN scale/bias
    for c_in, c_out, stride in RESNET18_BLOCKS:
        n += 9 * c_in * c_out + 9 * c_out * c_out + 4 * c_out
        if stride != 1 or c_in != c_out:
            n += c_in * c_out + 2 * c_out
    return n + 512 * num_classes + num_classes


LENET5 = ModelSpec("lenet5", (32, 32, 1), 10, 61_706, 2 * _lenet_macs())
RESNET18 = ModelSpec("resnet18", (32, 32, 3), 10, _resnet18_params(), 2 * _resnet18_macs())
SPECS: dict[str, ModelSpec] = {s.name: s for s in (LENET5, RESNET18)}


# --------------------------------------------------------------------------------------
# Flax NNX


class LeNet5(nnx.Module):
    """LeNet-5 in Flax NNX. x: (N, 32, 32, 1) -> logits (N, 10)."""

    def __init__(self, *, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(1, 6, (5, 5), padding="VALID", rngs=rngs)
        self.conv2 = nnx.Conv(6, 16, (5, 5), padding="VALID", rngs=rngs)
        self.fc1 = nnx.Linear(16 * 5 * 5, 120, rngs=rngs)
        self.fc2 = nnx.Linear(120, 84, rngs=rngs)
        self.fc3 = nnx.Linear(84, 10, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        x = nnx.max_pool(nnx.relu(self.conv1(x)), (2, 2), strides=(2, 2))  # (N, 14, 14, 6)
        x = nnx.max_pool(nnx.relu(self.conv2(x)), (2, 2), strides=(2, 2))  # (N, 5, 5, 16)
        x = x.reshape(x.shape[0], -1)
        x = nnx.relu(self.fc1(x))
        x = nnx.relu(self.fc2(x))
        return self.fc3(x)


_PAD1 = ((1, 1), (1, 1))  # PyTorch's padding=1 (Flax "SAME" pads stride-2 convs asymmetrically)


class BasicBlock(nnx.Module):
    """torchvision BasicBlock: conv3x3-BN-relu-conv3x3-BN, + identity or 1x1 conv-BN, relu."""

    def __init__(self, c_in: int, c_out: int, stride: int, *, rngs: nnx.Rngs) -> None:
        s = (stride, stride)
        self.conv1 = nnx.Conv(c_in, c_out, (3, 3), s, padding=_PAD1, use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(c_out, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, rngs=rngs)
        self.conv2 = nnx.Conv(c_out, c_out, (3, 3), padding=_PAD1, use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(c_out, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, rngs=rngs)
        # A 1x1 conv + BN projection where the shape changes (assigned once: NNX makes an
        # attribute first set to None static, and then refuses a module there).
        self.proj_conv: nnx.Conv | None
        self.proj_bn: nnx.BatchNorm | None
        if stride != 1 or c_in != c_out:
            self.proj_conv = nnx.Conv(c_in, c_out, (1, 1), s, padding="VALID", use_bias=False, rngs=rngs)
            self.proj_bn = nnx.BatchNorm(c_out, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, rngs=rngs)
        else:
            self.proj_conv = self.proj_bn = None

    def __call__(self, x: Array) -> Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if self.proj_conv is not None and self.proj_bn is not None:
            x = self.proj_bn(self.proj_conv(x))
        return nnx.relu(x + y)


class ResNet18(nnx.Module):
    """CIFAR ResNet-18 in Flax NNX. x: (N, 32, 32, 3) -> logits (N, num_classes)."""

    def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(3, 64, (3, 3), padding=_PAD1, use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(64, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, rngs=rngs)
        self.blocks = nnx.List([BasicBlock(c_in, c_out, stride, rngs=rngs) for c_in, c_out, stride in RESNET18_BLOCKS])
        self.fc = nnx.Linear(512, num_classes, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        x = nnx.relu(self.bn1(self.conv1(x)))
        for block in self.blocks:
            x = block(x)
        return self.fc(x.mean(axis=(1, 2)))  # global average pool: (N, 4, 4, 512) -> (N, 512)


def nnx_param_count(model: nnx.Module) -> int:
    """Number of trainable parameters (`nnx.Param`; BatchNorm statistics excluded)."""
    return sum(int(p.size) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def nnx_apply_fn(model: nnx.Module) -> tuple[ApplyFn, Params, Any]:
    """Split an NNX model once into a pure `apply` plus its params and other state.

    Returns `(apply, params, model_state)`; `apply(params, model_state, x, train)` merges the
    train-mode or eval-mode graph (BatchNorm batch vs running statistics) at trace time.
    """
    model.eval()
    graphdef_eval = nnx.graphdef(model)
    model.train()
    graphdef_train, params, model_state = nnx.split(model, nnx.Param, ...)

    def apply(p: Params, s: Any, x: Array, train: bool) -> tuple[Array, Any]:
        # copy=True: split's States hold the model's own Variable objects; merging them
        # without a copy inside jax.grad makes BatchNorm's update raise TraceContextError.
        m = nnx.merge(graphdef_train if train else graphdef_eval, p, s, copy=True)
        logits = m(x)
        return logits, nnx.split(m, nnx.Param, ...)[2] if train else s

    return apply, params, model_state


# --------------------------------------------------------------------------------------
# Plain JAX: LeNet-5


def _dense_init(key: Array, n_in: int, n_out: int) -> dict[str, Array]:
    w = jax.random.normal(key, (n_in, n_out), jnp.float32) / math.sqrt(n_in)
    return {"w": w, "b": jnp.zeros((n_out,), jnp.float32)}


def _conv_init(key: Array, k: int, c_in: int, c_out: int, bias: bool = True) -> dict[str, Array]:
    w = jax.random.normal(key, (k, k, c_in, c_out), jnp.float32) / math.sqrt(k * k * c_in)
    out = {"w": w}
    if bias:
        out["b"] = jnp.zeros((c_out,), jnp.float32)
    return out


def init_lenet_params(key: Array) -> Params:
    """LeNet-5 parameters: conv kernels HWIO, dense kernels (in, out)."""
    k = jax.random.split(key, 5)
    return {
        "conv1": _conv_init(k[0], 5, 1, 6),
        "conv2": _conv_init(k[1], 5, 6, 16),
        "fc1": _dense_init(k[2], 400, 120),
        "fc2": _dense_init(k[3], 120, 84),
        "fc3": _dense_init(k[4], 84, 10),
    }


_NHWC = ("NHWC", "HWIO", "NHWC")


def per_channel(v: Array, ndim: int) -> Array:
    """A per-channel vector `(C,)` shaped to broadcast over `ndim`-d channels-last arrays.

    Explicit, so the models also run under `jax_numpy_rank_promotion="raise"`.
    """
    return v.reshape((1,) * (ndim - 1) + (-1,))


def conv_lax(x: Array, w: Array, stride: int = 1, padding: Sequence[tuple[int, int]] | str = "VALID") -> Array:
    """x: (N, H, W, C_in), w: (kh, kw, C_in, C_out) -> (N, H', W', C_out)."""
    return lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=_NHWC)


def max_pool_lax(x: Array, k: int = 2) -> Array:
    """k x k max-pool, stride k, with `lax.reduce_window`. x: (N, H, W, C)."""
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, k, k, 1), (1, k, k, 1), "VALID")


def conv_im2col(x: Array, w: Array) -> Array:
    """Valid, stride-1 convolution as patches + one matmul.

    The patches are built by explicit slicing, in (kh, kw, C_in) order so that the HWIO kernel
    reshapes to `(kh * kw * C_in, C_out)` without a transpose.
    x: (N, H, W, C_in), w: (kh, kw, C_in, C_out) -> (N, H - kh + 1, W - kw + 1, C_out).
    """
    kh, kw, c_in, c_out = w.shape
    n, h, wd, _ = x.shape
    ho, wo = h - kh + 1, wd - kw + 1
    cols = [x[:, i : i + ho, j : j + wo, :] for i in range(kh) for j in range(kw)]
    patches = jnp.concatenate(cols, axis=-1)  # (N, ho, wo, kh * kw * C_in)
    return (patches.reshape(n * ho * wo, kh * kw * c_in) @ w.reshape(kh * kw * c_in, c_out)).reshape(n, ho, wo, c_out)


def max_pool_reshape(x: Array, k: int = 2) -> Array:
    """k x k max-pool, stride k, as reshape + max (H and W divisible by k). x: (N, H, W, C)."""
    n, h, w, c = x.shape
    return x.reshape(n, h // k, k, w // k, k, c).max(axis=(2, 4))


def _lenet_head(params: Params, x: Array) -> Array:
    x = x.reshape(x.shape[0], -1)  # (N, 5 * 5 * 16) in (H, W, C) order, as Flax flattens
    x = jax.nn.relu(x @ params["fc1"]["w"] + per_channel(params["fc1"]["b"], 2))
    x = jax.nn.relu(x @ params["fc2"]["w"] + per_channel(params["fc2"]["b"], 2))
    return x @ params["fc3"]["w"] + per_channel(params["fc3"]["b"], 2)


def lenet_forward_lax(params: Params, x: Array) -> Array:
    """LeNet-5 with `lax.conv_general_dilated` + `lax.reduce_window`. x: (N, 32, 32, 1)."""
    x = max_pool_lax(jax.nn.relu(conv_lax(x, params["conv1"]["w"]) + per_channel(params["conv1"]["b"], 4)))
    x = max_pool_lax(jax.nn.relu(conv_lax(x, params["conv2"]["w"]) + per_channel(params["conv2"]["b"], 4)))
    return _lenet_head(params, x)


def lenet_forward_im2col(params: Params, x: Array) -> Array:
    """LeNet-5 with convs as patches + matmul and pooling as reshape + max. x: (N, 32, 32, 1)."""
    x = max_pool_reshape(jax.nn.relu(conv_im2col(x, params["conv1"]["w"]) + per_channel(params["conv1"]["b"], 4)))
    x = max_pool_reshape(jax.nn.relu(conv_im2col(x, params["conv2"]["w"]) + per_channel(params["conv2"]["b"], 4)))
    return _lenet_head(params, x)


def lenet_apply_lax(params: Params, state: Any, x: Array, train: bool) -> tuple[Array, Any]:
    """`ApplyFn` form of `lenet_forward_lax` (LeNet has no model state)."""
    return lenet_forward_lax(params, x), state


def lenet_apply_im2col(params: Params, state: Any, x: Array, train: bool) -> tuple[Array, Any]:
    """`ApplyFn` form of `lenet_forward_im2col`."""
    return lenet_forward_im2col(params, x), state


def lenet_params_from_nnx(model: LeNet5) -> Params:
    """Copy a Flax `LeNet5`'s weights into the plain-JAX parameter layout."""

    def layer(m: nnx.Conv | nnx.Linear) -> dict[str, Array]:
        assert m.bias is not None
        return {"w": jnp.asarray(m.kernel[...]), "b": jnp.asarray(m.bias[...])}

    names = ("conv1", "conv2", "fc1", "fc2", "fc3")
    return {name: layer(getattr(model, name)) for name in names}


# --------------------------------------------------------------------------------------
# Plain JAX: CIFAR ResNet-18


def _bn_init(c: int) -> tuple[dict[str, Array], dict[str, Array]]:
    params = {"scale": jnp.ones((c,), jnp.float32), "bias": jnp.zeros((c,), jnp.float32)}
    stats = {"mean": jnp.zeros((c,), jnp.float32), "var": jnp.ones((c,), jnp.float32)}
    return params, stats


def init_resnet_params(key: Array, num_classes: int = 10) -> tuple[Params, Any]:
    """ResNet-18 `(params, batch_stats)`; `params["blocks"][i]` follows `RESNET18_BLOCKS[i]`."""
    keys = iter(jax.random.split(key, 2 + 3 * len(RESNET18_BLOCKS)))
    bn, bn_s = _bn_init(64)
    params: dict[str, Any] = {"conv1": _conv_init(next(keys), 3, 3, 64, bias=False)["w"], "bn1": bn}
    stats: dict[str, Any] = {"bn1": bn_s}
    blocks, block_stats = [], []
    for c_in, c_out, stride in RESNET18_BLOCKS:
        p: dict[str, Any] = {
            "conv1": _conv_init(next(keys), 3, c_in, c_out, bias=False)["w"],
            "conv2": _conv_init(next(keys), 3, c_out, c_out, bias=False)["w"],
        }
        s: dict[str, Any] = {}
        p["bn1"], s["bn1"] = _bn_init(c_out)
        p["bn2"], s["bn2"] = _bn_init(c_out)
        proj_key = next(keys)
        if stride != 1 or c_in != c_out:
            p["proj_conv"] = _conv_init(proj_key, 1, c_in, c_out, bias=False)["w"]
            p["proj_bn"], s["proj_bn"] = _bn_init(c_out)
        blocks.append(p)
        block_stats.append(s)
    params["blocks"], stats["blocks"] = blocks, block_stats
    params["fc"] = _dense_init(next(keys), 512, num_classes)
    return params, stats


def batch_norm(x: Array, p: dict[str, Array], s: dict[str, Array], train: bool) -> tuple[Array, dict[str, Array]]:
    """BatchNorm over (N, H, W); returns the output and the updated running statistics."""
    if train:
        mean = x.mean(axis=(0, 1, 2))
        var = x.var(axis=(0, 1, 2))
        s = {
            "mean": BN_MOMENTUM * s["mean"] + (1 - BN_MOMENTUM) * mean,
            "var": BN_MOMENTUM * s["var"] + (1 - BN_MOMENTUM) * var,
        }
    else:
        mean, var = s["mean"], s["var"]
    inv = lax.rsqrt(var + BN_EPSILON) * p["scale"]
    y = (x - per_channel(mean, 4)) * per_channel(inv, 4) + per_channel(p["bias"], 4)
    return y, s


def resnet_apply(params: Params, stats: Any, x: Array, train: bool, *, conv: ConvFn = conv_lax) -> tuple[Array, Any]:
    """CIFAR ResNet-18 in plain JAX. x: (N, 32, 32, 3) -> (logits, new stats).

    `conv(x, w, stride, padding)` lowers every convolution (default `lax.conv_general_dilated`);
    benchmarks/explore_lowerings.py passes others, chosen per layer shape.
    """
    new: dict[str, Any] = {"blocks": []}
    x, new["bn1"] = batch_norm(conv(x, params["conv1"], 1, _PAD1), params["bn1"], stats["bn1"], train)
    x = jax.nn.relu(x)
    for (_, _, stride), p, s in zip(RESNET18_BLOCKS, params["blocks"], stats["blocks"], strict=True):
        ns: dict[str, Any] = {}
        y, ns["bn1"] = batch_norm(conv(x, p["conv1"], stride, _PAD1), p["bn1"], s["bn1"], train)
        y = jax.nn.relu(y)
        y, ns["bn2"] = batch_norm(conv(y, p["conv2"], 1, _PAD1), p["bn2"], s["bn2"], train)
        if "proj_conv" in p:
            x, ns["proj_bn"] = batch_norm(conv(x, p["proj_conv"], stride, "VALID"), p["proj_bn"], s["proj_bn"], train)
        x = jax.nn.relu(x + y)
        new["blocks"].append(ns)
    logits = x.mean(axis=(1, 2)) @ params["fc"]["w"] + per_channel(params["fc"]["b"], 2)
    return logits, new


def resnet_params_from_nnx(model: ResNet18) -> tuple[Params, Any]:
    """Copy a Flax `ResNet18`'s weights and BatchNorm statistics into the plain-JAX layout."""

    def bn(m: nnx.BatchNorm) -> tuple[dict[str, Array], dict[str, Array]]:
        assert m.scale is not None and m.bias is not None
        return (
            {"scale": jnp.asarray(m.scale[...]), "bias": jnp.asarray(m.bias[...])},
            {"mean": jnp.asarray(m.mean[...]), "var": jnp.asarray(m.var[...])},
        )

    params: dict[str, Any] = {"conv1": jnp.asarray(model.conv1.kernel[...]), "blocks": []}
    stats: dict[str, Any] = {"blocks": []}
    params["bn1"], stats["bn1"] = bn(model.bn1)
    for b in model.blocks:
        p: dict[str, Any] = {"conv1": jnp.asarray(b.conv1.kernel[...]), "conv2": jnp.asarray(b.conv2.kernel[...])}
        s: dict[str, Any] = {}
        p["bn1"], s["bn1"] = bn(b.bn1)
        p["bn2"], s["bn2"] = bn(b.bn2)
        if b.proj_conv is not None and b.proj_bn is not None:
            p["proj_conv"] = jnp.asarray(b.proj_conv.kernel[...])
            p["proj_bn"], s["proj_bn"] = bn(b.proj_bn)
        params["blocks"].append(p)
        stats["blocks"].append(s)
    assert model.fc.bias is not None
    params["fc"] = {"w": jnp.asarray(model.fc.kernel[...]), "b": jnp.asarray(model.fc.bias[...])}
    return params, stats


def tree_size(tree: Any) -> int:
    """Total number of elements in a pytree of arrays."""
    return sum(int(np.size(leaf)) for leaf in jax.tree.leaves(tree))


# --------------------------------------------------------------------------------------
# JAX train step and inference


def make_jax_fns(
    apply: ApplyFn,
    params: Params,
    model_state: Any,
    tx: optax.GradientTransformation | None = None,
) -> tuple[JaxState, Callable[[JaxState, Array, Array], tuple[JaxState, Array]], Callable[[JaxState, Array], Array]]:
    """Pure, jitted train step and inference for any `ApplyFn` (Flax via `nnx_apply_fn`, or plain).

    Returns `(state, train_step, infer)`:
    * `train_step(state, x, y) -> (state, loss)`: softmax cross-entropy on integer labels
      `y: (N,)`, one optimizer update; `state` is donated, so pass the returned one next time;
    * `infer(state, x) -> logits`: eval mode (BatchNorm running statistics).
    """
    tx = tx or make_optimizer()

    def train_step(state: JaxState, x: Array, y: Array) -> tuple[JaxState, Array]:
        p, s, opt_state = state

        def loss_fn(p: Params) -> tuple[Array, Any]:
            logits, new_s = apply(p, s, x, True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new_s

        (loss, new_s), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
        updates, opt_state = tx.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), new_s, opt_state), loss

    def infer(state: JaxState, x: Array) -> Array:
        p, s, _ = state
        return apply(p, s, x, False)[0]

    state = (params, model_state, tx.init(params))
    return state, jax.jit(train_step, donate_argnums=0), jax.jit(infer)


# --------------------------------------------------------------------------------------
# PyTorch eager (imported lazily: torch is optional)


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def torch_lenet5() -> Any:
    """LeNet-5 as a `torch.nn.Module`. x: (N, 1, 32, 32)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(),
        nn.Linear(120, 84), nn.ReLU(),
        nn.Linear(84, 10),
    )  # fmt: skip


def torch_resnet18(num_classes: int = 10) -> Any:
    """CIFAR ResNet-18 as a `torch.nn.Module` (torchvision BasicBlock). x: (N, 3, 32, 32)."""
    import torch
    from torch import nn

    class TorchBasicBlock(nn.Module):
        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.shortcut = nn.Sequential()
            if stride != 1 or c_in != c_out:
                self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(self.shortcut(x) + y)

    class TorchResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.blocks = nn.Sequential(*(TorchBasicBlock(*b) for b in RESNET18_BLOCKS))
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.blocks(torch.relu(self.bn1(self.conv1(x))))
            return self.fc(x.mean(dim=(2, 3)))

    return TorchResNet18()


def _to_torch(a: Any) -> Any:
    """A float32/int CPU tensor holding a copy of array `a` (NumPy or JAX)."""
    import torch

    return torch.tensor(np.asarray(a))


def torch_param_count(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def make_torch_fns(
    module: Any, *, compiled: bool = False
) -> tuple[Any, Callable[[Any, Any, Any], tuple[Any, Any]], Callable[[Any, Any], Any]]:
    """Train step and inference for a `torch.nn.Module`, written the usual eager way.

    Returns `(state, train_step, infer)` with the same signatures as `make_jax_fns`; the state
    `(module, optimizer)` is updated in place. x: (N, C, H, W) float32, y: (N,) int64.
    `compiled` runs the forward (and so its backward) through `torch.compile` (inductor).
    """
    import torch
    import torch.nn.functional as F

    opt = torch.optim.SGD(module.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    forward = torch.compile(module) if compiled else module

    def train_step(state: Any, x: Any, y: Any) -> tuple[Any, Any]:
        model, optimizer = state
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(x), y)
        loss.backward()
        optimizer.step()
        return state, loss.detach()

    def infer(state: Any, x: Any) -> Any:
        model, _ = state
        model.eval()
        with torch.inference_mode():
            return forward(x)

    return (module, opt), train_step, infer


def torch_load_lenet(module: Any, params: Params) -> None:
    """Copy plain-JAX LeNet-5 parameters into `torch_lenet5()` (HWIO->OIHW, NHWC flatten)."""
    import torch

    convs, denses = (module[0], module[3]), (module[7], module[9], module[11])
    with torch.no_grad():
        for m, name in zip(convs, ("conv1", "conv2"), strict=True):
            m.weight.copy_(_to_torch(params[name]["w"].transpose(3, 2, 0, 1)))
            m.bias.copy_(_to_torch(params[name]["b"]))
        for m, name in zip(denses, ("fc1", "fc2", "fc3"), strict=True):
            w = np.asarray(params[name]["w"])
            if name == "fc1":  # JAX flattens (H, W, C), PyTorch (C, H, W)
                w = w.reshape(5, 5, 16, 120).transpose(2, 0, 1, 3).reshape(400, 120)
            m.weight.copy_(_to_torch(w.T))
            m.bias.copy_(_to_torch(params[name]["b"]))


def torch_load_resnet(module: Any, params: Params, stats: Any) -> None:
    """Copy plain-JAX ResNet-18 parameters and statistics into `torch_resnet18()`."""
    import torch

    def conv(m: Any, w: Array) -> None:
        m.weight.copy_(_to_torch(w.transpose(3, 2, 0, 1)))

    def bn(m: Any, p: dict[str, Array], s: dict[str, Array]) -> None:
        m.weight.copy_(_to_torch(p["scale"]))
        m.bias.copy_(_to_torch(p["bias"]))
        m.running_mean.copy_(_to_torch(s["mean"]))
        m.running_var.copy_(_to_torch(s["var"]))

    with torch.no_grad():
        conv(module.conv1, params["conv1"])
        bn(module.bn1, params["bn1"], stats["bn1"])
        for m, p, s in zip(module.blocks, params["blocks"], stats["blocks"], strict=True):
            conv(m.conv1, p["conv1"])
            bn(m.bn1, p["bn1"], s["bn1"])
            conv(m.conv2, p["conv2"])
            bn(m.bn2, p["bn2"], s["bn2"])
            if "proj_conv" in p:
                conv(m.shortcut[0], p["proj_conv"])
                bn(m.shortcut[1], p["proj_bn"], s["proj_bn"])
        module.fc.weight.copy_(_to_torch(params["fc"]["w"].T))
        module.fc.bias.copy_(_to_torch(params["fc"]["b"]))


# --------------------------------------------------------------------------------------
# Verification


def random_batch(spec: ModelSpec, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic inputs `(N, H, W, C)` float32 and labels `(N,)` int32 for `spec`."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *spec.input_hwc), dtype=np.float32)
    y = rng.integers(0, spec.num_classes, size=(batch,), dtype=np.int32)
    return x, y


def _assert_close(name: str, got: Any, want: Any, rtol: float, atol: float) -> float:
    got, want = np.asarray(got), np.asarray(want)
    if not np.all(np.isfinite(got)):
        raise AssertionError(f"{name}: non-finite values")
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)
    return float(np.max(np.abs(got - want)))


def verify_lenet(with_torch: bool = True) -> dict[str, float]:
    """Check LeNet-5 across frameworks; returns the max abs differences that were checked."""
    model = LeNet5(rngs=nnx.Rngs(0))
    params = lenet_params_from_nnx(model)
    counts = {"flax": nnx_param_count(model), "jax": tree_size(params)}
    x, y = random_batch(LENET5, 8)
    want = np.asarray(model(jnp.asarray(x)))
    diffs = {
        "jax_lax_vs_flax": _assert_close("lax", lenet_forward_lax(params, jnp.asarray(x)), want, 1e-5, 1e-5),
        "jax_im2col_vs_lax": _assert_close(
            "im2col",
            lenet_forward_im2col(params, jnp.asarray(x)),
            lenet_forward_lax(params, jnp.asarray(x)),
            1e-5,
            1e-5,
        ),
    }

    def loss(fwd: Callable[[Params, Array], Array]) -> Callable[[Params], Array]:
        return lambda p: optax.softmax_cross_entropy_with_integer_labels(fwd(p, jnp.asarray(x)), jnp.asarray(y)).mean()

    g_lax = jax.grad(loss(lenet_forward_lax))(params)
    g_im2col = jax.grad(loss(lenet_forward_im2col))(params)
    diffs["grad_im2col_vs_lax"] = max(
        _assert_close("grad", a, b, 1e-4, 1e-6)
        for a, b in zip(jax.tree.leaves(g_im2col), jax.tree.leaves(g_lax), strict=True)
    )
    if with_torch and torch_available():
        import torch

        tm = torch_lenet5()
        counts["torch"] = torch_param_count(tm)
        torch_load_lenet(tm, params)
        with torch.no_grad():
            out = tm(_to_torch(x.transpose(0, 3, 1, 2))).numpy()
        diffs["torch_vs_flax"] = _assert_close("torch", out, want, 1e-4, 1e-5)
    if set(counts.values()) != {LENET5.params}:
        raise AssertionError(f"LeNet-5 parameter counts differ from {LENET5.params}: {counts}")
    return diffs


def verify_resnet(with_torch: bool = True) -> dict[str, float]:
    """Check ResNet-18 across frameworks, in train mode (batch statistics) and eval mode."""
    model = ResNet18(rngs=nnx.Rngs(0))
    params, stats = resnet_params_from_nnx(model)
    counts = {"flax": nnx_param_count(model), "jax": tree_size(params)}
    x, _ = random_batch(RESNET18, 4)
    xj = jnp.asarray(x)
    model.train()
    want_train = np.asarray(model(xj))  # also updates model's running statistics
    got_train, new_stats = resnet_apply(params, stats, xj, True)
    diffs = {"jax_vs_flax_train": _assert_close("train", got_train, want_train, 1e-4, 1e-4)}
    _, flax_stats = resnet_params_from_nnx(model)
    diffs["jax_vs_flax_stats"] = max(
        _assert_close("stats", a, b, 1e-4, 1e-5)
        for a, b in zip(jax.tree.leaves(new_stats), jax.tree.leaves(flax_stats), strict=True)
    )
    model.eval()
    want_eval = np.asarray(model(xj))
    diffs["jax_vs_flax_eval"] = _assert_close(
        "eval", resnet_apply(params, new_stats, xj, False)[0], want_eval, 1e-4, 1e-4
    )
    if with_torch and torch_available():
        import torch

        tm = torch_resnet18()
        counts["torch"] = torch_param_count(tm)
        torch_load_resnet(tm, params, new_stats)
        tm.eval()
        with torch.no_grad():
            out = tm(_to_torch(x.transpose(0, 3, 1, 2))).numpy()
        diffs["torch_vs_flax_eval"] = _assert_close("torch eval", out, want_eval, 1e-3, 1e-3)
        tm.train()
        with torch.no_grad():
            out = tm(_to_torch(x.transpose(0, 3, 1, 2))).numpy()
        diffs["torch_vs_flax_train"] = _assert_close("torch train", out, want_train, 1e-3, 1e-3)
    if len(set(counts.values())) != 1 or RESNET18.params not in counts.values():
        raise AssertionError(f"ResNet-18 parameter counts differ from {RESNET18.params}: {counts}")
    return diffs


def main() -> None:
    print(f"LeNet-5: {LENET5.params:,} params, {LENET5.forward_macs:,} MACs/image")
    print(f"ResNet-18 (CIFAR): {RESNET18.params:,} params, {RESNET18.forward_macs:,} MACs/image")
    print(f"torch available: {torch_available()}")
    for name, diffs in (("lenet5", verify_lenet()), ("resnet18", verify_resnet())):
        for check, d in diffs.items():
            print(f"  ok {name} {check}: max |diff| = {d:.2e}")


if __name__ == "__main__":
    main()
