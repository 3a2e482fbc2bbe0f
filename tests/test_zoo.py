"""The model zoo in `examples/`: torchvision's parameter counts exactly, its MACs within 0.5%,
and every example's layer shapes and parameter counts equal to what JAX builds and runs.

Torchvision's "GFLOPS" column counts multiply-adds of convolutions and dense layers at
3@224x224 (so it equals our MACs: 1 MAC = 2 FLOPs; pooling, normalisation, activations and
merges count 0 on both sides).
"""

from __future__ import annotations

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import cnndsl
from cnndsl import ir
from cnndsl.backends.jax.model import forward
from cnndsl.shape import Shape

from .conftest import EXAMPLES
from .shapecheck import check_against_jax, synthetic_variables

# Trainable parameters and GMACs at 3@224x224, from torchvision's model documentation.
TORCHVISION = {
    "alexnet": (61_100_840, 0.714),
    "vgg11": (132_863_336, 7.609),
    "vgg16": (138_357_544, 15.47),
    "vgg16_bn": (138_365_992, 15.47),
    "resnet18": (11_689_512, 1.814),
    "resnet34": (21_797_672, 3.664),
    "resnet50": (25_557_032, 4.089),
    "googlenet": (6_624_904, 1.498),
    "densenet121": (7_978_856, 2.834),
    "mobilenetv2": (3_504_872, 0.301),
    "squeezenet1_1": (1_235_496, 0.349),
}
ZOO = sorted({*TORCHVISION, "lenet5", "zfnet", "unet", "textcnn"})
EXAMPLE_FILES = sorted(p.stem for p in EXAMPLES.glob("*.cnn"))


@functools.cache
def load(name: str) -> cnndsl.Net:
    return cnndsl.load(EXAMPLES / f"{name}.cnn")


def outputs(net: cnndsl.Net) -> dict[str, str]:
    """Every layer, merge and block instance by name -> its output shape as text."""
    return {
        n.name: str(n.y) for _, n in ir.walk(net.ir.body) if isinstance(n, (ir.Layer, ir.Merge, ir.MergeRef, ir.Group))
    }


def test_the_zoo_is_complete():
    assert set(ZOO) <= set(EXAMPLE_FILES)


# --- torchvision's published figures -------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_trainable_parameters_equal_torchvision(name):
    net = load(name)
    assert net.input == Shape(3, (224, 224))
    assert net.output == Shape(1000)
    assert net.params["trainable"] == TORCHVISION[name][0]


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_macs_equal_torchvision_within_half_a_percent(name):
    ours, theirs = load(name).macs / 1e9, TORCHVISION[name][1]
    assert abs(ours - theirs) / theirs < 0.005, f"{name}: {ours:.4f} GMACs, torchvision {theirs}"


# --- every example agrees with JAX ---------------------------------------------------------
@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_shapes_and_parameters_agree_with_jax(name):
    check_against_jax(load(name))


# Their jitted forward takes 10-20 s to compile on 2 busy cores; test_zoo_modern's slow tests
# run it and compare it with torch's.
SLOW_FORWARD = {
    "efficientnet_b0", "mobilenet_v3_large", "mobilenet_v3_small", "shufflenet_v2_x1_0", "regnet_y_400mf",
    "mnasnet1_0", "convnext_tiny",
}  # fmt: skip


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_FORWARD else n for n in EXAMPLE_FILES]
)
def test_forward_pass_runs(name):
    """One real, jitted forward per example: ImageNet-size models once at batch 1 in eval mode,
    the small ones at batch 2 in eval and training mode. The weights are synthetic
    (`synthetic_variables`), as initialising an ImageNet model takes 10-40 s here; the NNX
    module with its own initialiser is run on TextCNN below (and on LeNet in test_backend)."""
    net = load(name)
    big = net.input.size >= 3 * 224 * 224
    batch = 1 if big else 2
    x = jnp.asarray(np.random.default_rng(0).random(net.input.array_shape(batch), np.float32))
    variables = synthetic_variables(net)
    y = jax.jit(lambda v, x: forward(net.ir, v, x)[0])(variables, x)
    assert y.shape == net.output.array_shape(batch)
    assert bool(jnp.isfinite(y).all())
    if big:
        return
    y, stats = jax.jit(lambda v, x: forward(net.ir, v, x, train=True, key=jax.random.key(0)))(variables, x)
    assert y.shape == net.output.array_shape(batch)
    assert bool(jnp.isfinite(y).all()) and all(bool(jnp.isfinite(s).all()) for s in jax.tree.leaves(stats))


def test_textcnn_nnx_module_runs_in_both_modes():
    net = load("textcnn")
    model = net.build(nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).random(net.input.array_shape(4), np.float32))
    run = nnx.jit(lambda m, x: m(x))
    for mode in ("train", "eval"):
        getattr(model, mode)()
        y = run(model, x)
        assert y.shape == (4, 2)
        np.testing.assert_allclose(np.asarray(y.sum(axis=-1)), 1.0, rtol=1e-5)


# --- the files themselves ------------------------------------------------------------------
@pytest.mark.parametrize("name", ZOO)
def test_each_file_cites_its_paper_and_compiles_without_warnings(name):
    text = (EXAMPLES / f"{name}.cnn").read_text()
    header = text.split("\nnetwork")[0]
    assert header.startswith("# ") and re.search(r"\b(19|20)\d\d\b", header), name
    assert load(name).warnings == ()


def test_resnet50_is_well_under_40_lines():
    lines = [ln for ln in (EXAMPLES / "resnet50.cnn").read_text().splitlines() if ln.strip()]
    assert len(lines) < 30


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_differences_are_documented(name):
    header = (EXAMPLES / f"{name}.cnn").read_text().split("\nnetwork")[0]
    assert "torchvision" in header


