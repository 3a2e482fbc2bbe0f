"""Inference passes: each folded network equals the original in eval mode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnndsl
from cnndsl import ir, passes
from cnndsl.backends.jax.inference import fold_for_inference
from cnndsl.backends.jax.lowerings import LOWERINGS
from cnndsl.backends.jax.model import forward

from ...conftest import EXAMPLES

RTOL, ATOL = 2e-5, 2e-5  # float32 rounding of the refactored arithmetic


def randomized(net: cnndsl.Net, seed: int = 0) -> dict:
    """Variables with non-trivial BN statistics and scales (fresh ones fold trivially)."""
    v = net.init(jax.random.key(seed))
    keys = iter(jax.random.split(jax.random.key(seed + 1), 1000))

    def jiggle(tree, positive=False):
        out = {}
        for k, val in tree.items():
            if isinstance(val, dict):
                out[k] = jiggle(val, positive)
            else:
                r = jax.random.normal(next(keys), val.shape)
                out[k] = jnp.exp(0.3 * r) if positive or k in ("var", "scale") else val + 0.3 * r
        return out

    return {c: jiggle(t) for c, t in v.items()}


def ops(net_ir: ir.Network) -> list[str]:
    return [n.op for n in ir.layers(net_ir.body)]


@pytest.mark.parametrize(
    "spec, gone",
    [
        ("input 3@12x10\nconv 8@3x3 p1 nobias -> bn -> relu -> conv 4@3x3 s2 -> bn", ["bn", "bn"]),
        ("input 3@12x10\nconv 8@3x3 -> bn -> relu", ["bn"]),
        ("input 4@9x9\ndwconv 3x3 p1 nobias -> bn -> relu6", ["bn"]),
        ("input 4@5x5\ndeconv 3@2x2 s2 nobias -> bn", ["bn"]),
        ("input 20\ndense 7 -> bn -> dropout 0.5 -> dense 3", ["bn", "dropout"]),
        (
            "input 3@10x10\nscale 1/255 -> normalize mean=(0.4, 0.5, 0.6) std=(0.2, 0.3, 0.25) -> conv 4@3x3 -> relu",
            ["scale", "normalize"],
        ),
        ("input 3@10x10\nscale 1/255 -> conv 4@3x3 p1 -> relu", ["scale"]),
        ("input 5\nnormalize mean=0.5 std=2 -> dense 3", ["normalize"]),
    ],
)
def test_folding_is_exact(spec, gone):
    net = cnndsl.loads(spec)
    v = randomized(net)
    folded_ir, fv = fold_for_inference(net.ir, v)
    ir.verify(folded_ir, shapes=True)  # the folded IR keeps the IR's invariants
    before, after = ops(net.ir), ops(folded_ir)
    for op in gone:
        before.remove(op)
    assert after == before
    x = 50.0 * jax.random.uniform(jax.random.key(9), net.input.array_shape(3))
    want = forward(net.ir, v, x)[0]
    got = jax.jit(lambda v, x: forward(folded_ir, v, x)[0])(fv, x)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * float(jnp.abs(want).max()))


def test_a_subset_of_the_inference_passes_runs_alone():
    net = cnndsl.loads("input 20\ndense 7 -> bn -> dropout 0.5 -> dense 3")
    v = randomized(net)
    assert fold_for_inference(net.ir, v, passes=())[0] is net.ir
    dropped, dv = fold_for_inference(net.ir, v, passes=(passes.drop_random,))
    assert ops(dropped) == ["dense", "bn", "dense"]
    assert jax.tree.structure(dv) == jax.tree.structure(v)  # no variables change
    folded, fv = fold_for_inference(net.ir, v, passes=(passes.fold_after,))
    assert ops(folded) == ["dense", "dropout", "dense"] and "batch_stats" not in fv
    x = jax.random.normal(jax.random.key(4), (2, 20))
    np.testing.assert_allclose(forward(folded, fv, x)[0], forward(net.ir, v, x)[0], rtol=RTOL, atol=1e-4)


def test_normalize_before_a_padded_conv_is_kept():
    net = cnndsl.loads("input 3@8x8\nnormalize mean=0.5 std=0.25 -> conv 4@3x3 p1")
    folded_ir, _ = fold_for_inference(net.ir, randomized(net))
    assert ops(folded_ir) == ["normalize", "conv"]


@pytest.mark.slow  # over 10 s on 2 cores
def test_resnet_blocks_fold_inside_groups_and_branches():
    spec = """
