"""Checkpoints: bit-exact round trips, latest/best bookkeeping, atomic writes, clear errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

from cnndsl.errors import DataError
from cnndsl.training import checkpoint
from cnndsl.training.checkpoint import checkpoint_info, restore_checkpoint, save_checkpoint


def train_state(seed: int = 0) -> dict[str, Any]:
    """A small training state: nested params, BN stats, Adam state, a PRNG key, odd values."""
    rng = np.random.default_rng(seed)
    params = {
        "conv1": {"kernel": rng.standard_normal((5, 5, 1, 6), np.float32), "bias": np.zeros(6, np.float32)},
        "stage1": {"block1": {"bn": {"scale": np.ones(6, np.float32), "bias": np.full(6, -0.0, np.float32)}}},
        "fc": {"kernel": jnp.asarray(rng.standard_normal((24, 10), np.float32)), "bias": jnp.zeros(10)},
    }
    stats = {"stage1": {"block1": {"bn": {"mean": np.array([np.nan, np.inf, -np.inf, 1e-45, 0, 1], np.float32)}}}}
    opt_state = optax.adam(1e-3).init(params)
    return {
        "variables": {"params": params, "batch_stats": stats},
        "opt_state": opt_state,
        "key": jax.random.split(jax.random.key(seed), 2),
        "half": np.arange(4, dtype=ml_dtypes.bfloat16),
        "step": np.int64(2**40 + 1),
    }


def leaves_bytes(tree: Any) -> list[tuple[str, tuple[int, ...], bytes]]:
    def raw(x: Any) -> tuple[str, tuple[int, ...], bytes]:
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        a = np.asarray(x)
        return str(a.dtype), a.shape, a.tobytes()

    return [raw(x) for x in jax.tree.leaves(tree)]


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    state = train_state()
    save_checkpoint(tmp_path, state, step=7, meta={"epoch": 2, "spec": "network x\n"})
    ck = restore_checkpoint(tmp_path, target=train_state(seed=1))
    assert leaves_bytes(ck.tree) == leaves_bytes(state)
    assert jax.tree.structure(ck.tree) == jax.tree.structure(state)
    assert isinstance(ck.tree["opt_state"][0], optax.ScaleByAdamState)
    assert jax.random.key_impl(ck.tree["key"]) == jax.random.key_impl(state["key"])
    assert ck.step == 7 and ck.meta == {"epoch": 2, "spec": "network x\n"}
    # Without a target: nested dicts of the same arrays.
    plain = restore_checkpoint(tmp_path).tree
    assert set(plain) == {"variables", "opt_state", "key", "half", "step"}
    assert np.asarray(plain["variables"]["params"]["conv1"]["kernel"]).tobytes() == (
        state["variables"]["params"]["conv1"]["kernel"].tobytes()
    )


def test_latest_and_best(tmp_path: Path) -> None:
    state = train_state()
    for step, acc in [(100, 0.5), (200, 0.8), (300, 0.7), (400, float("nan")), (500, None)]:
        save_checkpoint(tmp_path, state, step=step, metric=acc, meta={"acc": acc})
    assert restore_checkpoint(tmp_path).step == 500
    best = restore_checkpoint(tmp_path, which="best")
    assert best.step == 200 and best.metric == 0.8 and best.meta == {"acc": 0.8}
    assert restore_checkpoint(tmp_path / "best").step == 200
    assert restore_checkpoint(tmp_path / "latest").step == 500
    assert restore_checkpoint(best.path).step == 200
    assert checkpoint_info(tmp_path).best_metric == 0.8 and checkpoint_info(tmp_path).tree is None
    # Only the latest and best step folders are kept.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "latest", "step-00000200", "step-00000500"]


def test_best_by_lowest_loss(tmp_path: Path) -> None:
    state = {"w": np.ones(3, np.float32)}
    for step, loss in [(1, 0.9), (2, 0.4), (3, 0.6)]:
        save_checkpoint(tmp_path, state, step=step, metric=loss, mode="min")
    assert restore_checkpoint(tmp_path, which="best").step == 2


def test_same_step_saved_twice(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, {"w": np.zeros(2)}, step=5, metric=1.0)
    save_checkpoint(tmp_path, {"w": np.ones(2)}, step=5)
    assert restore_checkpoint(tmp_path).tree["w"].tolist() == [1, 1]
    assert restore_checkpoint(tmp_path, which="best").tree["w"].tolist() == [0, 0]


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_checkpoint(tmp_path, {"w": np.zeros(2)}, step=1)

    def crash(path: Path, data: bytes) -> None:
        path.write_bytes(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "_write", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, {"w": np.ones(2)}, step=2)
    monkeypatch.undo()
    assert restore_checkpoint(tmp_path).step == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000001"]
    # Leftovers of a killed process are cleared by the next save.
    (tmp_path / ".tmp-123-abcd").mkdir()
    save_checkpoint(tmp_path, {"w": np.ones(2)}, step=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000003"]


def test_missing_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        restore_checkpoint(tmp_path / "nope")
    assert e.value.message == f"no checkpoint `{tmp_path / 'nope'}`"
    with pytest.raises(DataError, match="no checkpoint in"):
        restore_checkpoint(tmp_path)
    save_checkpoint(tmp_path, {"w": np.zeros(2)}, step=1)
    with pytest.raises(DataError) as e:
        restore_checkpoint(tmp_path, which="best")
    assert "has no best checkpoint" in e.value.message and "latest" in e.value.hints[0]


def corrupt_state(folder: Path) -> None:
    data = bytearray((folder / checkpoint.STATE_FILE).read_bytes())
    data[-3] ^= 0x01
    (folder / checkpoint.STATE_FILE).write_bytes(bytes(data))


def truncate_state(folder: Path) -> None:
    (folder / checkpoint.STATE_FILE).write_bytes((folder / checkpoint.STATE_FILE).read_bytes()[:20])


def garble_meta(folder: Path) -> None:
    (folder / checkpoint.META_FILE).write_text("{not json")


def foreign_meta(folder: Path) -> None:
    (folder / checkpoint.META_FILE).write_text(json.dumps({"step": 1}))


def incomplete_meta(folder: Path) -> None:
    (folder / checkpoint.META_FILE).write_text(json.dumps({"format": checkpoint.FORMAT, "version": 1}))


@pytest.mark.parametrize(
    ("damage", "expect"),
    [
        (corrupt_state, "does not match its checksum"),
        (truncate_state, "does not match its checksum"),
        (garble_meta, "cannot read meta.json"),
        (foreign_meta, "is not a cnndsl checkpoint"),
        (incomplete_meta, "meta.json lacks best_metric, bytes"),
        (lambda f: (f / checkpoint.STATE_FILE).unlink(), "cannot read state.msgpack"),
        (lambda f: (f.parent / "latest").write_text("step-00000099\n"), "`latest` names `step-00000099`"),
    ],
)
def test_damaged_checkpoints(tmp_path: Path, damage: Any, expect: str) -> None:
    folder = save_checkpoint(tmp_path, train_state(), step=1)
    damage(folder)
    with pytest.raises(DataError) as e:
        restore_checkpoint(tmp_path)
    assert expect in e.value.message


def test_msgpack_garbage_with_matching_checksum(tmp_path: Path) -> None:
    folder = save_checkpoint(tmp_path, {"w": np.zeros(2)}, step=1)
    blob = b"\xc1garbage"
    (folder / checkpoint.STATE_FILE).write_bytes(blob)
    meta = json.loads((folder / checkpoint.META_FILE).read_text())
    meta["sha256"] = hashlib.sha256(blob).hexdigest()
    (folder / checkpoint.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="is damaged"):
        restore_checkpoint(tmp_path)


def test_target_mismatch_names_the_arrays(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, train_state(), step=1)
    other = train_state()
    other["variables"]["params"]["fc"] = {"kernel": np.zeros((24, 5), np.float32), "bias": np.zeros(5, np.float32)}
    del other["half"]
    with pytest.raises(DataError) as e:
        restore_checkpoint(tmp_path, target=other)
    notes = "\n".join(e.value.notes)
    assert "`variables.params.fc.kernel` is float32[24,10] in the checkpoint, float32[24,5] here" in notes
    assert "`half` is in the checkpoint but not here" in notes
    assert "transfer" in e.value.hints[0]


def test_metadata_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="JSON-able"):
        save_checkpoint(tmp_path, {"w": np.zeros(1)}, step=1, meta={"bad": object()})
    with pytest.raises(TypeError, match="only arrays"):
        save_checkpoint(tmp_path, {"w": object()}, step=1)
