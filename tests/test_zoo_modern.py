"""The modern zoo (issue 12): torchvision's trainable counts exactly, the multiply-accumulates of
its convolutions and dense layers within 0.5%, and (slow) outputs equal to plain `torch.nn`
references built as torchvision builds them, with copied weights.

Torchvision's "GFLOPS" column rounds the multiply-adds of convolutions and dense layers only,
so the comparison sums those layers' MACs (`CONV_DENSE`), whatever other ops may count.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnndsl
from cnndsl import ir
from cnndsl.backends.jax.model import forward
from cnndsl.shape import Shape

from .conftest import EXAMPLES
from .test_zoo import load, outputs

# torchvision's trainable parameters and conv + dense MACs at its input size (3@224x224;
# Inception-v3 at 3@299x299, without its auxiliary head).
TORCHVISION = {
    "convnext_tiny": (28_589_128, 4_455_531_264),
    "efficientnet_b0": (5_288_548, 385_814_752),
    "mobilenet_v3_large": (5_483_032, 216_589_760),
    "mobilenet_v3_small": (2_542_856, 56_510_400),
    "shufflenet_v2_x1_0": (2_278_604, 144_907_992),
    "regnet_y_400mf": (4_344_144, 401_842_848),
    "resnext50_32x4d": (25_028_904, 4_230_479_872),
    "wide_resnet50_2": (68_883_240, 11_398_021_120),
    "mnasnet1_0": (4_383_312, 314_415_872),
    "inception_v3": (23_834_568, 5_713_216_096),
}
CONV_DENSE = {"conv", "dwconv", "deconv", "dense"}


def conv_dense_macs(net: cnndsl.Net) -> int:
    return sum(n.macs for n in net.layers() if n.op in CONV_DENSE)


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_trainable_parameters_equal_torchvision(name):
    net = load(name)
    side = 299 if name == "inception_v3" else 224
    assert net.input == Shape(3, (side, side))
    assert net.output == Shape(1000)
    assert net.params["trainable"] == TORCHVISION[name][0]


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_conv_and_dense_macs_equal_torchvision_within_half_a_percent(name):
    ours, theirs = conv_dense_macs(load(name)), TORCHVISION[name][1]
    assert abs(ours - theirs) / theirs < 0.005, f"{name}: {ours:,} MACs, torchvision {theirs:,}"


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_header_cites_the_paper_and_torchvision_and_compiles_cleanly(name):
    text = (EXAMPLES / f"{name}.cnn").read_text()
    header = text.split("\nnetwork")[0]
    assert header.startswith("# ") and re.search(r"\b(19|20)\d\d\b", header) and "torchvision" in header
    assert load(name).warnings == ()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert len(lines) <= 50, f"{name}: {len(lines)} lines of code"  # Inception-v3, the longest: 43


# --- architecture details that the counts alone would not catch ---------------------------
def test_resnext_groups_the_3x3s_and_wide_resnet_widens_them():
    x = load("resnext50_32x4d")
    grouped = [n for n in x.layers() if n.op == "conv" and n.args.groups != 1]
    assert len(grouped) == 16 and all(n.args.groups == 32 and n.args.filters[1] == (3, 3) for n in grouped)
    out = outputs(x)
    assert out["stage1.down1.bottleneck1.conv2"] == "128@56x56"  # 32 groups of 4 at c = 64
    assert out["stage2.down1.bottleneck1.conv2"] == "256@28x28"  # stride on the 3x3 (v1.5)
    w = outputs(load("wide_resnet50_2"))
    assert w["stage4.same2.bottleneck1.conv2"] == "1024@7x7" and w["stage4"] == "2048@7x7"


def test_mnasnet_shortcuts_and_kernels():
    net = load("mnasnet1_0")
    residuals = [n for _, n in ir.walk(net.ir.body) if isinstance(n, ir.Merge) and n.residual]
    assert len(residuals) == 2 + 2 + 2 + 1 + 3  # every block but the first of each stack
    assert sorted({n.args.kernel for n in net.layers() if n.op == "dwconv"}) == [(3,), (5,)]
    assert all(n.args.momentum == pytest.approx(0.9997) for n in net.layers() if n.op == "bn")


def test_inception_v3_grid_sizes_and_factorised_kernels():
    net = load("inception_v3")
    out = outputs(net)
    assert [out[k] for k in ("maxpool2", "mixed5b", "mixed5d", "mixed6a", "mixed6e", "mixed7a", "mixed7c")] == [
        "192@35x35",
        "256@35x35",
        "288@35x35",
        "768@17x17",
        "768@17x17",
        "1280@8x8",
        "2048@8x8",
    ]
    kernels = {n.args.filters[1] for n in net.layers() if n.op == "conv"}
    assert {(7, 1), (1, 7), (3, 1), (1, 3)} <= kernels
    assert all(n.args.eps == 0.001 for n in net.layers() if n.op == "bn")


REFERENCE_COUNTS = {  # torchvision's published `num_params`, for the torch references themselves
    "efficientnet_b0": 5_288_548,
    "mobilenet_v3_large": 5_483_032,
    "mobilenet_v3_small": 2_542_856,
    "shufflenet_v2_x1_0": 2_278_604,
    "convnext_tiny": 28_589_128,
    "regnet_y_400mf": 4_344_144,
    "mnasnet1_0": 4_383_312,
    "resnext50_32x4d": 25_028_904,
    "wide_resnet50_2": 68_883_240,
    "inception_v3": 23_834_568,
}


@pytest.mark.slow  # importing torch alone takes 2-5 s here; the references serve the slow tests below
def test_the_torch_references_are_torchvision_s_models():
    """A slip in a reference would make the end-to-end comparison test the wrong model."""
    import torch

    from .zoo_torch_reference import REFERENCES, trainable

    with torch.device("meta"):  # shapes only: no weights drawn
        assert {name: trainable(REFERENCES[name]()) for name in REFERENCE_COUNTS} == REFERENCE_COUNTS


def residuals(net: cnndsl.Net) -> list[ir.Merge]:
    return [n for _, n in ir.walk(net.ir.body) if isinstance(n, ir.Merge) and n.residual]


def test_efficientnet_b0_shortcuts_squeeze_and_drop_path_rates():
    net = load("efficientnet_b0")
    assert len(residuals(net)) == 16 - 7  # every block but the first of each stage
    rates = [n.args.rate for n in net.layers() if n.op == "droppath"]
    assert rates == pytest.approx([0.2 * b / 16 for b in (2, 4, 6, 7, 9, 10, 12, 13, 14)])  # torchvision's sd_prob
    gates = [n for _, n in ir.walk(net.ir.body) if isinstance(n, ir.Merge) and n.kind == "mul"]
    assert len(gates) == 16
    out = outputs(net)
    assert out["stage5.mbconv1.se1.mul1.branch2.conv1"] == "28@1x1"  # a quarter of the block's input, 112
    assert [out[f"stage{i}"] for i in (1, 2, 4, 6)] == ["24@56x56", "40@28x28", "112@14x14", "320@7x7"]


@pytest.mark.parametrize(("name", "shortcuts", "gates"), [("mobilenet_v3_large", 10, 8), ("mobilenet_v3_small", 6, 9)])
def test_mobilenet_v3_shortcuts_gates_and_activations(name, shortcuts, gates):
    net = load(name)
    assert len(residuals(net)) == shortcuts
    mul = [n for _, n in ir.walk(net.ir.body) if isinstance(n, ir.Merge) and n.kind == "mul"]
    assert len(mul) == gates
    ops = [n.op for n in net.layers()]
    assert ops.count("hardsigmoid") == gates and "hardswish" in ops and "sigmoid" not in ops
    assert all(n.args.eps == 0.001 and n.args.momentum == pytest.approx(0.99) for n in net.layers() if n.op == "bn")
    squeeze = {
        n.x.depth: n.y.depth for n in net.layers() if n.op == "conv" and n.x.spatial == (1, 1) and n.y.depth < n.x.depth
    }
    assert squeeze[72 if name.endswith("large") else 96] == 24  # make_divisible(72 // 4, 8) = 24, (96 // 4) = 24
    assert squeeze.get(144, 40) == 40  # small: make_divisible(36, 8) = 40


def test_shufflenet_v2_splits_and_shuffles_every_unit():
    net = load("shufflenet_v2_x1_0")
    ops = [n.op for n in net.layers()]
    assert ops.count("shuffle") == 4 + 8 + 4 and ops.count("slice") == 2 * (3 + 7 + 3)
    out = outputs(net)
    assert [out[f"stage{i}"] for i in (1, 2, 3)] == ["116@28x28", "232@14x14", "464@7x7"]
    assert out["stage1.unit1.concat1.branch1.slice1"] == "58@28x28"


def test_regnet_y_400mf_widths_groups_and_squeeze():
    net = load("regnet_y_400mf")
    out = outputs(net)
    assert [out[f"stage{i}"] for i in (1, 2, 3, 4)] == ["48@56x56", "104@28x28", "208@14x14", "440@7x7"]
    grouped = [n for n in net.layers() if n.op == "conv" and n.args.groups != 1]
    assert len(grouped) == 16 and all(n.args.groups * 8 == n.y.depth for n in grouped)  # group width 8
    assert out["stage2.down1.f1.se1.mul1.branch2.conv1"] == "12@1x1"  # round(0.25 * 48): the block's input
    assert out["stage2.same1.f1.se1.mul1.branch2.conv1"] == "26@1x1"


def test_convnext_tiny_blocks_follow_torchvision():
    net = load("convnext_tiny")
    ops = [n.op for n in net.layers()]
    assert ops.count("layerscale") == 18 and ops.count("layernorm") == 18 + 1 + 3 + 1  # blocks, stem, downs, head
    assert all(n.args.approximate == "erf" for n in net.layers() if n.op == "gelu")  # nn.GELU() is exact
    assert all(n.args.init == pytest.approx(1e-6) for n in net.layers() if n.op == "layerscale")
    rates = [n.args.rate for n in net.layers() if n.op == "droppath"]
    assert rates == pytest.approx([0.1 * b / 17 for b in range(18)])
    out = outputs(net)
    assert [out[k] for k in ("layernorm1", "stage1", "down1", "stage2", "down3", "stage4")] == [
        "96@56x56",
        "96@56x56",
        "192@28x28",
        "192@28x28",
        "768@7x7",
        "768@7x7",
    ]
    # torchvision's nn.Linear on channels-last tensors is a 1x1 conv here, with the same MACs
    assert out["stage1.cnblock1.conv1"] == "384@56x56"


# --- outputs equal torch's, with copied weights (slow: ImageNet-size models on CPU) ---------
# the four of issue 12 first, then the rest of the modern zoo
E2E = [
    "convnext_tiny",
    "efficientnet_b0",
    "mobilenet_v3_large",
    "shufflenet_v2_x1_0",
    "mobilenet_v3_small",
    "regnet_y_400mf",
    "mnasnet1_0",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "inception_v3",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", E2E)
def test_outputs_equal_the_torch_reference(name):
    import torch

    from .zoo_torch_reference import REFERENCES, copy_weights, randomise

    torch.manual_seed(0)
    model = REFERENCES[name]()
    randomise(model)
    model.eval()
    net = load(name)
    x = np.random.default_rng(0).standard_normal(net.input.array_shape(1), np.float32)  # (1, H, W, 3)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    variables = copy_weights(model, net, jax.eval_shape(net.init, jax.random.key(0)), xt)
    assert not any(isinstance(v, jax.ShapeDtypeStruct) for v in jax.tree.leaves(variables))
    with torch.no_grad():
        want = model(xt).numpy()
    got = np.asarray(jax.jit(lambda v, x: forward(net.ir, v, x)[0])(variables, jnp.asarray(x)))
    assert np.abs(want).max() > 1e-3  # the randomised network does not collapse to zero
    rel = np.abs(got - want).max() / np.abs(want).max()
    # issue 12 asks for 1e-4; float32 on CPU gives 4e-7..3e-6, and 1e-5 also catches a tanh-approximated
    # GELU in ConvNeXt (8e-5 apart with these weights), which 1e-4 would let through
    assert rel < 1e-5, f"{name}: max relative difference {rel:.2e}"
