"""`mul` (cnndsl/ops/merge.py): a gate broadcast over the spatial axes, so squeeze-and-
excitation is one line at any input size; equal to torchvision's SqueezeExcitation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cnndsl
from cnndsl.errors import ShapeError

from .torchref import compiled, conv_kernel, init, rand, rel, run, torch_out

SE = "mul { identity | adaptiveavgpool 1 -> conv 4@1x1 -> silu -> conv 16@1x1 -> sigmoid }"


class TorchSE(torch.nn.Module):
    """torchvision.ops.SqueezeExcitation(16, 4, activation=SiLU), written out."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Conv2d(16, 4, 1), torch.nn.Conv2d(4, 16, 1)

    def forward(self, x):
        s = torch.nn.functional.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(torch.nn.functional.silu(self.fc1(s))))


@pytest.mark.parametrize("size", ["9x7", "4x4"])
def test_squeeze_excitation_equals_torch_at_any_size(size):
    net = compiled(f"input 16@{size}\n{SE}", check=size == "9x7")
    assert str(net.output) == f"16@{size}"
    assert net.params["trainable"] == 16 * 4 + 4 + 4 * 16 + 16
    ref = TorchSE()
    v = init(net)
    b = v["params"]["mul1"]
    b["branch2"]["conv1"] = {"kernel": conv_kernel(ref.fc1.weight), "bias": ref.fc1.bias.detach().numpy()}
    b["branch2"]["conv2"] = {"kernel": conv_kernel(ref.fc2.weight), "bias": ref.fc2.bias.detach().numpy()}
    w, h = map(int, size.split("x"))
    x = rand(2, 16, h, w)
    assert rel(run(net, x, v), torch_out(ref, x)) < 1e-5


def test_mul_counts_no_macs_and_broadcasts_depth_and_axes():
    net = compiled("input 8@6x5\nmul { identity | conv 1@1x1 } -> mul { identity | adaptivemaxpool 1 }")
    (conv,) = [layer for layer in cnndsl.ir.layers(net.ir.body) if layer.op == "conv"]
    assert net.macs == conv.macs == 8 * 6 * 5  # the products themselves are not counted
    assert str(net.output) == "8@6x5"
    x = rand(1, 8, 5, 6)
    v = init(net)
    k, bias = v["params"]["mul1"]["branch2"]["conv1"]["kernel"], v["params"]["mul1"]["branch2"]["conv1"]["bias"]
    gate = np.einsum("ndhw,d->nhw", x, k[0, 0, :, 0])[:, None] + bias[0]
    y = x * gate
    assert rel(run(net, x, v), y * y.max(axis=(2, 3), keepdims=True)) < 1e-5


def test_mul_with_a_saved_tensor():
    net = compiled("input 3@4x4\nsave a -> relu -> mul a")
    x = rand(1, 3, 4, 4)
    assert rel(run(net, x), np.maximum(x, 0) * x) < 1e-6


def test_mul_receptive_field_does_not_warn_about_the_gate():
    net = cnndsl.loads(f"input 16@32x32\nconv 16@3x3 s2 p1 -> {SE}")
    assert not [w for w in net.ir.warnings if "line up" in w.message]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("input 8@6x5\nmul { identity | gap }", "mul: branch 2 is 8 but branch 1 is 8@6x5"),
        ("input 8@6x5\nmul { identity | conv 4@1x1 }", "cannot be broadcast to 8@6x5"),
        ("input 8@6x5\nmul { identity | maxpool 2 }", "cannot be broadcast"),
    ],
)
def test_mul_shape_errors(spec, message):
    with pytest.raises(ShapeError) as e:
        cnndsl.loads(spec)
    assert message in e.value.message and e.value.hints


def test_a_gate_after_gap_points_to_adaptiveavgpool():
    with pytest.raises(ShapeError) as e:
        cnndsl.loads("input 16@8x8\nmul { identity | gap -> conv 4@1x1 -> relu -> conv 16@1x1 -> sigmoid }")
    assert any("`adaptiveavgpool 1` pools to 16@1x1" in h for h in e.value.hints)


def test_squeeze_excitation_in_onnx_equals_jax():
    from ..backends.onnx.parity import TOLERANCE, compare

    diff, _ = compare(cnndsl.loads(f"input 16@9x7\n{SE}"))
    assert diff <= TOLERANCE
