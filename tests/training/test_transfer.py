"""Transfer learning: loading by layer path and shape, the report, freeze masks."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax
import pytest

from cnndsl.errors import CnnNameError
from cnndsl.training.transfer import freeze_mask, transfer


def variables(head: int, *, seed: int = 0) -> dict[str, Any]:
    """A small ResNet-like variables tree: a stem, a nested block with BN, a head."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    return {
        "params": {
            "conv1": {"kernel": w(3, 3, 1, 8), "bias": w(8)},
            "stage1": {
                "block1": {
                    "conv1": {"kernel": w(3, 3, 8, 8)},
                    "bn1": {"scale": w(8), "bias": w(8)},
                }
            },
            "fc": {"kernel": w(8, head), "bias": w(head)},
        },
        "batch_stats": {"stage1": {"block1": {"bn1": {"mean": w(8), "var": w(8)}}}},
        "fixed": {"sobel": {"kernel": w(3, 3, 1, 2)}},
    }


@pytest.fixture
def swap() -> tuple[dict[str, Any], dict[str, Any]]:
    """A 10-class source and a 5-class destination that adds one layer and lacks another."""
    src = variables(10, seed=1)
    src["params"]["aux"] = {"kernel": np.ones((8, 3), np.float32)}
    dst = variables(5, seed=2)
    dst["params"]["stage2"] = {"conv1": {"kernel": np.zeros((3, 3, 8, 16), np.float32)}}
    return src, dst


def test_transfer_loads_matching_layers(swap: tuple[dict[str, Any], dict[str, Any]]) -> None:
    src, dst = swap
    before = jax.tree.map(np.copy, dst)
    new, report = transfer(src, dst)
    assert report.loaded == ["conv1", "stage1.block1.conv1", "stage1.block1.bn1"]
    assert report.missing == ["stage2.conv1"]
    assert report.extra == ["aux"]
    [fc] = report.mismatched
    assert fc.layer == "fc"
    assert [(a.name, a.source, a.here) for a in fc.arrays] == [("kernel", (8, 10), (8, 5)), ("bias", (10,), (5,))]
    assert [m.layer for m in report.skipped] == ["fc", "stage2.conv1"]
    # Loaded layers carry the source's arrays in every collection; the rest keep their values.
    p, q = new["params"], src["params"]
    assert np.array_equal(p["conv1"]["kernel"], q["conv1"]["kernel"])
    assert np.array_equal(p["stage1"]["block1"]["bn1"]["scale"], q["stage1"]["block1"]["bn1"]["scale"])
    bs = new["batch_stats"]["stage1"]["block1"]["bn1"]["var"]
    assert np.array_equal(bs, src["batch_stats"]["stage1"]["block1"]["bn1"]["var"])
    assert np.array_equal(p["fc"]["kernel"], dst["params"]["fc"]["kernel"])
    assert np.array_equal(new["fixed"]["sobel"]["kernel"], dst["fixed"]["sobel"]["kernel"])
    assert "aux" not in p
    # The destination itself is untouched, and the structure is unchanged.
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(dst), jax.tree.leaves(before), strict=True))
    assert jax.tree.structure(new) == jax.tree.structure(dst)