block basic(c, s=1) {
  residual { conv c@3x3 stride=s p1 nobias -> bn -> relu -> conv c@3x3 p1 nobias -> bn }
  project { conv c@1x1 stride=s nobias -> bn } -> relu
}
input 3@16x16
conv 8@3x3 p1 nobias -> bn -> relu -> basic(8) -> basic(16, s=2) -> gap -> dense 10
"""
    net = cnndsl.loads(spec)
    v = randomized(net)
    folded_ir, fv = fold_for_inference(net.ir, v)
    ir.verify(folded_ir, shapes=True)
    assert "bn" not in ops(folded_ir) and "batch_stats" not in fv
    x = jax.random.normal(jax.random.key(3), (2, 16, 16, 3))
    np.testing.assert_allclose(forward(folded_ir, fv, x)[0], forward(net.ir, v, x)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # over 10 s on 2 cores
def test_net_for_inference_and_remat_and_lowerings_agree():
    spec = """
block unit(c) { residual { conv c@3x3 p1 nobias -> bn -> relu -> conv c@3x3 p1 nobias -> bn } -> relu }
input 3@12x12
conv 8@3x3 p1 nobias -> bn -> relu -> unit(8) -> unit(8) -> dropout 0.3 -> gap -> dense 4
"""
    net = cnndsl.loads(spec)
    v = randomized(net)
    x = jax.random.normal(jax.random.key(5), (2, 12, 12, 3))
    want = forward(net.ir, v, x)[0]
    fast, fv = net.for_inference(v)
    _, apply = fast.functional(jax.random.key(0))
    np.testing.assert_allclose(apply(fv, x), want, rtol=1e-4, atol=1e-4)

    # remat and each lowering give the same values and gradients in training
    def loss(p, remat, low):
        y, _ = forward(net.ir, {**v, "params": p}, x, train=True, key=jax.random.key(7), remat=remat, lowering=low)
        return jnp.sum(y**2)

    ref = jax.grad(loss)(v["params"], False, {"*": "xla"})
    cases = [(True, {"*": "xla"})] + [
        (remat, {"*": impl}) for impl in ("patches", "col2im", "shift", "winograd") for remat in (False, True)
    ]
    for remat, low in cases:
        got = jax.grad(loss)(v["params"], remat, low)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4)


@pytest.mark.slow  # over 10 s on 2 cores
def test_autotune_times_the_network_greedily_and_caches(tmp_path, monkeypatch):
    from cnndsl.backends.jax import autotune as at

    monkeypatch.setenv("CNNDSL_CACHE_DIR", str(tmp_path))
    net = cnndsl.loads("input 1@12x12\nconv 4@3x3 -> relu -> conv 4@3x3 -> relu -> conv 4@3x3 -> bn")
    tried, races = [], []
    real_compile, real_race = at.compile_step, at.race
    monkeypatch.setattr(at, "compile_step", lambda net, low, *a: tried.append(dict(low)) or real_compile(net, low, *a))
    monkeypatch.setattr(at, "race", lambda steps: races.append(len(steps)) or real_race(steps, reps=1, sample_s=0.0))
    choice = net.autotune(8, train=True)
    groups = at.tunable_groups(net.ir)
    ops = {n.name: n.op for n in ir.layers(net.ir.body)}
    assert set(choice) == {"conv1", "conv2", "conv3", "bn1"}
    assert all(impl in LOWERINGS[ops[name]].impls for name, impl in choice.items())
    # the defaults first, then every alternative of every group once
    defaults = {n.name: at.default_lowering(n, 8, True) for layers in groups.values() for n in layers}
    assert tried[0] == defaults
    alternatives = sum(
        len(LOWERINGS[ls[0].op].candidates(ls[0].args, ls[0].x, ls[0].y, True)) - 1 for ls in groups.values()
    )
    assert len(tried) == 1 + alternatives and races == [2] * alternatives  # each raced against the incumbent
    assert (tmp_path / "autotune.json").is_file()
    assert net.autotune(8, train=True) == choice and len(tried) == 1 + alternatives  # served from the cache


@pytest.mark.parametrize(
    "spatial, stride, pad, dilation",
    [
        ((14, 14), (1, 1), ((0, 0), (0, 0)), (1, 1)),
        ((9, 7), (2, 1), ((1, 2), (0, 1)), (1, 2)),
        ((11,), (3,), ((2, 1),), (2,)),
    ],
)
@pytest.mark.parametrize("impl", ["col2im", "shift"])
def test_custom_gradient_lowerings_equal_xla(spatial, stride, pad, dilation, impl):
    """The col2im and shift lowerings: same output, input and kernel gradients as XLA's
    convolution (strides, uneven padding, dilation, 1-D and 2-D; float32, tolerance 1e-4)."""
    from cnndsl.backends.jax.kernels.conv import conv_apply, conv_col2im_grad, conv_shift

    lowered = {"col2im": conv_col2im_grad, "shift": conv_shift}[impl]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, *spatial[::-1], 3)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((*(3,) * len(spatial), 3, 5)), jnp.float32)
    y = conv_apply(x, w, stride, pad, dilation, 1)
    g = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    out = y.shape[1:-1][::-1]
    np.testing.assert_allclose(lowered(x, w, stride, pad, dilation, out), y, rtol=1e-5, atol=1e-5)
    want = jax.grad(lambda x, w: jnp.vdot(conv_apply(x, w, stride, pad, dilation, 1), g), (0, 1))(x, w)
    got = jax.grad(lambda x, w: jnp.vdot(lowered(x, w, stride, pad, dilation, out), g), (0, 1))(x, w)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "spatial, kernel, stride, pad, dilation",
    [
        ((14, 14), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1)),
        ((9, 7), (3, 3), (2, 1), ((1, 2), (0, 1)), (1, 2)),  # strides, uneven padding, dilation
        ((8, 8), (5, 5), (2, 2), ((2, 2), (2, 2)), (1, 1)),
        ((11,), (3,), (3,), ((2, 1),), (2,)),  # 1-D
    ],
)
def test_depthwise_lowering_equals_xla(spatial, kernel, stride, pad, dilation):
    """`conv_depthwise` (the CPU default for one filter per channel): same output, input and
    kernel gradients as XLA's grouped convolution (float32, tolerance 1e-4)."""
    from cnndsl.backends.jax.kernels.conv import conv_apply, conv_depthwise

    rng = np.random.default_rng(0)
    c = 6
    x = jnp.asarray(rng.standard_normal((2, *spatial[::-1], c)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((*kernel[::-1], 1, c)), jnp.float32)
    y = conv_apply(x, w, stride, pad, dilation, c)
    g = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    out = y.shape[1:-1][::-1]
    np.testing.assert_allclose(conv_depthwise(x, w, stride, pad, dilation, out), y, rtol=1e-5, atol=1e-5)
    want = jax.grad(lambda x, w: jnp.vdot(conv_apply(x, w, stride, pad, dilation, c), g), (0, 1))(x, w)
    got = jax.grad(lambda x, w: jnp.vdot(conv_depthwise(x, w, stride, pad, dilation, out), g), (0, 1))(x, w)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_depthwise_layers_default_to_the_depthwise_lowering_on_cpu():
    net = cnndsl.loads("input 8@10x10\ndwconv 3x3 p1 -> conv 8@3x3 g8 p1 -> conv 8@3x3 g2 p1")
    conv = LOWERINGS["conv"]
    dw, grouped_dw, grouped = net.ir.body.items
    for n in (dw, grouped_dw):
        op = LOWERINGS[n.op]
        assert op.choose(n.args, n.x, n.y, True, 1) == op.choose(n.args, n.x, n.y, False, 1) == "depthwise"
        assert "depthwise" in op.candidates(n.args, n.x, n.y, True)
    assert "depthwise" not in conv.candidates(grouped.args, grouped.x, grouped.y, True)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 10, 10, 8)), jnp.float32)
    v, apply = net.functional(jax.random.key(0))
    v_xla, apply_xla = net.functional(jax.random.key(0), lowering={"*": "xla"})
    np.testing.assert_allclose(apply(v, x), apply_xla(v, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "spec",
    [
        "input 5@8x8\nconv 7@3x3 p1",  # whole tiles
        "input 4@13x6\nconv 6@3x3 p0",  # non-square, partial tiles
        "input 3@9x10\nconv 8@3x3 same nobias",
        "input 3@5x7\nconv 4@3x3 p2",  # padding as wide as the kernel
        "input 3@6x5\nconv 4@3x3 p3",  # padding beyond the kernel's reach
        "input 2@3x3\nconv 3@3x3",  # a 1x1 output
    ],
)
def test_winograd_equals_xla(spec):
    """Winograd F(4x4, 3x3): the same output as XLA's convolution up to float32 rounding
    amplified by its constants (tolerance 1e-4 of the output's magnitude), and the same
    gradients when forced in training."""
    net = cnndsl.loads(spec)
    v = randomized(net)
    x = jax.random.normal(jax.random.key(3), (3, *net.ir.input.array_shape()))
    run = jax.jit(lambda v, x, impl: forward(net.ir, v, x, lowering={"*": impl})[0], static_argnums=2)
    want, got = run(v, x, "xla"), run(v, x, "winograd")
    scale = float(jnp.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale)
    assert not np.array_equal(np.asarray(got), np.asarray(want))  # it did take the other path

    def loss(p, x, low):
        return jnp.sum(jnp.sin(forward(net.ir, {**v, "params": p}, x, lowering=low)[0]))

    grad = jax.jit(lambda p, x, impl: jax.grad(loss, (0, 1))(p, x, {"*": impl}), static_argnums=2)
    ref, grads = grad(v["params"], x, "xla"), grad(v["params"], x, "winograd")
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * float(jnp.abs(b).max()))


