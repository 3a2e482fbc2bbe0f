"""Resampling, fixed filters and preprocessing ops (cnndsl/ops/resample.py, filters.py,
preprocess.py): shapes against `jax.eval_shape`, parameter counts against the built
variables, and numbers against independent references (NumPy loops, scipy.ndimage, torch).

Inputs are non-square (`1@12x8` is an array (N, 8, 12, 1)) so a width/height swap fails.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

import cnndsl
from cnndsl.ops.resample import adaptive_bins, frac_bins

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(text: str, x: np.ndarray) -> np.ndarray:
    net = cnndsl.loads(text)
    variables, apply = net.functional(jax.random.key(0))
    return np.asarray(jax.jit(apply)(variables, jnp.asarray(x, jnp.float32)))


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def size(tree: dict) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


# --- shapes and parameter counts of every op ------------------------------------------------
SPECS = [
    "input 1@12x8\nupsample 2",
    "input 1@12x8\nupsample 2x3",
    "input 2@10\nupsample 3",
    "input 2@6x5x4\nupsample 2x1x3",
    "input 1@12x8\npad 1",
    "input 1@12x8\npad 2x1 reflect",
    "input 2@10\npad 3 edge",
    "input 2@6x5x4\npad 1x0x2",
    "input 3@10x7\nadaptiveavgpool 4x3",
    "input 3@10x7\nadaptivemaxpool 4x3",
    "input 3@12x8\nadaptiveavgpool 4x2",
    "input 3@3x2\nadaptiveavgpool 5x4",
    "input 3@10x7\nadaptivemaxpool 1",
    "input 2@10\nadaptiveavgpool 4",
    "input 2@6x5x4\nadaptivemaxpool 3x2x2",
    "input 2@12x8\nfracmaxpool 1.5",
    "input 2@13x9\nfracmaxpool 1.414 overlap",
    "input 2@25\nfracmaxpool 1.7 offset=0.1",
    "input 2@6x5x4\nfracmaxpool 1.5",
    "input 2@12x8\nfilter sobel",
    "input 2@12x8\nfilter laplacian valid",
    "input 2@12x8\nfilter sharpen p2",
    "input 2@12x8\nfilter blur 3x5",
    "input 2@12x8\nfilter blur 4",
    "input 2@12x8\nfilter gaussian 5 sigma=1",
    "input 2@12x8\nfilter gabor 7x5 theta=30 sigma=2 lambda=4 gamma=0.7 psi=90",
    "input 2@10\nfilter gaussian 3",
    "input 2@6x5x4\nfilter blur 3",
    "input 3@12x8\nscale 1/255",
    "input 3@12x8\nscale 1/127.5 offset=-1",
    "input 3@12x8\nnormalize mean=(0.485, 0.456, 0.406) std=(0.229, 0.224, 0.225)",
    "input 3@12x8\nnormalize mean=(0.5)",
    "input 5\nnormalize std=(2)",
    "input 3@12x8\ngrayscale",
    (
        "input 3@12x8\nscale 1/255 -> grayscale -> filter gaussian 3 -> filter sobel -> upsample 2 -> pad 1"
        " -> adaptivemaxpool 5x3 -> conv 4@3x3 -> flatten -> dense 3"
    ),
]


@pytest.mark.parametrize("text", SPECS)
def test_shapes_and_counts_match_the_built_model(text: str) -> None:
    net = cnndsl.loads(text)
    variables, apply = net.functional(jax.random.key(0))
    x = jax.ShapeDtypeStruct(net.input.array_shape(2), jnp.float32)
    assert jax.eval_shape(apply, variables, x).shape == net.output.array_shape(2)
    params = net.params
    assert params["trainable"] == size(variables.get("params", {}))
    assert params["non_trainable"] == size(variables.get("fixed", {})) + size(variables.get("batch_stats", {}))
    # every layer's own shape, through a one-layer network on its inferred input
    for layer in net.layers():
        one = cnndsl.loads(f"input {layer.x}\n{layer.text}")
        v, f = one.functional(jax.random.key(0))
        got = jax.eval_shape(f, v, jax.ShapeDtypeStruct(layer.x.array_shape(1), jnp.float32))
        assert got.shape == layer.y.array_shape(1), layer.text


# --- upsample and pad -----------------------------------------------------------------------
def test_upsample_repeats_width_and_height_separately() -> None:
    x = rand(2, 8, 12, 1)  # 1@12x8
    y = run("input 1@12x8\nupsample 2x3", x)  # width x2, height x3
    assert y.shape == (2, 24, 24, 1)
    np.testing.assert_array_equal(y, np.asarray(jnp.repeat(jnp.repeat(x, 3, axis=1), 2, axis=2)))


def test_upsample_1d_and_3d() -> None:
    x = rand(2, 10, 2)
    np.testing.assert_array_equal(run("input 2@10\nupsample 3", x), np.repeat(x, 3, axis=1))
    x3 = rand(1, 4, 5, 6, 2)  # 2@6x5x4: (N, T, H, W, D)
    want = np.repeat(np.repeat(np.repeat(x3, 3, axis=1), 1, axis=2), 2, axis=3)
    np.testing.assert_array_equal(run("input 2@6x5x4\nupsample 2x1x3", x3), want)


@pytest.mark.parametrize(("mode", "np_mode"), [("", "constant"), (" reflect", "reflect"), (" edge", "edge")])
def test_pad_width_then_height(mode: str, np_mode: str) -> None:
    x = rand(2, 8, 12, 3)
    y = run(f"input 3@12x8\npad 2x1{mode}", x)  # 2 columns left/right, 1 row top/bottom
    np.testing.assert_array_equal(y, np.pad(x, ((0, 0), (1, 1), (2, 2), (0, 0)), mode=np_mode))


def test_upsample_after_pool_lines_up_with_the_skip() -> None:
    net = cnndsl.loads("input 4@16x8\nsave a -> maxpool 2 -> upsample 2 -> concat a")
    assert not net.warnings
    rf = net.layers()[-1].rf
    assert rf.jump == (1, 1) and rf.start == (0, 0)


# --- adaptive pooling -------------------------------------------------------------------------
def adaptive_reference(x: np.ndarray, out_w: int, out_h: int, how) -> np.ndarray:
    """PyTorch's adaptive pooling, written as loops: x (N, H, W, C)."""
    n, h, w, c = x.shape
    y = np.zeros((n, out_h, out_w, c), np.float32)
    for i in range(out_h):
        r0, r1 = math.floor(i * h / out_h), math.ceil((i + 1) * h / out_h)
        for j in range(out_w):
            c0, c1 = math.floor(j * w / out_w), math.ceil((j + 1) * w / out_w)
            y[:, i, j, :] = how(x[:, r0:r1, c0:c1, :], axis=(1, 2))
    return y


