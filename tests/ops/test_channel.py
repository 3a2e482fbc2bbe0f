"""Channel operations (cnndsl/ops/channel.py): `slice a:b` and `shuffle G` against torch,
and a ShuffleNetV2 unit (torchvision's `InvertedResidual`, stride 1) built from them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cnndsl
from cnndsl.errors import CnnError
from cnndsl.ops import REGISTRY

from .torchref import compiled, conv_kernel, copy_bn, init, rand, rel, run, torch_out

nn = torch.nn


class Slice(nn.Module):
    def __init__(self, a: int, b: int) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return x[:, self.a : self.b]


TORCH = {
    "slice": [("slice 2:5", Slice(2, 5)), ("slice 0:1", Slice(0, 1)), ("slice range=3:6", Slice(3, 6))],
    "shuffle": [
        ("shuffle 2", nn.ChannelShuffle(2)),
        ("shuffle 3", nn.ChannelShuffle(3)),
        ("shuffle 6", nn.ChannelShuffle(6)),
    ],
}
OPS = sorted({op.name for op in REGISTRY.values() if type(op).__module__ == "cnndsl.ops.channel"})


def test_every_channel_op_has_a_torch_reference():
    assert [op for op in OPS if op not in TORCH] == []


@pytest.mark.parametrize("op", OPS)
def test_channel_op_equals_torch(op):
    for i, (spec, module) in enumerate(TORCH[op]):
        net = compiled(f"input 6@5x3\n{spec}", check=i == 0)
        x = rand(2, 6, 3, 5)
        assert rel(run(net, x), torch_out(module, x)) == 0.0, spec


def test_shuffle_permutation():
    # output channel j*G + g is input channel g*(D/G) + j
    x = np.arange(6, dtype=np.float32).reshape(1, 6, 1, 1)
    y = run(compiled("input 6@1x1\nshuffle 3"), x)
    assert y.ravel().tolist() == [0, 2, 4, 1, 3, 5]


UNIT = """
input 8@9x7
concat {
    slice 0:4
  | slice 4:8 -> conv 4@1x1 nobias -> bn -> relu -> dwconv 3x3 p1 nobias -> bn -> conv 4@1x1 nobias -> bn -> relu
} -> shuffle 2
"""


class TorchUnit(nn.Module):
    """torchvision.models.shufflenetv2.InvertedResidual(8, 8, stride=1), written out."""

    def __init__(self) -> None:
        super().__init__()
        self.branch2 = nn.Sequential(
            nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Conv2d(4, 4, 3, 1, 1, groups=4, bias=False), nn.BatchNorm2d(4),
            nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        )  # fmt: skip

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        out = torch.cat((x1, self.branch2(x2)), dim=1)
        b, c, h, w = out.shape
        return out.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)


def test_shufflenet_v2_unit_equals_torchvision():
    net = compiled(UNIT)
    ref = TorchUnit()
    v = init(net)
    p = v["params"]["concat1"]["branch2"]
    p["conv1"]["kernel"], p["dwconv1"]["kernel"], p["conv2"]["kernel"] = (
        conv_kernel(ref.branch2[i].weight) for i in (0, 3, 5)
    )
    for i, (k, m) in enumerate((("bn1", 1), ("bn2", 4), ("bn3", 6))):
        copy_bn(v, ("concat1", "branch2", k), ref.branch2[m], seed=i)
    x = rand(2, 8, 7, 9)
    assert net.params["trainable"] == 2 * 16 + 4 * 9 + 3 * 8  # torch: the same, trainable
    assert rel(run(net, x, v), torch_out(ref, x)) < 1e-5


@pytest.mark.parametrize(
    "spec, message",
    [
        ("input 6@4x4\nslice 2:7", "needs at least 7 channels"),
        ("input 6@4x4\nslice 3:3", "0 <= a < b"),
        ("input 6@4x4\nslice 3", "expected a range like `0:16`"),
        ("input 6@4x4\nshuffle 4", "divisible by 4"),
        ("block b(c) { slice 0:c/2 }\ninput 6@4x4\nb(5)", "must be a whole number"),
    ],
)
def test_errors(spec, message):
    with pytest.raises(CnnError) as e:
        cnndsl.loads(spec)
    assert message in e.value.message


class TorchLayerScale(nn.Module):
    """ConvNeXt's `layer_scale`: `nn.Parameter(torch.ones(dim, 1, 1) * 1e-6)`, times x."""

    def __init__(self, d: int, value: float) -> None:
        super().__init__()
        self.layer_scale = nn.Parameter(torch.ones(d, 1, 1) * value)

    def forward(self, x):
        return self.layer_scale * x


TORCH["layerscale"] = [("layerscale 0.5", TorchLayerScale(6, 0.5)), ("layerscale", TorchLayerScale(6, 1e-6))]


def test_layerscale_learns_its_own_parameters():
    net = compiled("input 6@5x3\nlayerscale 1e-6")
    assert net.params == {"total": 6, "trainable": 6, "non_trainable": 0} and net.macs == 0
    v = init(net)
    np.testing.assert_array_equal(v["params"]["layerscale1"]["scale"], np.full(6, 1e-6, np.float32))
    ref = TorchLayerScale(6, 1.0)
    with torch.no_grad():
        ref.layer_scale.copy_(torch.linspace(-1, 2, 6).reshape(6, 1, 1))
    v["params"]["layerscale1"]["scale"] = ref.layer_scale.detach().numpy().ravel()
    x = rand(2, 6, 3, 5)
    assert rel(run(net, x, v), torch_out(ref, x)) < 1e-6