# --- architecture details that the counts alone would not catch ---------------------------
def test_resnet50_is_v1_5_with_the_stride_on_the_3x3():
    out = outputs(load("resnet50"))
    assert out["stage2.down1.conv1"] == "128@56x56"  # the first 1x1 keeps the grid
    assert out["stage2.down1.conv2"] == "128@28x28"  # the 3x3 has the stride
    assert out["stage2.down1.project.conv1"] == "512@28x28"
    assert [out[f"stage{i}"] for i in range(1, 5)] == ["256@56x56", "512@28x28", "1024@14x14", "2048@7x7"]


def test_resnet18_stages():
    out = outputs(load("resnet18"))
    assert [out["basic2"], out["stage1"], out["stage2"], out["stage3"]] == [
        "64@56x56",
        "128@28x28",
        "256@14x14",
        "512@7x7",
    ]


def test_googlenet_follows_torchvision():
    net = load("googlenet")
    out = outputs(net)
    assert out["maxpool1"] == "64@56x56"  # ceil mode: 112 -> 56
    assert out["inception3a"] == "256@28x28" and out["inception4e"] == "832@14x14" and out["inception5b"] == "1024@7x7"
    third = next(n for n in net.layers() if n.name == "inception3a.concat1.branch3.cbr2.conv1")
    assert third.args.filters == (32, (3,))  # the paper's 5x5 branch is 3x3 in torchvision
    assert all(n.args.eps == 0.001 for n in net.layers() if n.op == "bn")


def test_densenet121_depths_grow_by_32_and_transitions_halve():
    out = outputs(load("densenet121"))
    assert [out[f"denseblock{i}"] for i in range(1, 5)] == ["256@56x56", "512@28x28", "1024@14x14", "1024@7x7"]
    assert [out[f"transition{i}"] for i in range(1, 4)] == ["128@28x28", "256@14x14", "512@7x7"]


def test_mobilenetv2_shortcuts_only_where_stride_1_and_depth_unchanged():
    net = load("mobilenetv2")
    residuals = [n for _, n in ir.walk(net.ir.body) if isinstance(n, ir.Merge) and n.residual]
    assert len(residuals) == 10  # torchvision's use_res_connect: 1 + 2 + 3 + 2 + 2 blocks
    assert all(n.y is not None and n.y.depth in (24, 32, 64, 96, 160) for n in residuals)
    assert {n.op for n in net.layers()} >= {"dwconv", "relu6"}
    assert outputs(net)["conv3"] == "1280@7x7"


def test_squeezenet_ends_in_a_conv_classifier():
    net = load("squeezenet1_1")
    assert [n.op for n in net.layers()][-3:] == ["conv", "relu", "gap"]
    assert outputs(net)["conv2"] == "1000@13x13"
    assert not any(n.op == "dense" for n in net.layers())


def test_alexnet_and_vgg_pool_adaptively_like_torchvision():
    assert outputs(load("alexnet"))["adaptiveavgpool1"] == "256@6x6"
    for name in ("vgg11", "vgg16", "vgg16_bn"):
        assert outputs(load(name))["adaptiveavgpool1"] == "512@7x7"
    assert sum(n.op == "bn" for n in load("vgg16_bn").layers()) == 13


def test_zfnet_sizes_follow_the_paper_figure():
    out = outputs(load("zfnet"))
    sizes = [out[k] for k in ("conv1", "maxpool1", "conv2", "maxpool2", "conv5", "maxpool3")]
    assert sizes == ["96@110x110", "96@55x55", "256@26x26", "256@13x13", "256@13x13", "256@6x6"]


def test_unet_skips_join_encoder_and_decoder():
    net = load("unet")
    assert net.output == Shape(2, (128, 128))
    refs = [n for _, n in ir.walk(net.ir.body) if isinstance(n, ir.MergeRef)]
    assert [(n.label, str(n.y)) for n in refs] == [
        ("skip3", "128@32x32"),
        ("skip2", "64@64x64"),
        ("skip1", "32@128x128"),
    ]
    assert any(n.op == "deconv" for n in net.layers())


def test_textcnn_is_1d_with_three_max_pooled_branches():
    net = load("textcnn")
    assert net.input == Shape(300, (100,))
    convs = [n for n in net.layers() if n.op == "conv"]
    assert [(n.args.filters, str(n.y)) for n in convs] == [
        ((100, (3,)), "100@98"),
        ((100, (4,)), "100@97"),
        ((100, (5,)), "100@96"),
    ]
    assert outputs(net)["concat1"] == "300"
    assert net.output == Shape(2)


def test_parameter_paths_are_readable_and_stable():
    variables = jax.eval_shape(load("resnet50").init, jax.random.key(0))
    params, stats = variables["params"], variables["batch_stats"]
    assert params["conv1"]["kernel"].shape == (7, 7, 3, 64)
    assert params["stage1"]["down1"]["project"]["conv1"]["kernel"].shape == (1, 1, 64, 256)
    assert params["stage4"]["bottleneck2"]["conv3"]["kernel"].shape == (1, 1, 512, 2048)
    assert stats["stage3"]["bottleneck5"]["bn2"]["mean"].shape == (256,)
    assert params["dense1"]["kernel"].shape == (2048, 1000)
    g = jax.eval_shape(load("googlenet").init, jax.random.key(0))["params"]
    assert g["inception4a"]["concat1"]["branch2"]["cbr2"]["conv1"]["kernel"].shape == (3, 3, 96, 208)
    assert math.prod(g["dense1"]["kernel"].shape) == 1024 * 1000
