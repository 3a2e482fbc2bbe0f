"""The device-resident training images (`loop.RESIDENT_BYTES`): a small, unaugmented training
set is put on the device once and each step gathers its batch there. The batches are the
same as the host pipeline's (the same permutation of the same rows), so the weights are
too, bit for bit on one device; resume and data parallelism work as on the host path.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from rich.console import Console

import cnndsl
from cnndsl.training import loop, train

# BN (batch statistics), dropout (keys from the step) and a warm-up + cosine rate: what
# depends on which rows make a batch and on the step count.
SPEC = """network Small
input 1@8x8
conv 8@3x3 p1 nobias -> bn -> relu -> maxpool 2 -> flatten -> dropout 0.2 -> dense 10 -> softmax
train {
  data = digits
  optimizer = adam(lr=0.01)
  schedule = cosine
  warmup = 5
  batch = 32
  epochs = 2
}
"""
ON_DEVICE = "the training set on the device"


def run(tmp_path: Path, name: str, **options: object) -> tuple[cnndsl.training.TrainResult, str]:
    console = Console(record=True, width=400, force_terminal=False)
    r = train(cnndsl.loads(SPEC), out=tmp_path / name, console=console, plot=False, **options)
    return r, console.export_text()


def assert_same(a: object, b: object) -> None:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(x, y)


def test_resident_and_host_batches_give_the_same_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resident, text = run(tmp_path, "resident")
    assert ON_DEVICE in text
    monkeypatch.setattr(loop, "RESIDENT_BYTES", 0)  # too large for the device: fed from the host
    host, text = run(tmp_path, "host")
    assert ON_DEVICE not in text
    assert resident.step == host.step == 2 * (len(resident.dataset.x_train) // 32)
    assert_same(resident.variables, host.variables)
    assert [h["train_loss"] for h in resident.history] == [h["train_loss"] for h in host.history]
    assert resident.test == host.test


def test_resident_resume_is_bit_for_bit(tmp_path: Path) -> None:
    straight, _ = run(tmp_path, "a")
    first, text = run(tmp_path, "b", max_steps=55)  # stops inside epoch 2
    assert ON_DEVICE in text and first.stopped == "max_steps" and first.step == 55
    resumed, _ = run(tmp_path, "b", resume=True)
    assert resumed.step == straight.step
    assert_same(straight.variables, resumed.variables)
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]


@pytest.mark.skipif(jax.device_count() < 4, reason="needs 4 devices (tests/conftest.py asks for 4 CPU devices)")
def test_resident_data_parallel_matches_one_device(tmp_path: Path) -> None:
    """The set is replicated and each device gathers its quarter of the batch. (CPU numerics
    may depend on the device count, hence a float tolerance, as in test_train.)"""
    one, _ = run(tmp_path, "one")
    four, text = run(tmp_path, "four", devices=4)
    assert ON_DEVICE in text and four.summary["devices"] == 4
    for a, b in zip(jax.tree.leaves(one.variables), jax.tree.leaves(four.variables), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_augmentation_and_large_sets_are_fed_from_the_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Crops and flips are drawn on the host, so an augmented run keeps the host pipeline;
    so does a set over RESIDENT_BYTES."""
    aug, text = run(tmp_path, "aug", overrides={"augment": "flip", "epochs": 1})
    assert ON_DEVICE not in text
    ds = aug.dataset  # the same split without augmentation
    monkeypatch.setattr(loop, "RESIDENT_BYTES", ds.x_train.size * 4 - 1)  # one byte short
    _, text = run(tmp_path, "big", overrides={"epochs": 1})
    assert ON_DEVICE not in text