def test_winograd_is_the_inference_default_for_deep_3x3_layers(monkeypatch):
    from cnndsl.backends.jax import onednn

    monkeypatch.setattr(onednn, "available", lambda: (False, "the defaults without the optional oneDNN kernel"))
    from cnndsl.backends.jax._xla_guard import FLAG

    monkeypatch.setenv("XLA_FLAGS", FLAG)
    net = cnndsl.loads("input 64@8x8\nconv 128@3x3 p1 -> conv 128@3x3 p1 -> conv 128@3x3 s2 -> conv 256@1x1")
    convs = list(ir.layers(net.ir.body))
    conv = LOWERINGS["conv"]
    infer = [conv.choose(n.args, n.x, n.y, False, 32) for n in convs]
    assert infer == ["xla", "winograd", "xla", "xla"]  # 64 input channels; stride 2; 1x1
    conv2 = convs[1]
    assert conv.choose(conv2.args, conv2.x, conv2.y, False, 8) == "xla"  # 512 positions < 8 x 128 filters
    assert conv.choose(conv2.args, conv2.x, conv2.y, False, 1024) == "xla"  # a 32 MiB input
    assert [conv.choose(n.args, n.x, n.y, True, 8) for n in convs] == ["xla"] * 4
    assert "winograd" in conv.candidates(convs[1].args, convs[1].x, convs[1].y, False)
    assert "winograd" in conv.candidates(convs[1].args, convs[1].x, convs[1].y, True)
    assert "winograd" not in conv.candidates(convs[2].args, convs[2].x, convs[2].y, False)
    monkeypatch.setenv("XLA_FLAGS", "")
    assert conv.choose(convs[1].args, convs[1].x, convs[1].y, False, 32) == "xla"
    # and the network's eval output through the default equals XLA's
    v = randomized(net)
    x = jax.random.normal(jax.random.key(3), (32, 8, 8, 64))
    monkeypatch.setenv("XLA_FLAGS", FLAG)
    run = jax.jit(lambda v, x, low: forward(net.ir, v, x, lowering=low and {"*": low})[0], static_argnums=2)
    want, got = run(v, x, "xla"), run(v, x, None)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * float(jnp.abs(want).max()))
    assert not np.array_equal(np.asarray(got), np.asarray(want))  # conv2 took Winograd's path