@pytest.mark.parametrize(
    ("w", "h", "ow", "oh"),
    [(10, 7, 4, 3), (7, 10, 3, 4), (12, 8, 4, 2), (12, 8, 12, 8), (3, 2, 5, 4), (10, 7, 1, 1), (9, 9, 2, 2)],
)
@pytest.mark.parametrize(("op", "how"), [("adaptiveavgpool", np.mean), ("adaptivemaxpool", np.max)])
def test_adaptive_pool_matches_pytorch_bins(w: int, h: int, ow: int, oh: int, op: str, how) -> None:
    x = rand(2, h, w, 3)
    y = run(f"input 3@{w}x{h}\n{op} {ow}x{oh}", x)
    np.testing.assert_allclose(y, adaptive_reference(x, ow, oh, how), rtol=1e-6, atol=1e-6)


def test_adaptive_bins_for_non_divisible_sizes() -> None:
    assert adaptive_bins(7, 3) == ((0, 3), (2, 5), (4, 7))
    assert adaptive_bins(10, 4) == ((0, 3), (2, 5), (5, 8), (7, 10))


def test_adaptive_pool_1d() -> None:
    x = rand(2, 10, 2)
    y = run("input 2@10\nadaptiveavgpool 4", x)
    want = np.stack([x[:, s:e].mean(axis=1) for s, e in ((0, 3), (2, 5), (5, 8), (7, 10))], axis=1)
    np.testing.assert_allclose(y, want, rtol=1e-6)


