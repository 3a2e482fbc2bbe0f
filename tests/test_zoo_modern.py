"""The modern zoo (issue 12): torchvision's trainable counts exactly, the multiply-accumulates of
its convolutions and dense layers within 0.5%, and (slow) outputs equal to plain `torch.nn`
references built as torchvision builds them, with copied weights.

Torchvision's "GFLOPS" column rounds the multiply-adds of convolutions and dense layers only,
so the comparison sums those layers' MACs (`CONV_DENSE`), whatever other ops may count.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnndsl
from cnndsl import ir
from cnndsl.backends.jax import forward
from cnndsl.shape import Shape

from .conftest import EXAMPLES

# torchvision's trainable parameters and conv + dense MACs at its input size (3@224x224;
# Inception-v3 at 3@299x299, without its auxiliary head).
TORCHVISION = {
    "resnext50_32x4d": (25_028_904, 4_230_479_872),
    "wide_resnet50_2": (68_883_240, 11_398_021_120),
    "mnasnet1_0": (4_383_312, 314_415_872),
    "inception_v3": (23_834_568, 5_713_216_096),
}
CONV_DENSE = {"conv", "dwconv", "deconv", "dense"}


@functools.cache
def load(name: str) -> cnndsl.Net:
    return cnndsl.load(EXAMPLES / f"{name}.cnn")


def outputs(net: cnndsl.Net) -> dict[str, str]:
    return {
        n.name: str(n.y) for _, n in ir.walk(net.ir.body) if isinstance(n, (ir.Layer, ir.Merge, ir.MergeRef, ir.Group))
    }


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
    assert len(lines) <= 40, f"{name}: {len(lines)} lines of code"


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
}


def test_the_torch_references_are_torchvision_s_models():
    """A slip in a reference would make the end-to-end comparison test the wrong model."""
    import torch

    from .zoo_torch_reference import REFERENCES, trainable

    with torch.device("meta"):  # shapes only: no weights drawn
        assert {name: trainable(REFERENCES[name]()) for name in REFERENCE_COUNTS} == REFERENCE_COUNTS


# --- outputs equal torch's, with copied weights (slow: ImageNet-size models on CPU) ---------
E2E = ["mnasnet1_0"]


@pytest.mark.slow
@pytest.mark.parametrize("name", E2E)
def test_outputs_equal_the_torch_reference(name):
    import torch

    from .zoo_torch_reference import REFERENCES, copy_weights, randomise_bn

    torch.manual_seed(0)
    model = REFERENCES[name]()
    randomise_bn(model)
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
    assert rel < 1e-4, f"{name}: max relative difference {rel:.2e}"