@pytest.mark.parametrize("impl", ["xla", "patches"])
def test_bfloat16_compute_with_float32_accumulation(impl):
    net = cnndsl.loads("input 3@16x16\nconv 8@3x3 p1 -> relu -> deconv 4@2x2 s2 -> gap -> dense 5")
    v = net.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    want = forward(net.ir, v, x)[0]
    got = forward(net.ir, v, x, dtype=jnp.bfloat16, lowering={"*": impl})[0]
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=3e-2, atol=3e-2 * float(jnp.abs(want).max()))
    assert not np.array_equal(np.asarray(got), np.asarray(want))  # it did compute in bf16


@pytest.mark.slow  # over 10 s on 2 cores
def test_batchnorm_dot_lowering_equals_xla_reductions():
    """bn's `dot` lowering (per-channel sums as matmuls, hand-written gradient): same output,
    running statistics and gradients (of input, scale and bias) as XLA's reductions."""
    net = cnndsl.loads("input 3@9x7\nconv 5@3x3 p1 -> bn momentum=0.9 -> relu -> conv 4@3x3 -> bn -> gap -> dense 3")
    v = randomized(net)
    x = 3.0 * jax.random.normal(jax.random.key(5), (4, 7, 9, 3)) + 1.0

    def run(low):
        def loss(p, x):
            y, upd = forward(net.ir, {**v, "params": p}, x, train=True, lowering=low)
            return jnp.sum(jnp.sin(y)), upd

        (value, upd), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(v["params"], x)
        return value, upd, grads

    want, got = run({"bn1": "xla", "bn2": "xla"}), run({"bn1": "dot", "bn2": "dot"})
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_cpu_lowerings_only_under_the_xla_guard(monkeypatch):
    from cnndsl.backends.jax import onednn

    monkeypatch.setattr(onednn, "available", lambda: (False, "the defaults without the optional oneDNN kernel"))
    """The CPU-measured defaults (shift, col2im, bn dot) apply only with YNNPACK fusions off."""
    from cnndsl.backends.jax._xla_guard import FLAG

    net = cnndsl.load(EXAMPLES / "lenet5.cnn")
    conv1, conv2 = (n for n in ir.layers(net.ir.body) if n.op == "conv")
    bn = next(n for n in ir.layers(cnndsl.loads("input 3@8x8\nconv 4@3x3 -> bn").ir.body) if n.op == "bn")
    choose = lambda n, train: LOWERINGS[n.op].choose(n.args, n.x, n.y, train, 1)  # noqa: E731
    monkeypatch.setenv("XLA_FLAGS", FLAG)
    assert (choose(conv1, True), choose(conv2, True), choose(conv2, False), choose(bn, True)) == (
        "shift",
        "col2im",
        "xla",
        "dot",
    )
    assert LOWERINGS["conv"].choose(conv2.args, conv2.x, conv2.y, True, 512) == "xla"  # 51,200 positions
    monkeypatch.setenv("XLA_FLAGS", "")
    assert {choose(conv1, True), choose(conv2, True), choose(bn, True)} == {"xla"}
