"""Activations (cnndsl/ops/activation.py) against `torch.nn`, driven by the registry: every
op defined in that module must have a torch reference here, and match it in eval mode."""

from __future__ import annotations

import pytest
import torch

from cnndsl.ops import REGISTRY

from .torchref import compiled, rand, rel, run, torch_out

nn = torch.nn
# spec after the `input` line -> the torch module computing the same
TORCH: dict[str, list[tuple[str, nn.Module]]] = {
    "relu": [("relu", nn.ReLU())],
    "relu6": [("relu6", nn.ReLU6())],
    "gelu": [("gelu", nn.GELU()), ("gelu tanh", nn.GELU(approximate="tanh")), ("gelu approximate=erf", nn.GELU())],
    "silu": [("silu", nn.SiLU())],
    "sigmoid": [("sigmoid", nn.Sigmoid())],
    "tanh": [("tanh", nn.Tanh())],
    "softmax": [("softmax", nn.Softmax(dim=1))],
    "logsoftmax": [("logsoftmax", nn.LogSoftmax(dim=1))],
    "softplus": [("softplus", nn.Softplus())],
    "hardsigmoid": [("hardsigmoid", nn.Hardsigmoid())],
    "hardswish": [("hardswish", nn.Hardswish())],
    "mish": [("mish", nn.Mish())],
    "identity": [("identity", nn.Identity())],
    "leakyrelu": [("leakyrelu 0.2", nn.LeakyReLU(0.2))],
    "elu": [("elu 0.5", nn.ELU(0.5))],
    "prelu": [("prelu", nn.PReLU(init=0.01))],
    "glu": [("glu", nn.GLU(dim=1))],
}
OPS = sorted({op.name for op in REGISTRY.values() if type(op).__module__ == "cnndsl.ops.activation"})


def test_every_activation_has_a_torch_reference():
    assert [op for op in OPS if op not in TORCH] == []


@pytest.mark.parametrize("op", OPS)
def test_activation_equals_torch(op):
    for i, (spec, module) in enumerate(TORCH[op]):
        net = compiled(f"input 6@9x7\n{spec}", check=i == 0)
        x = rand(3, 6, 7, 9, scale=4.0)  # wide enough to reach both sides of relu6's and hardswish's knees
        assert rel(run(net, x), torch_out(module, x)) < 1e-5, spec


def test_gelu_default_is_exact_and_differs_from_tanh():
    x = rand(1, 6, 7, 9, scale=3.0)
    exact, approx = (run(compiled(f"input 6@9x7\n{s}"), x) for s in ("gelu", "gelu tanh"))
    assert 1e-5 < abs(exact - approx).max() < 1e-2


def test_exact_gelu_in_onnx_equals_jax():
    import cnndsl

    from ..backends.onnx.parity import TOLERANCE, compare

    diff, _ = compare(cnndsl.loads("input 4@5x3\ngelu"))
    assert diff <= TOLERANCE