def test_report_renders_as_a_table(swap: tuple[dict[str, Any], dict[str, Any]]) -> None:
    _, report = transfer(*swap)
    lines = str(report).splitlines()
    assert lines[0] == (
        "transfer: loaded 3 of 5 layers (688 of 1,885 values); 2 kept their initial values; 1 source layer unused"
    )
    assert lines[1].split() == ["layer", "status", "arrays"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert "loaded" in rows["conv1"] and "kernel 3x3x1x8, bias 8" in rows["conv1"]
    assert "batch_stats.mean 8, batch_stats.var 8" in rows["stage1.block1.bn1"]
    assert "shape mismatch" in rows["fc"] and "kernel: source 8x10, here 8x5; bias: source 10, here 5" in rows["fc"]
    assert "missing in source" in rows["stage2.conv1"]
    assert "extra in source" in rows["aux"] and "kernel 8x3" in rows["aux"]
    # Columns line up.
    assert len({line.index(" loaded") for line in lines[2:] if " loaded" in line}) == 1


def test_exclude_keeps_the_initial_values(swap: tuple[dict[str, Any], dict[str, Any]]) -> None:
    src, dst = swap
    new, report = transfer(src, dst, exclude=["stage1.*"])
    assert report.loaded == ["conv1"]
    assert report.excluded == ["stage1.block1.conv1", "stage1.block1.bn1"]
    assert new["params"]["stage1"] is not dst["params"]["stage1"]
    assert np.array_equal(
        new["params"]["stage1"]["block1"]["conv1"]["kernel"], dst["params"]["stage1"]["block1"]["conv1"]["kernel"]
    )
    with pytest.raises(CnnNameError, match="`exclude` pattern `stage3` matches no layer"):
        transfer(src, dst, exclude=["stage3"])


def test_layer_missing_an_array_is_a_mismatch() -> None:
    src = {"params": {"conv": {"kernel": np.ones((3, 3, 1, 4))}}}
    dst = {"params": {"conv": {"kernel": np.zeros((3, 3, 1, 4)), "bias": np.zeros(4)}}}
    new, report = transfer(src, dst)
    assert report.loaded == [] and [m.layer for m in report.mismatched] == ["conv"]
    assert "bias: source absent, here 4" in str(report)
    assert not new["params"]["conv"]["kernel"].any()  # a layer loads whole or not at all


def test_integer_keys_and_dtype_cast() -> None:
    # nnx.List layers appear with integer keys; a checkpoint stores them as strings.
    src = {"params": {"layers": {"0": {"kernel": np.ones((2, 2), np.float32)}}}}
    dst = {"params": {"layers": {0: {"kernel": np.zeros((2, 2), np.float16)}}}}
    new, report = transfer(src, dst)
    assert report.loaded == ["layers.0"]
    assert new["params"]["layers"][0]["kernel"].dtype == np.float16 and new["params"]["layers"][0]["kernel"].all()
    assert "cast kernel float32 -> float16" in str(report)


def test_nothing_loaded_says_what_the_source_holds(swap: tuple[dict[str, Any], dict[str, Any]]) -> None:
    src, dst = swap
    _, report = transfer({"variables": src, "opt_state": {}}, dst)
    assert report.loaded == []
    assert str(report).endswith("= nothing was loaded; the source holds `variables`, `opt_state`")


def test_freeze_mask_patterns() -> None:
    params = variables(5)["params"]
    mask = freeze_mask(params, ["conv*", "stage1.*.bn1"])
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    assert mask["conv1"] == {"kernel": True, "bias": True}
    assert mask["stage1"]["block1"] == {"conv1": {"kernel": False}, "bn1": {"scale": True, "bias": True}}
    assert mask["fc"] == {"kernel": False, "bias": False}
    everything_in_stage1 = freeze_mask(params, ["stage1"])["stage1"]
    assert all(jax.tree.leaves(everything_in_stage1))
    assert freeze_mask(params, ["fc.bias"])["fc"] == {"kernel": False, "bias": True}
    assert not any(jax.tree.leaves(freeze_mask(params, [])))


@pytest.mark.parametrize(
    ("pattern", "hint"),
    [("conv3", "did you mean `conv1`?"), ("block1", "did you mean `stage1.block1`?"), ("zzz*", "globs over dotted")],
)
def test_freeze_pattern_matching_nothing(pattern: str, hint: str) -> None:
    with pytest.raises(CnnNameError) as e:
        freeze_mask(variables(5)["params"], [pattern])
    assert e.value.message == f"`freeze` pattern `{pattern}` matches no layer with parameters"
    assert e.value.notes == ["layers with parameters: conv1, fc, stage1"]
    assert hint in e.value.hints[0]


def test_freeze_mask_drives_optax() -> None:
    params = jax.tree.map(np.asarray, variables(5)["params"])
    mask = freeze_mask(params, ["conv1", "stage1"])
    labels = jax.tree.map(lambda frozen: "frozen" if frozen else "train", mask)
    opt = optax.multi_transform({"train": optax.sgd(0.1), "frozen": optax.set_to_zero()}, labels)
    grads = jax.tree.map(np.ones_like, params)
    updates, _ = opt.update(grads, opt.init(params), params)
    new = optax.apply_updates(params, updates)
    assert np.array_equal(new["conv1"]["kernel"], params["conv1"]["kernel"])
    assert np.array_equal(new["stage1"]["block1"]["bn1"]["scale"], params["stage1"]["block1"]["bn1"]["scale"])
    assert np.allclose(new["fc"]["kernel"], params["fc"]["kernel"] - 0.1)
