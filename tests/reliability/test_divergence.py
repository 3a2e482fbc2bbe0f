"""Issue 9 §4: a non-finite loss stops training with an error naming the step and what to
try; non-finite weights are never saved as `latest` or `best`; predict and eval refuse them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cnndsl
from cnndsl.cli import main
from cnndsl.errors import DataError
from cnndsl.training import evaluate, predict, train
from cnndsl.training.checkpoint import checkpoint_info, restore_checkpoint, save_checkpoint
from cnndsl.training.loop import Diverged

from .test_run_folder import TINY

DIGITS = Path(__file__).resolve().parents[2] / "examples" / "digits.cnn"


def test_a_huge_rate_stops_at_once_and_saves_nothing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", str(DIGITS), "--out", str(out), "--lr", "1e9", "--epochs", "1", "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert "error: training diverged: the loss or the weights became NaN or infinite at step " in err
    assert "(epoch 1, batch " in err and "the learning rate at that step was 9.9" in err and "(adam(lr=1e+09))" in err
    assert "nothing was saved" in err
    assert "hint: lower the learning rate (e.g. `--lr 1e+08`)" in err and "--warmup" in err
    assert not (out / "checkpoints").exists() and not (out / "summary.json").exists()


def test_divergence_later_keeps_the_last_finite_checkpoint(tmp_path: Path) -> None:
    # three steps at the file's rate are saved; resumed at 1e9, the run diverges within a few steps
    net = cnndsl.load(DIGITS)
    train(net, out=tmp_path / "run", quiet=True, plot=False, max_steps=3)
    with pytest.raises(Diverged, match=r"at step ([4-9]|\d\d) \(epoch 1, batch") as e:
        train(net, out=tmp_path / "run", quiet=True, plot=False, resume=True, overrides={"lr": "1e9"})
    assert "the last checkpoint, step 3 in" in e.value.notes[1] and "has finite weights" in e.value.notes[1]
    ck = restore_checkpoint(tmp_path / "run" / "checkpoints")
    assert ck.step == 3 and not (tmp_path / "run" / "checkpoints" / "best").exists()
    assert all(np.isfinite(ck.tree["params"][layer]["kernel"]).all() for layer in ("conv1", "dense1", "dense2"))
    # the resumed run kept only complete epochs (none yet) and wrote no line of the diverged one
    assert (tmp_path / "run" / "history.jsonl").read_text() == ""


def test_predict_and_eval_refuse_non_finite_weights(tmp_path: Path) -> None:
    net = cnndsl.loads(TINY)
    run = train(net, out=tmp_path / "run", quiet=True, plot=False, max_steps=2)
    ck = restore_checkpoint(tmp_path / "run" / "checkpoints")
    tree = {k: {**v} if isinstance(v, dict) else v for k, v in ck.tree.items()}
    kernel = np.array(tree["params"]["dense1"]["kernel"])
    kernel[0, :3] = np.nan
    kernel[1, 0] = np.inf
    tree["params"] = {**tree["params"], "dense1": {**tree["params"]["dense1"], "kernel": kernel}}
    save_checkpoint(tmp_path / "bad", tree, step=ck.step, meta=ck.meta)
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray((run.dataset.x_test[0, :, :, 0] * 0).astype(np.uint8)).save(image)
    for call in (lambda: predict(net, tmp_path / "bad", [image]), lambda: evaluate(net, tmp_path / "bad")):
        with pytest.raises(DataError, match="are not finite: the run that saved them diverged") as e:
            call()
        assert "`params.dense1.kernel` has 4 of" in e.value.notes[0]
    assert checkpoint_info(tmp_path / "bad").step == 2
