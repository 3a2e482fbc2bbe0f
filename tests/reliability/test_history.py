"""Issue 9 §3: history.jsonl and the checkpoint metadata survive any crash. The history is
rewritten atomically on `--resume`, a torn last line is repaired, an epoch whose line was
lost is rebuilt from its checkpoint, JSON is strict, and a damaged meta.json is a clear
`DataError` naming the file and the key."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import cnndsl
from cnndsl.errors import DataError
from cnndsl.training import load_weights, train
from cnndsl.training.checkpoint import strict_json
from cnndsl.training.weights import check_run_meta

from .test_run_folder import TINY


def strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run of the tiny net (20 steps)."""
    out = tmp_path_factory.mktemp("history") / "run"
    train(cnndsl.loads(TINY), out=out, quiet=True, plot=False, overrides={"epochs": 1})
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def _lines(out: Path) -> list[dict[str, Any]]:
    return [strict(line) for line in (out / "history.jsonl").read_text().splitlines()]


def test_a_torn_last_line_is_repaired_on_resume(one_epoch: Path, tmp_path: Path) -> None:
    out = _copy(one_epoch, tmp_path)
    with (out / "history.jsonl").open("a") as f:
        f.write('{"epoch": 2, "step": 3')  # a crash while appending
    r = train(cnndsl.loads(TINY), out=out, quiet=True, plot=False, resume=True, overrides={"epochs": 2})
    assert [h["epoch"] for h in _lines(out)] == [1, 2] == [h["epoch"] for h in r.history]


def test_a_damaged_line_before_the_last_is_a_clear_error(one_epoch: Path, tmp_path: Path) -> None:
    out = _copy(one_epoch, tmp_path)
    good = (out / "history.jsonl").read_text()
    (out / "history.jsonl").write_text("{oops\n" + good)
    with pytest.raises(DataError, match=r"history.jsonl` is damaged at line 1"):
        train(cnndsl.loads(TINY), out=out, quiet=True, resume=True, overrides={"epochs": 2})


def test_an_epoch_whose_line_was_lost_is_rebuilt_from_its_checkpoint(one_epoch: Path, tmp_path: Path) -> None:
    out = _copy(one_epoch, tmp_path)
    before = _lines(out)
    (out / "history.jsonl").write_text("")  # the crash came between the save and the append
    train(cnndsl.loads(TINY), out=out, quiet=True, plot=False, resume=True, overrides={"epochs": 2})
    after = _lines(out)
    assert [h["epoch"] for h in after] == [1, 2]
    assert after[0] == before[0]


def test_a_crash_during_the_rewrite_leaves_the_old_history(
    one_epoch: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cnndsl.training.checkpoint as ck

    out = _copy(one_epoch, tmp_path)
    old = (out / "history.jsonl").read_bytes()
    real = ck._write

    def crash(path: Path, data: bytes) -> None:
        if path.name.startswith(".history.jsonl.tmp-"):
            path.write_bytes(data[: len(data) // 2])
            raise KeyboardInterrupt  # the process dies half-way through the rewrite
        real(path, data)

    monkeypatch.setattr(ck, "_write", crash)
    with pytest.raises(KeyboardInterrupt):
        train(cnndsl.loads(TINY), out=out, quiet=True, resume=True, overrides={"epochs": 2})
    assert (out / "history.jsonl").read_bytes() == old
    assert not list(out.glob(".history.jsonl.tmp-*"))
    monkeypatch.setattr(ck, "_write", real)
    train(cnndsl.loads(TINY), out=out, quiet=True, plot=False, resume=True, overrides={"epochs": 2})
    assert [h["epoch"] for h in _lines(out)] == [1, 2]


def test_json_is_strict(one_epoch: Path) -> None:
    assert strict_json({"loss": math.nan, "x": [math.inf, np.float32(-np.inf), np.float64(0.5)]}) == (
        '{"loss": null, "x": [null, null, 0.5]}'
    )
    strict((one_epoch / "summary.json").read_text())
    _lines(one_epoch)
    strict((one_epoch / "checkpoints" / (one_epoch / "checkpoints" / "latest").read_text().strip() / "meta.json")
           .read_text())  # fmt: skip


def _meta_path(out: Path) -> Path:
    return out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip() / "meta.json"


DAMAGE = [
    # (what is done to meta.json, the words the error must contain)
    (lambda d: d.pop("step"), "meta.json lacks step"),
    (lambda d: d.update(surprise=1), "unexpected keys 'surprise'"),
    (lambda d: d.update(step="twenty"), '`step` should be a whole number >= 0, not "twenty"'),
    (lambda d: d.update(keys=[1]), "`keys` should be an object of strings"),
    (lambda d: d["meta"].update(epoch="1"), "`meta.epoch` should be a whole number >= 0, not '1'"),
    (lambda d: d["meta"].pop("config"), "`meta.config` is missing"),
    (lambda d: d["meta"]["config"].update(batch="x"), "`meta.config.batch` is not a training configuration value"),
    (lambda d: d["meta"]["normalization"].update(std=[0.0]), "`meta.normalization.std` must be above 0"),
    (lambda d: d["meta"]["normalization"].update(mean=[1, 2, 3], std=[1, 1, 1]), "has 3 means and 3 stds, but"),
    (lambda d: d["meta"]["normalization"].pop("mean"), "`meta.normalization` should have kind, mean and std"),
    (lambda d: d["meta"].update(class_names=[0, 1]), "`meta.class_names` should be a list of names"),
]


@pytest.mark.parametrize(("damage", "words"), DAMAGE)
def test_damaged_metadata_is_a_clear_error(one_epoch: Path, tmp_path: Path, damage: Any, words: str) -> None:
    out = _copy(one_epoch, tmp_path)
    path = _meta_path(out)
    doc = json.loads(path.read_text())
    damage(doc)
    path.write_text(json.dumps(doc))
    net = cnndsl.loads(TINY)
    with pytest.raises(DataError) as e:
        train(net, out=out, quiet=True, resume=True, overrides={"epochs": 2})
    assert words in e.value.message and str(path.parent) in e.value.message
    if "config" not in words:
        with pytest.raises(DataError, match="damaged"):
            load_weights(net, out, "latest")


def test_meta_checks_accept_what_train_writes(one_epoch: Path) -> None:
    meta = json.loads(_meta_path(one_epoch).read_text())["meta"]
    assert check_run_meta(meta, one_epoch, cnndsl.loads(TINY)) is meta
