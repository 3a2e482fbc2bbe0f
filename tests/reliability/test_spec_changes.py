"""Issue 9 §6: `--resume`, `predict` and `eval` refuse a network that differs from the one
the checkpoint was trained with, showing what changed; `--allow-changed-spec` proceeds where
the weights still fit. `eval` without `--data` says which data it reads, before reading it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import cnndsl
from cnndsl.cli import main
from cnndsl.errors import ArgumentError
from cnndsl.training import evaluate, predict, train
from cnndsl.training.weights import spec_changes

from .test_run_folder import TINY

TANH = TINY.replace("-> relu ->", "-> tanh ->")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("spec")
    out = folder / "run"
    train(cnndsl.loads(TINY), out=out, quiet=True, plot=False, max_steps=3)
    (folder / "tiny.cnn").write_text(TINY)
    (folder / "tanh.cnn").write_text(TANH)
    return out


def test_the_diff_names_layers_ops_and_shapes() -> None:
    net = cnndsl.loads(TANH)
    assert spec_changes(TINY, net) == ["-relu1: relu (4@8x8 -> 4@8x8)", "+tanh1: tanh (4@8x8 -> 4@8x8)"]
    wider = spec_changes(TINY, cnndsl.loads(TINY.replace("conv 4@3x3", "conv 6@3x3")))
    assert "-conv1: conv 4@3x3 p1 (1@8x8 -> 4@8x8)" in wider and "+conv1: conv 6@3x3 p1 (1@8x8 -> 6@8x8)" in wider
    # the train section, comments and layout are not the network
    same = "# a comment\n" + TINY.replace("epochs = 2", "epochs = 5").replace(" -> relu", "\n  -> relu")
    assert spec_changes(TINY, cnndsl.loads(same)) == []


def test_resume_refuses_a_changed_network(run: Path, tmp_path: Path, capsys) -> None:
    tanh = run.parent / "tanh.cnn"
    assert main(["train", str(tanh), "--out", str(run), "--resume", "--max-steps", "4"]) == 2
    err = capsys.readouterr().err
    assert "tanh.cnn` is not the network that" in err
    assert "-relu1: relu (4@8x8 -> 4@8x8)" in err and "+tanh1: tanh (4@8x8 -> 4@8x8)" in err
    assert "--allow-changed-spec" in err
    out = tmp_path / "copy"
    import shutil

    shutil.copytree(run, out)
    argv = ["train", str(tanh), "--out", str(out), "--resume", "--max-steps", "4", "--allow-changed-spec", "--no-plot"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "spec     changed since the checkpoint (--allow-changed-spec):" in text and "+tanh1: tanh" in text


def test_predict_and_eval_refuse_a_changed_network(run: Path, tmp_path: Path) -> None:
    from PIL import Image

    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    net = cnndsl.loads(TANH)
    for call in (
        lambda **k: predict(net, run, [image], **k),
        lambda **k: evaluate(net, run, **k),
    ):
        with pytest.raises(ArgumentError, match="is not the network that the weights in") as e:
            call()
        assert "+tanh1: tanh (4@8x8 -> 4@8x8)" in e.value.notes
        call(allow_changed_spec=True)  # the weights still fit: relu and tanh have none


def test_eval_says_which_data_it_reads_before_reading_it(run: Path, tmp_path: Path, capsys) -> None:
    spec = str(run.parent / "tiny.cnn")
    assert main(["eval", spec, "--weights", str(run), "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("data    digits: the data these weights were trained on, as ")
    assert "choose other data with --data" in captured.err and json.loads(captured.out)["data"] == "digits"
    # a checkpoint that names another path: shown first, then the error about it
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(run, out)
    latest = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip() / "meta.json"
    doc = json.loads(latest.read_text())
    doc["meta"]["config"]["data"] = "/etc"
    latest.write_text(json.dumps(doc))
    assert main(["eval", spec, "--weights", str(out), "--which", "latest"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("data    /etc: the data these weights were trained on") and "error:" in err
    assert err.index("data    /etc") < err.index("error:")
