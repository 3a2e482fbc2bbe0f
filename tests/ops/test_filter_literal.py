"""Literal fixed kernels (issue 13, item 15): `filter kernel=((1,0,-1),(0,0,0),(-1,0,1)) scale=S`
computes scipy's correlation with that array (rows top to bottom), per channel, zero-padded."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, signal

import cnndsl
from cnndsl import ir
from cnndsl.errors import ArgumentError, ShapeError

KERNELS = {
    "identity": ("((0,0,0),(0,1,0),(0,0,0))", 1, [[0, 0, 0], [0, 1, 0], [0, 0, 0]]),
    "diagonal edges": ("((1,0,-1),(0,0,0),(-1,0,1))", 1, [[1, 0, -1], [0, 0, 0], [-1, 0, 1]]),
    "laplacian 8": ("((1,1,1),(1,-8,1),(1,1,1))", 1, [[1, 1, 1], [1, -8, 1], [1, 1, 1]]),
    "prewitt x": ("((-1,0,1),(-1,0,1),(-1,0,1))", 1, [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]]),
    "gaussian 1/16": ("((1,2,1),(2,4,2),(1,2,1))", "1/16", np.outer([1, 2, 1], [1, 2, 1]) / 16),
    "5x3 rectangle": ("((1,2,3,4,5),(0,0,0,0,0),(-5,-4,-3,-2,-1))", "1/2", [[0.5, 1, 1.5, 2, 2.5], [0] * 5, [-2.5, -2, -1.5, -1, -0.5]]),
}  # fmt: skip


def run(spec: str, x: np.ndarray) -> tuple[np.ndarray, ir.Layer]:
    import jax

    net = cnndsl.loads(spec)
    v, apply = net.functional(jax.random.key(0))
    return np.asarray(apply(v, x)), next(ir.layers(net.ir.body))


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(2, 9, 11, 2)).astype(np.float32)  # (N, H, W, D)


@pytest.mark.parametrize("name", KERNELS)
def test_literal_kernel_equals_scipy_correlate(name: str, image: np.ndarray) -> None:
    text, scale, want = KERNELS[name]
    y, layer = run(f"input 2@11x9\nfilter kernel={text}" + (f" scale={scale}" if scale != 1 else ""), image)
    w = np.asarray(want, float)
    assert layer.y == layer.x and layer.fixed == 2 * w.size and layer.params == 0
    for n in range(2):
        for c in range(2):
            ref = ndimage.correlate(image[n, :, :, c].astype(float), w, mode="constant", cval=0.0)
            np.testing.assert_allclose(y[n, :, :, c], ref, rtol=1e-5, atol=1e-5)


def test_identity_returns_the_input(image: np.ndarray) -> None:
    y, _ = run("input 2@11x9\nfilter kernel=((0,0,0),(0,1,0),(0,0,0))", image)
    np.testing.assert_array_equal(y, image)


def test_even_kernel_pads_its_extra_zero_after_and_valid_shrinks(image: np.ndarray) -> None:
    w = np.array([[1.0, 2.0], [3.0, 4.0]])
    y, layer = run("input 2@11x9\nfilter kernel=((1,2),(3,4))", image)
    assert layer.y is not None and layer.y.spatial == (11, 9)
    padded = np.pad(image[0, :, :, 0].astype(float), ((0, 1), (0, 1)))
    np.testing.assert_allclose(y[0, :, :, 0], signal.correlate2d(padded, w, mode="valid"), rtol=1e-5, atol=1e-5)
    y, layer = run("input 2@11x9\nfilter kernel=((1,2),(3,4)) valid", image)
    assert layer.y is not None and layer.y.spatial == (10, 8)
    np.testing.assert_allclose(
        y[1, :, :, 1], signal.correlate2d(image[1, :, :, 1].astype(float), w, mode="valid"), rtol=1e-5, atol=1e-5
    )


def test_a_flat_tuple_is_a_row_and_with_a_size_fills_it(image: np.ndarray) -> None:
    row, _ = run("input 2@11x9\nfilter kernel=(1,2,1)", image)
    col, layer = run("input 2@11x9\nfilter kernel=(1,2,1) size=1x3", image)
    assert kernel_size(layer) == (1, 3)
    x = image[0, :, :, 0].astype(float)
    np.testing.assert_allclose(row[0, :, :, 0], ndimage.correlate(x, [[1, 2, 1]], mode="constant"), atol=1e-5)
    np.testing.assert_allclose(col[0, :, :, 0], ndimage.correlate(x, [[1], [2], [1]], mode="constant"), atol=1e-5)


def kernel_size(layer: ir.Layer) -> tuple[int, ...]:
    """The filter's kernel size (width, height) as the op sees it."""
    from cnndsl.ops import REGISTRY

    return REGISTRY["filter"]._kernel(layer.args, 2)


