"""The optional oneDNN convolution lowering (cnndsl/backends/jax/onednn.py) against XLA's.

Skipped, with the reason, where oneDNN or g++ is missing (`pip install -e ".[onednn]"` brings
oneDNN); CI runs this file a second time after installing that extra.
"""

from __future__ import annotations

import os
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import cnndsl
from cnndsl import config
from cnndsl.backends.jax import onednn
from cnndsl.backends.jax.lowerings import LOWERINGS

OK, WHY = onednn.available()
needs_onednn = pytest.mark.skipif(not OK, reason=f"oneDNN lowering unavailable: {WHY}")

# (N, H, W, C, F, KH, KW, strides, padding, dilation, groups), arrays in XLA's (H, W) order.
CASES = [
    (2, 9, 7, 4, 8, 3, 3, (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    (3, 12, 10, 6, 6, 3, 3, (2, 2), ((1, 0), (0, 1)), (1, 1), 2),
    (2, 8, 8, 8, 8, 3, 3, (1, 1), ((0, 0), (0, 0)), (1, 1), 8),  # depthwise
    (2, 11, 13, 5, 7, 1, 1, (1, 1), ((0, 0), (0, 0)), (1, 1), 1),  # 1x1
    (1, 16, 16, 3, 4, 7, 7, (2, 2), ((3, 3), (3, 3)), (1, 1), 1),  # a ResNet stem
    (2, 10, 10, 4, 4, 3, 3, (1, 1), ((2, 2), (2, 2)), (2, 2), 1),  # dilated
    (2, 9, 8, 4, 6, 3, 2, (2, 1), ((1, 1), (0, 1)), (1, 2), 1),  # different per axis
]


def _xla(x, w, s, p, d, g):
    dn = ("NHWC", "HWIO", "NHWC")
    return lax.conv_general_dilated(x, w, s, p, rhs_dilation=d, dimension_numbers=dn, feature_group_count=g)


def _rel(a, b) -> float:
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def test_availability_is_reported_with_a_reason() -> None:
    ok, why = onednn.available()
    assert isinstance(ok, bool) and why  # "oneDNN 3.2.0", or why not


def test_without_onednn_every_convolution_stays_with_xla(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without oneDNN: not a candidate for the autotuner, and an explicit request
    for it runs XLA's convolution (same numbers)."""
    monkeypatch.setattr(onednn, "available", lambda: (False, "not installed (test)"))
    net = cnndsl.loads("input 3@8x8\nconv 4@3x3 p1 -> relu -> gap -> dense 2")
    conv = net.ir.body.items[0]
    assert "onednn" not in LOWERINGS["conv"].candidates(conv.args, conv.x, conv.y, True)
    variables, apply = net.functional(jax.random.key(0))
    x = jnp.ones((2, 8, 8, 3))
    np.testing.assert_array_equal(
        apply(variables, x), net.functional(jax.random.key(0), lowering={"*": "onednn"})[1](variables, x)
    )


@needs_onednn
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:7])) + f"-s{c[7]}-d{c[9]}-g{c[10]}")
def test_forward_and_both_gradients_equal_xla(case) -> None:
    n, h, w_, c, f, kh, kw, s, p, d, g = case
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((n, h, w_, c)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((kh, kw, c // g, f)), jnp.float32)
    ref = _xla(x, w, s, p, d, g)
    out_size = (ref.shape[2], ref.shape[1])  # written order: width first

    def ours(x, w):
        return onednn.conv_onednn(x, w, s[::-1], p[::-1], d[::-1], g, out_size)

    assert "cnndsl_onednn_conv_fwd" in str(jax.jit(ours).lower(x, w).as_text())  # really oneDNN
    dy = jnp.asarray(rng.standard_normal(ref.shape), jnp.float32)
    ref_dx, ref_dw = jax.vjp(lambda x, w: _xla(x, w, s, p, d, g), x, w)[1](dy)
    y, vjp = jax.vjp(ours, x, w)
    dx, dw = vjp(dy)
    assert y.shape == ref.shape and _rel(y, ref) < 1e-5
    assert _rel(dx, ref_dx) < 1e-5 and _rel(dw, ref_dw) < 1e-5


@needs_onednn
def test_vmap_runs_per_element() -> None:
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((3, 2, 6, 6, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 4, 5)), jnp.float32)
    pad = ((1, 1), (1, 1))
    got = jax.vmap(lambda xi: onednn.conv_onednn(xi, w, (1, 1), pad, (1, 1), 1, (6, 6)))(x)
    want = jax.vmap(lambda xi: _xla(xi, w, (1, 1), pad, (1, 1), 1))(x)
    assert _rel(got, want) < 1e-5


@needs_onednn
def test_a_whole_train_step_equals_xla_and_the_autotuner_may_choose_it() -> None:
    net = cnndsl.loads(
        "input 3@12x12\nconv 8@3x3 p1 nobias -> bn -> relu -> conv 8@3x3 s2 p1 g2 -> relu -> gap -> dense 4"
    )
    x = jnp.asarray(np.random.default_rng(2).standard_normal((4, 12, 12, 3)), jnp.float32)
    y = jnp.arange(4) % 4

    def step(lowering):
        variables, apply = net.functional(jax.random.key(0), lowering=lowering)

        def loss(params):
            out, _ = apply({**variables, "params": params}, x, train=True, key=jax.random.key(1), logits=True)
            return jnp.mean(-jnp.take_along_axis(jax.nn.log_softmax(out), y[:, None], axis=1))

        return jax.jit(jax.value_and_grad(loss))(variables["params"])

    (l_ref, g_ref), (l_dnn, g_dnn) = step({"*": "xla"}), step({"*": "onednn"})
    assert abs(float(l_ref) - float(l_dnn)) < 1e-5
    for a, b in zip(jax.tree.leaves(g_dnn), jax.tree.leaves(g_ref)):
        assert _rel(a, b) < 1e-4
    conv = net.ir.body.items[0]
    assert "onednn" in LOWERINGS["conv"].candidates(conv.args, conv.x, conv.y, True)


def test_the_cache_folder_is_private(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled kernel is loaded from a folder only this user can write: created 0700,
    refused when others may write to it (someone could plant a library there)."""
    monkeypatch.setenv("CNNDSL_CACHE_DIR", str(tmp_path / "fresh"))
    folder = config.cache_dir()
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    open_folder = tmp_path / "shared"
    open_folder.mkdir()
    os.chmod(open_folder, 0o777)
    monkeypatch.setenv("CNNDSL_CACHE_DIR", str(open_folder))
    with pytest.raises(config.CacheError, match="can be written by others"):
        config.cache_dir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "fresh")
    monkeypatch.setenv("CNNDSL_CACHE_DIR", str(link))
    with pytest.raises(config.CacheError, match="not a folder"):
        config.cache_dir()