def test_adaptive_pool_equals_torch() -> None:
    torch = pytest.importorskip("torch")
    x = rand(2, 7, 10, 3)
    tx = torch.from_numpy(x).permute(0, 3, 1, 2)  # NCHW
    for op, fn in (
        ("adaptiveavgpool", torch.nn.functional.adaptive_avg_pool2d),
        ("adaptivemaxpool", torch.nn.functional.adaptive_max_pool2d),
    ):
        want = fn(tx, (3, 4)).permute(0, 2, 3, 1).numpy()  # torch sizes are (H, W)
        np.testing.assert_allclose(run(f"input 3@10x7\n{op} 4x3", x), want, rtol=1e-6, atol=1e-6)


def test_adaptive_pool_has_gradients() -> None:
    net = cnndsl.loads("input 1@10x7\nadaptiveavgpool 4x3 -> adaptivemaxpool 2")
    v, apply = net.functional(jax.random.key(0))
    g = jax.grad(lambda x: apply(v, x).sum())(jnp.asarray(rand(1, 7, 10, 1)))
    assert g.shape == (1, 7, 10, 1) and bool(jnp.isfinite(g).all())
    # avg pooling gives each pixel of a bin 1/|bin|: the gradient of the sum totals the 12 outputs
    net = cnndsl.loads("input 1@10x7\nadaptiveavgpool 4x3")
    v, apply = net.functional(jax.random.key(0))
    g = jax.grad(lambda x: apply(v, x).sum())(jnp.ones((1, 7, 10, 1)))
    np.testing.assert_allclose(float(g.sum()), 12.0, rtol=1e-6)


