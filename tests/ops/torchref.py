"""Shared by the op tests: run a spec with given variables, move weights from torch, and
compare with a plain `torch.nn` reference on the same input.

Layouts: cnndsl arrays are channels-last `(N, H, W, D)`, torch's `(N, D, H, W)`; conv
kernels are `(KH, KW, D_in/groups, F)` here and `(F, D_in/groups, KH, KW)` in torch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

import cnndsl

from ..shapecheck import check_against_jax


def compiled(text: str, check: bool = True) -> cnndsl.Net:
    """The network, its IR shapes and parameter counts checked against what JAX builds
    (`check`; the check costs a second or so, so loops over variants of an op do it once)."""
    net = cnndsl.loads(text)
    if check:
        check_against_jax(net)
    return net


def run(net: cnndsl.Net, x_nchw: np.ndarray, variables: dict | None = None, **kw) -> np.ndarray:
    """`x: (N, D, H, W)` in, `(N, D', H', W')` (or `(N, D')`) out, eval mode unless `train=True`."""
    fresh, apply = net.functional(jax.random.key(0))
    v = fresh if variables is None else variables
    x = jnp.asarray(np.moveaxis(x_nchw, 1, -1), jnp.float32)
    y = apply(v, x, **kw)
    y = y[0] if isinstance(y, tuple) else y
    return np.moveaxis(np.asarray(y), -1, 1) if y.ndim > 2 else np.asarray(y)


def init(net: cnndsl.Net) -> dict:
    return jax.tree.map(np.asarray, net.functional(jax.random.key(0))[0])


def conv_kernel(w: torch.Tensor) -> np.ndarray:
    return w.detach().numpy().transpose(2, 3, 1, 0)


def torch_out(module: torch.nn.Module, x_nchw: np.ndarray) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        return module(torch.from_numpy(x_nchw)).numpy()


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """Max absolute difference relative to the reference's largest magnitude."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def rand(*shape: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def copy_bn(v: dict, path: tuple[str, ...], bn: torch.nn.BatchNorm2d, seed: int) -> None:
    """Randomise `bn`'s statistics and affine parameters, and copy them into `v` at `path`."""
    g = torch.Generator().manual_seed(seed)
    d = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(d, generator=g) * 0.5)
        bn.running_var.copy_(torch.rand(d, generator=g) + 0.5)
        bn.weight.copy_(torch.rand(d, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(d, generator=g) * 0.2)
    at_p, at_s = v["params"], v["batch_stats"]
    for k in path:
        at_p, at_s = at_p[k], at_s[k]
    at_p["scale"], at_p["bias"] = bn.weight.detach().numpy().copy(), bn.bias.detach().numpy().copy()
    at_s["mean"], at_s["var"] = bn.running_mean.numpy().copy(), bn.running_var.numpy().copy()