def test_one_dimensional_input() -> None:
    x = np.random.default_rng(1).normal(size=(1, 12, 1)).astype(np.float32)
    y, _ = run("input 1@12\nfilter kernel=(-1,0,1)", x)
    np.testing.assert_allclose(
        y[0, :, 0], ndimage.correlate1d(x[0, :, 0].astype(float), [-1, 0, 1], mode="constant"), atol=1e-6
    )


def test_block_parameters_in_a_literal_and_the_text_shown() -> None:
    net = cnndsl.loads(
        "block edge(a) { filter kernel=((a,0),(0,-a)) scale=1/a }\ninput 1@8x8\nedge(2) -> flatten -> dense 2"
    )
    layer = next(ir.layers(net.ir.body))
    assert layer.text == "filter kernel=((2, 0), (0, -2)) scale=0.5"
    assert layer.args.kernel == ((2, 0), (0, -2))


@pytest.mark.parametrize(
    ("written", "cls", "words"),
    [
        ("filter kernel=((1,2,3),(4,5))", ArgumentError, "must be rectangular: row 1 has 3 numbers, row 2 has 2"),
        ("filter kernel=((1,2),3)", ArgumentError, "all rows `(a, b, ...)` or all numbers, not a mix"),
        ("filter kernel=(((1,2),(3,4)),((1,2),(3,4)))", ArgumentError, "rows of numbers (1-D or 2-D)"),
        ("filter kernel=3x3", ArgumentError, "expected a literal kernel"),
        ("filter sobel kernel=((1,2),(3,4))", ArgumentError, "`kernel=` is a filter of its own: leave out `sobel`"),
        ("filter sobel scale=2", ArgumentError, "`scale` is an option of a literal kernel"),
        ("filter kernel=((1,2),(3,4)) sigma=1", ArgumentError, "`sigma` is not an option of a literal kernel"),
        ("filter kernel=((1,2),(3,4)) size=3x3", ArgumentError, "the size 3x3 does not fit the literal kernel (2x2"),
        ("filter", ArgumentError, "`filter` needs a kind"),
    ],
)
def test_literal_mistakes(written: str, cls: type, words: str) -> None:
    with pytest.raises(cls) as e:
        cnndsl.loads(f"input 1@8x8\n{written}")
    assert words in e.value.message
    assert e.value.span is not None


def test_two_dimensional_literal_on_a_one_dimensional_input() -> None:
    with pytest.raises(ShapeError) as e:
        cnndsl.loads("input 1@12\nfilter kernel=((1,2),(3,4))")
    assert e.value.message == "a 2x2 literal kernel is 2-D, but gets 1@12"


def test_fmt_round_trip_keeps_the_rows() -> None:
    from cnndsl.syntax.fmt import format_source

    text = "input 1@8x8\nfilter kernel=((1,0,-1),(0,0,0),(-1,0,1)) scale=1/16\n"
    out = format_source(text, "k.cnn")
    assert "kernel=((1, 0, -1), (0, 0, 0), (-1, 0, 1)) scale=1/16" in out
    assert format_source(out, "k.cnn") == out
    assert next(ir.layers(cnndsl.loads(out).ir.body)).args == next(ir.layers(cnndsl.loads(text).ir.body)).args