# --- fractional max pooling -------------------------------------------------------------------
def graham_boundaries(n_in: int, ratio: float, u: float) -> list[int]:
    """a_i = ceil(alpha (i + u)) - ceil(alpha u), alpha = In / Out (Graham 2014), in floats."""
    n_out = int(n_in // ratio)
    alpha = n_in / n_out
    return [math.ceil(alpha * (i + u) - 1e-9) - math.ceil(alpha * u - 1e-9) for i in range(n_out + 1)]


def test_fracmaxpool_regions_are_grahams_sequence() -> None:
    # 10 / 1.5 -> 6 outputs, alpha = 5/3, u = 1/2: steps of 1 or 2 that end exactly at 10.
    b = frac_bins(10, Fraction(3, 2), Fraction(1, 2), overlap=False)
    assert b == ((0, 2), (2, 4), (4, 5), (5, 7), (7, 9), (9, 10))
    assert frac_bins(10, Fraction(3, 2), Fraction(1, 2), overlap=True) == (
        (0, 3),
        (2, 5),
        (4, 6),
        (5, 8),
        (7, 10),
        (9, 10),
    )
    for n in range(2, 40):
        for r in (Fraction(1414, 1000), Fraction(3, 2), Fraction(17, 10), Fraction(5, 2)):
            for u in (Fraction(0), Fraction(1, 2), Fraction(9, 10)):
                if n < r:
                    continue
                bins = frac_bins(n, r, u, overlap=False)
                alpha = Fraction(n, len(bins))
                assert len(bins) == math.floor(n / r)
                assert bins[0][0] == 0 and bins[-1][1] == n
                assert all(a[1] == b[0] for a, b in itertools.pairwise(bins))  # they tile the axis
                assert {e - s for s, e in bins} <= {math.floor(alpha), math.ceil(alpha)}
                starts = [s for s, _ in bins] + [n]
                assert starts == graham_boundaries(n, float(r), float(u))


@pytest.mark.parametrize("overlap", [False, True])
def test_fracmaxpool_matches_a_loop(overlap: bool) -> None:
    x = rand(2, 9, 13, 3)  # 3@13x9
    flag = " overlap" if overlap else ""
    y = run(f"input 3@13x9\nfracmaxpool 1.414{flag}", x)
    cols = graham_boundaries(13, 1.414, 0.5)
    rows = graham_boundaries(9, 1.414, 0.5)
    extra = 1 if overlap else 0
    want = np.zeros((2, len(rows) - 1, len(cols) - 1, 3), np.float32)
    for i in range(len(rows) - 1):
        for j in range(len(cols) - 1):
            want[:, i, j] = x[:, rows[i] : rows[i + 1] + extra, cols[j] : cols[j + 1] + extra].max(axis=(1, 2))
    assert y.shape == (2, 6, 9, 3)  # floor(9/1.414) = 6 rows, floor(13/1.414) = 9 columns
    np.testing.assert_array_equal(y, want)


def test_fracmaxpool_with_an_integer_ratio_is_maxpool() -> None:
    x = rand(2, 8, 12, 3)
    np.testing.assert_array_equal(run("input 3@12x8\nfracmaxpool 2", x), run("input 3@12x8\nmaxpool 2", x))


def test_fracmaxpool_output_size_is_exact() -> None:
    # 33 / 1.1 is 29.999... in floating point; R is kept as a fraction, so the output is 30.
    assert cnndsl.loads("input 1@33\nfracmaxpool 1.1").output.spatial == (30,)


def test_fracmaxpool_is_deterministic_in_training() -> None:
    net = cnndsl.loads("input 2@13x9\nfracmaxpool 1.5")
    v, apply = net.functional(jax.random.key(0))
    x = jnp.asarray(rand(2, 9, 13, 2))
    y1, _ = apply(v, x, train=True, key=jax.random.key(1))
    y2, _ = apply(v, x, train=True, key=jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(apply(v, x)))


# --- fixed filters ----------------------------------------------------------------------------
def per_channel(x: np.ndarray, fn) -> np.ndarray:
    """Apply a 2-D (H, W) function to each image and channel of x (N, H, W, C)."""
    return np.stack([np.stack([fn(x[n, :, :, c]) for c in range(x.shape[-1])], -1) for n in range(x.shape[0])])


def correlate_same(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Direct correlation with zero `same` padding, (K-1)//2 before and the rest after."""
    kh, kw = k.shape
    p = np.pad(img, (((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)))
    out = np.zeros_like(img, dtype=np.float64)
    for i in range(img.shape[0]):
        for j in range(img.shape[1]):
            out[i, j] = (p[i : i + kh, j : j + kw] * k).sum()
    return out


def test_sobel_on_a_step_image() -> None:
    x = np.zeros((1, 8, 12, 2), np.float32)  # 2@12x8
    x[:, :, 6:, 0] = 1.0  # channel 0: a vertical edge (dark left, bright right)
    x[:, 4:, :, 1] = 1.0  # channel 1: a horizontal edge (dark top, bright bottom)
    y = run("input 2@12x8\nfilter sobel", x)
    assert y.shape == (1, 8, 12, 4)  # (x, y) per channel: ch0/x, ch0/y, ch1/x, ch1/y
    inner = (slice(1, -1), slice(1, -1))  # away from the zero-padded border
    want_x = np.zeros((8, 12))
    want_x[:, 5:7] = 4.0  # 1 + 2 + 1 across the step
    np.testing.assert_array_equal(y[0, :, :, 0][inner], want_x[inner])
    np.testing.assert_array_equal(y[0, :, :, 1][inner], 0 * want_x[inner])
    want_y = np.zeros((8, 12))
    want_y[3:5, :] = 4.0
    np.testing.assert_array_equal(y[0, :, :, 3][inner], want_y[inner])
    np.testing.assert_array_equal(y[0, :, :, 2][inner], 0 * want_y[inner])


def test_sobel_matches_scipy_with_zero_border() -> None:
    x = rand(2, 8, 12, 3)
    y = run("input 3@12x8\nfilter sobel", x)
    sx = per_channel(x, lambda im: ndimage.sobel(im.astype(np.float64), axis=1, mode="constant"))
    sy = per_channel(x, lambda im: ndimage.sobel(im.astype(np.float64), axis=0, mode="constant"))
    np.testing.assert_allclose(y[..., 0::2], sx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y[..., 1::2], sy, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("spec", "ref"),
    [
        ("filter laplacian", lambda im: ndimage.laplace(im, mode="constant")),
        ("filter sharpen", lambda im: im - ndimage.laplace(im, mode="constant")),
        ("filter blur 3", lambda im: ndimage.uniform_filter(im, 3, mode="constant")),
        ("filter blur 5x3", lambda im: ndimage.uniform_filter(im, (3, 5), mode="constant")),
        ("filter gaussian 5 sigma=1", lambda im: ndimage.gaussian_filter(im, 1.0, mode="constant", radius=2)),
        ("filter gaussian 7x3 sigma=1.5", lambda im: ndimage.gaussian_filter(im, 1.5, mode="constant", radius=(1, 3))),
        # without sigma, K <= 7: OpenCV's binomial taps [1, 4, 6, 4, 1] / 16
        ("filter gaussian 5", lambda im: correlate_same(im, np.outer(*[np.array([1, 4, 6, 4, 1]) / 16] * 2))),
        # K > 7: OpenCV's default sigma, 0.3 * ((9 - 1) / 2 - 1) + 0.8 = 1.7
        ("filter gaussian 9", lambda im: ndimage.gaussian_filter(im, 1.7, mode="constant", radius=4)),
        ("filter blur 4", lambda im: correlate_same(im, np.full((4, 4), 1 / 16))),
    ],
)
def test_filters_match_scipy(spec: str, ref) -> None:
    x = rand(2, 8, 12, 3)
    y = run(f"input 3@12x8\n{spec}", x)
    want = per_channel(x, lambda im: ref(im.astype(np.float64)))
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def gabor_loops(kw: int, kh: int, theta: float, sigma: float, lam: float, gamma: float, psi: float) -> np.ndarray:
    k = np.zeros((kh, kw))
    t, ps = math.radians(theta), math.radians(psi)
    for r in range(kh):
        for c in range(kw):
            x, y = c - (kw - 1) / 2, (kh - 1) / 2 - r  # y up
            xr = x * math.cos(t) + y * math.sin(t)
            yr = -x * math.sin(t) + y * math.cos(t)
            k[r, c] = math.exp(-(xr * xr + gamma * gamma * yr * yr) / (2 * sigma * sigma)) * math.cos(
                2 * math.pi * xr / lam + ps
            )
    return k


def test_gabor_matches_a_direct_correlation() -> None:
    x = rand(1, 8, 12, 2)
    y = run("input 2@12x8\nfilter gabor 7x5 theta=30 sigma=2 lambda=4 gamma=0.7 psi=90", x)
    k = gabor_loops(7, 5, 30, 2, 4, 0.7, 90)
    want = per_channel(x, lambda im: correlate_same(im.astype(np.float64), k))
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def test_gabor_orientation() -> None:
    # theta=0 responds to stripes varying along the width; theta=90 to stripes along the height.
    cols = np.cos(2 * np.pi * np.arange(32) / 4)
    vertical_bars = np.broadcast_to(cols[None, :], (32, 32))
    x = np.stack([vertical_bars, vertical_bars.T], -1)[None].astype(np.float32)  # ch0 vertical, ch1 horizontal bars
    for theta, strong in ((0, 0), (90, 1)):
        y = run(f"input 2@32x32\nfilter gabor 9 theta={theta} sigma=2 lambda=4 gamma=1", x)
        energy = np.abs(y[0, 8:-8, 8:-8]).mean(axis=(0, 1))
        assert energy[strong] > 20 * energy[1 - strong], (theta, energy)


def test_filter_1d_and_3d() -> None:
    x = rand(2, 10, 2)
    want = np.stack(
        [
            ndimage.correlate1d(x[..., c].astype(np.float64), [0.25, 0.5, 0.25], axis=1, mode="constant")
            for c in range(2)
        ],
        -1,
    )
    np.testing.assert_allclose(run("input 2@10\nfilter gaussian 3", x), want, rtol=1e-5, atol=1e-6)
    x3 = rand(1, 4, 5, 6, 2)
    want3 = np.stack(
        [ndimage.uniform_filter(x3[0, ..., c].astype(np.float64), 3, mode="constant") for c in range(2)], -1
    )[None]
    np.testing.assert_allclose(run("input 2@6x5x4\nfilter blur 3", x3), want3, rtol=1e-5, atol=1e-6)


def test_filter_padding_valid_and_explicit() -> None:
    x = rand(1, 8, 12, 1)
    same = run("input 1@12x8\nfilter laplacian", x)
    valid = run("input 1@12x8\nfilter laplacian valid", x)
    assert valid.shape == (1, 6, 10, 1)
    np.testing.assert_allclose(valid, same[:, 1:-1, 1:-1], rtol=1e-6, atol=1e-6)
    p2 = run("input 1@12x8\nfilter laplacian p2", x)
    assert p2.shape == (1, 10, 14, 1)
    np.testing.assert_allclose(p2[:, 1:-1, 1:-1], same, rtol=1e-6, atol=1e-6)
    # `pad 1 reflect -> filter ... valid` keeps the size without the zero border
    refl = run("input 1@12x8\npad 1 reflect -> filter laplacian valid", x)
    want = ndimage.laplace(x[0, :, :, 0].astype(np.float64), mode="mirror")
    np.testing.assert_allclose(refl[0, :, :, 0], want, rtol=1e-5, atol=1e-5)


def test_filter_kernels_are_fixed_and_counted_non_trainable() -> None:
    net = cnndsl.loads("input 3@12x8\nfilter sobel -> filter gaussian 5x3 sigma=1 -> conv 4@3x3")
    variables, _ = net.functional(jax.random.key(0))
    assert variables["fixed"]["filter1"]["kernel"].shape == (3, 3, 1, 6)  # dwconv layout, 2 maps x 3 channels
    assert variables["fixed"]["filter2"]["kernel"].shape == (3, 5, 1, 6)
    assert "filter1" not in variables["params"]
    assert net.params == {
        "total": 9 * 6 + 15 * 6 + 4 * 6 * 9 + 4,
        "trainable": 4 * 6 * 9 + 4,
        "non_trainable": 9 * 6 + 15 * 6,
    }
    sobel, gauss = net.layers()[:2]
    assert sobel.fixed == 54 and sobel.params == 0
    assert sobel.macs == 6 * 12 * 8 * 9 and gauss.macs == 6 * 12 * 8 * 15  # like a depthwise conv
    # the NNX module keeps them out of the trainable state
    from flax import nnx

    model = net.build(nnx.Rngs(0))
    assert size(nnx.state(model, nnx.Param)) == net.params["trainable"]


def test_filter_receptive_field_is_a_convs() -> None:
    a = cnndsl.loads("input 1@12x8\nfilter gaussian 5x3 -> filter sobel valid").layers()
    b = cnndsl.loads("input 1@12x8\ndwconv 5x3 p2x1 -> conv 2@3x3").layers()
    assert [n.rf for n in a] == [n.rf for n in b]
    assert [n.y for n in a] == [n.y for n in b]


# --- preprocessing ----------------------------------------------------------------------------
def test_scale_and_normalize() -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(2, 8, 12, 3)).astype(np.float32)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    y = run("input 3@12x8\nscale 1/255 -> normalize mean=(0.485, 0.456, 0.406) std=(0.229, 0.224, 0.225)", x)
    np.testing.assert_allclose(y, (x / 255 - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run("input 3@12x8\nscale 1/127.5 offset=-1", x), x / 127.5 - 1, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(run("input 3@12x8\nnormalize mean=(128)", x), x - 128)
    v = rand(4, 5)
    np.testing.assert_allclose(run("input 5\nnormalize std=(2)", v), v / 2)


def test_grayscale_bt601() -> None:
    x = rand(2, 8, 12, 3)
    y = run("input 3@12x8\ngrayscale", x)
    np.testing.assert_allclose(y, x @ np.array([[0.299], [0.587], [0.114]]), rtol=1e-5, atol=1e-6)


# --- errors name the shapes and a fix ---------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        ("input 4@12x8\ngrayscale", "`grayscale` needs 3 channels (R, G, B), but gets 4@12x8", "RGB"),
        ("input 1@12x8\ngrayscale", "gets 1@12x8", "remove `grayscale`"),
        (
            "input 3@12x8\nnormalize mean=(1, 2)",
            "got 2 values for `mean`, but its input 3@12x8 has 3 channels",
            "one per channel",
        ),
        ("input 3@12x8\nnormalize std=(1, 0, 1)", "`std` must be > 0", "positive"),
        ("input 3@12x8\nnormalize", "needs `mean=` and/or `std=`", "usage"),
        ("input 3@12x8\nscale 0", "`scale 0`", "non-zero"),
        ("input 3@4x4\nfilter gaussian 5 valid", "needs an input of at least 5x5, but gets 3@4x4", "same"),
        ("input 3@12\nfilter sobel", "`filter sobel` works on images (D@WxH), but gets 3@12", "blur"),
        ("input 3@12x8\nfilter sobel 5", "`filter sobel` is always 3x3", "usage"),
        ("input 3@12x8\nfilter gaussian", "needs a kernel size", "filter gaussian 5"),
        ("input 3@12x8\nfilter gabor 5 sigma=1", "`filter gabor` needs `lambda=`", "lambda=4"),
        ("input 3@12x8\nfilter blur 3 sigma=1", "`sigma` is an option of", "filter blur 3"),
        ("input 3@12x8\nfilter gaussian 5 theta=30", "`theta` is an option of `filter gabor`", "usage"),
        ("input 3@12x8\nfilter gaussian 5 sigma=0", "expected a number > 0, got 0", None),
        ("input 3@12x8\nfilter sobl", "expected one of `sobel`", "did you mean `sobel`?"),
        ("input 12\nfilter blur 3", "needs an input with spatial axes, but gets the flat vector 12", "flatten"),
        ("input 3@1x8\nfracmaxpool 1.5", "turns 3@1x8 into an empty output 0x5", "smaller ratio"),
        ("input 3@12x8\nfracmaxpool 1", "expected a ratio > 1", None),
        ("input 3@12x8\nfracmaxpool 1.5 offset=1", "expected a number in [0, 1)", None),
        ("input 3@3x8\npad 3 reflect", "needs an input larger than that on every axis, but gets 3@3x8", "edge"),
        (
            "input 3@12x8\npad 1x1x1",
            "the padding 1x1x1 has 3 sizes but the input 3@12x8 has 2 spatial axes",
            "one number",
        ),
        ("input 3@12x8\nupsample 0", "sizes must be >= 1", None),
        ("input 10\nadaptiveavgpool 2", "flat vector 10", "before `flatten`"),
    ],
)
def test_errors(text: str, message: str, hint: str | None) -> None:
    with pytest.raises(cnndsl.CnnError) as e:
        cnndsl.loads(text)
    assert message in e.value.message
    if hint is not None:
        assert any(hint in h for h in e.value.hints), e.value.hints


# --- the example --------------------------------------------------------------------------------
def test_filters_demo_example() -> None:
    net = cnndsl.load(EXAMPLES / "filters_demo.cnn")
    assert str(net.input) == "3@64x64" and str(net.output) == "10"
    ops = [(n.op, n.args.get("kind")) for n in net.layers()]
    assert ("filter", "gaussian") in ops and ("filter", "sobel") in ops
    variables, apply = net.functional(jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(0).integers(0, 256, size=(2, 64, 64, 3)), jnp.float32)
    y = jax.jit(apply)(variables, x)
    assert y.shape == (2, 10) and bool(jnp.isfinite(y).all())
    assert net.params["non_trainable"] == size(variables["fixed"])
