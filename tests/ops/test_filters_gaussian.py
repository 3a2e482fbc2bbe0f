"""`filter gaussian K` without sigma is OpenCV's `getGaussianKernel(K, -1)`: its documented
fixed taps for K <= 7, its sigma formula above."""

from __future__ import annotations

import numpy as np
import pytest

import cnndsl
from cnndsl.ops.filters import kernel_maps

# from OpenCV's documentation of getGaussianKernel (small_gaussian_tab)
OPENCV_TABLES = {
    1: [1.0],
    3: [0.25, 0.5, 0.25],
    5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
    7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
}


def taps(spec: str) -> np.ndarray:
    (layer,) = cnndsl.loads(f"input 1@16x16\n{spec}").layers()
    size = layer.args.size * 2 if len(layer.args.size) == 1 else layer.args.size  # `5` is 5x5 on 2-D input
    return kernel_maps(layer.args, size)[0]


@pytest.mark.parametrize("k", sorted(OPENCV_TABLES))
def test_small_sizes_use_opencvs_tables(k: int) -> None:
    g = np.array(OPENCV_TABLES[k])
    np.testing.assert_array_equal(taps(f"filter gaussian {k}"), np.outer(g, g))


def test_3_taps_are_a_quarter_half_quarter_not_sigma_0_8() -> None:
    np.testing.assert_array_equal(taps("filter gaussian 3x1")[0], [0.25, 0.5, 0.25])


def test_larger_sizes_and_an_explicit_sigma_use_the_formula() -> None:
    def formula(k: int, sigma: float) -> np.ndarray:
        t = np.arange(k) - (k - 1) / 2
        g = np.exp(-(t**2) / (2 * sigma**2))
        return g / g.sum()

    np.testing.assert_allclose(taps("filter gaussian 9x1")[0], formula(9, 0.3 * (4 - 1) + 0.8), rtol=1e-12)
    np.testing.assert_allclose(taps("filter gaussian 3x1 sigma=0.8")[0], formula(3, 0.8), rtol=1e-12)
    # a non-square kernel mixes both: 7 wide (table), 9 high (formula)
    k = taps("filter gaussian 7x9")
    np.testing.assert_allclose(k, np.outer(formula(9, 1.7), OPENCV_TABLES[7]), rtol=1e-12)
