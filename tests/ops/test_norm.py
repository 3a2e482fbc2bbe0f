"""Normalisation (cnndsl/ops/norm.py) against `torch.nn`, driven by the registry: every op in
that module has a torch reference here. Affine parameters and BN statistics are randomised
and copied across; eval mode. Also the ONNX emitters on the cases the examples miss."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

import cnndsl
from cnndsl.errors import CnnError
from cnndsl.ops import REGISTRY

from ..backends.onnx.parity import TOLERANCE, compare
from .torchref import compiled, init, rand, rel, run, torch_out

nn = torch.nn


def affine(m: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if getattr(m, "weight", None) is not None:
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
        if getattr(m, "running_mean", None) is not None:
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.3)
    return m


class ChannelsLastLayerNorm(nn.Module):
    """`layernorm` normalises over depth at each position: LayerNorm on (N, H, W, D)."""

    def __init__(self, d: int, eps: float) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d, eps=eps)
        self.weight, self.bias = self.ln.weight, self.ln.bias

    def forward(self, x):
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def copy(v: dict, m: nn.Module) -> dict:
    (layer,) = v["params"].values() if "params" in v else [{}]
    if getattr(m, "weight", None) is not None:
        layer["scale"], layer["bias"] = m.weight.detach().numpy(), m.bias.detach().numpy()
    if getattr(m, "running_mean", None) is not None:
        (stats,) = v["batch_stats"].values()
        stats["mean"], stats["var"] = m.running_mean.numpy(), m.running_var.numpy()
    return v


D = 6
TORCH: dict[str, list[tuple[str, Callable[[], nn.Module]]]] = {
    "bn": [("bn", lambda: nn.BatchNorm2d(D)), ("bn eps=1e-3", lambda: nn.BatchNorm2d(D, eps=1e-3))],
    "layernorm": [("layernorm", lambda: ChannelsLastLayerNorm(D, 1e-6))],
    "groupnorm": [
        ("groupnorm 3", lambda: nn.GroupNorm(3, D)),
        ("groupnorm 1", lambda: nn.GroupNorm(1, D)),
        ("groupnorm 6 eps=1e-3", lambda: nn.GroupNorm(6, D, eps=1e-3)),
    ],
    "instancenorm": [
        ("instancenorm", lambda: nn.InstanceNorm2d(D)),
        ("instancenorm affine", lambda: nn.InstanceNorm2d(D, affine=True)),
    ],
    "lrn": [
        ("lrn 5", lambda: nn.LocalResponseNorm(5)),
        ("lrn 4 alpha=0.01 beta=0.6 k=2", lambda: nn.LocalResponseNorm(4, alpha=0.01, beta=0.6, k=2.0)),
        ("lrn 1", lambda: nn.LocalResponseNorm(1)),
        ("lrn 9", lambda: nn.LocalResponseNorm(9)),
    ],
}
OPS = sorted({op.name for op in REGISTRY.values() if type(op).__module__ == "cnndsl.ops.norm"})


def test_every_norm_has_a_torch_reference():
    assert [op for op in OPS if op not in TORCH] == []


@pytest.mark.parametrize("op", OPS)
def test_norm_equals_torch(op):
    for i, (spec, make) in enumerate(TORCH[op]):
        net = compiled(f"input {D}@9x7\n{spec}", check=i == 0)
        ref = affine(make(), seed=i)
        x = rand(3, D, 7, 9, seed=i, scale=3.0) + 1.0
        assert rel(run(net, x, copy(init(net), ref)), torch_out(ref, x)) < 1e-5, spec


def test_parameter_counts_as_torch():
    for spec, make in [("groupnorm 3", lambda: nn.GroupNorm(3, D)), ("instancenorm", lambda: nn.InstanceNorm2d(D)),
                       ("instancenorm affine", lambda: nn.InstanceNorm2d(D, affine=True)),
                       ("lrn 5", lambda: nn.LocalResponseNorm(5))]:  # fmt: skip
        assert cnndsl.loads(f"input {D}@4x4\n{spec}").params["trainable"] == sum(p.numel() for p in make().parameters())


@pytest.mark.parametrize(
    "spec", ["input 6@5\ngroupnorm 2", "input 6@4x3x2\ninstancenorm", "input 6@5x4\nlrn 4", "input 6\nlrn 3"]
)
def test_onnx_on_other_ranks_and_even_windows(spec):
    diff, _ = compare(cnndsl.loads(spec))
    assert diff <= TOLERANCE


@pytest.mark.parametrize(
    "spec, message",
    [
        ("input 6@4x4\ngroupnorm 4", "divisible by 4"),
        ("input 6\ninstancenorm", "needs an input with spatial axes"),
        ("input 6@4x4\nlrn", "`lrn` needs a window of channels"),
    ],
)
def test_errors(spec, message):
    with pytest.raises(CnnError) as e:
        cnndsl.loads(spec)
    assert message in e.value.message


def test_lrn_formula():
    # b_c = a_c / (k + alpha/n * sum_{c'=c-n//2}^{c+(n-1)//2} a_c'^2)^beta
    x = rand(1, 5, 1, 1)
    y = run(compiled("input 5@1x1\nlrn 3 alpha=0.3 beta=0.5 k=1.5"), x)[0, :, 0, 0]
    a = x[0, :, 0, 0]
    sq = np.pad(a * a, 1)
    want = a / (1.5 + 0.3 / 3 * (sq[:-2] + sq[1:-1] + sq[2:])) ** 0.5
    np.testing.assert_allclose(y, want, rtol=1e-6)
