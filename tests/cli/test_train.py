"""`cnndsl train`, `cnndsl predict` and `cnndsl eval` end to end on digits, with exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnndsl.cli import main

ROOT = Path(__file__).resolve().parents[2]
DIGITS = str(ROOT / "examples" / "digits.cnn")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", DIGITS, "--out", str(out), "--epochs", "3", "--no-plot"]) == 0
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, int]]:
    from PIL import Image

    from cnndsl.shape import Shape
    from cnndsl.training.data import load_dataset

    ds = load_dataset("digits", Shape(1, (8, 8)))
    folder = tmp_path_factory.mktemp("images")
    out = []
    for i in range(5):
        path = folder / f"test{i}.png"
        Image.fromarray(ds.x_test[i, :, :, 0].astype(np.uint8)).save(path)
        out.append((str(path), int(ds.y_test[i])))
    return out


def test_train_prints_the_recipe_and_epochs(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", DIGITS, "--out", str(run_dir), "--resume", "--epochs", "4", "--no-plot"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("Digits · ")
    assert "crossentropy on logits" in out and "not applied twice" in out
    assert "resuming after epoch 3 (step 120) · changed: epochs 3 -> 4" in out
    assert [ln.split()[1] for ln in lines if ln.startswith("epoch")] == ["4/4"]
    assert "test     loss" in out and "img/s" in out
    history = [json.loads(ln) for ln in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_predict_prints_top_k(run_dir: Path, images: list[tuple[str, int]], capsys: pytest.CaptureFixture[str]) -> None:
    paths = [p for p, _ in images]
    assert main(["predict", DIGITS, "--weights", str(run_dir), *paths, "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("  1. ") == 5 and out.count("  3. ") == 5 and "%" in out
    assert main(["predict", DIGITS, "--weights", str(run_dir), *paths, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc) == 5 and len(doc[0]["top"]) == 5
    right = sum(d["top"][0]["class"] == y for d, (_, y) in zip(doc, images, strict=True))
    assert right >= 4
    assert all(abs(sum(t["probability"] for t in d["top"]) - 1) < 0.05 for d in doc)
    assert main(["predict", DIGITS, "--weights", str(run_dir), *paths, "--json", "--fold", "--dtype", "bfloat16"]) == 0
    half = json.loads(capsys.readouterr().out)
    for d, h in zip(doc, half, strict=True):
        assert abs(d["top"][0]["probability"] - h["top"][0]["probability"]) < 0.05


def test_eval_prints_accuracy_and_confusion(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", DIGITS, "--weights", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "accuracy " in out and "confusion matrix" in out and "recall" in out
    assert main(["eval", DIGITS, "--weights", str(run_dir), "--which", "latest", "--split", "val", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["split"] == "val" and doc["accuracy"] > 0.9
    assert np.asarray(doc["confusion"]).sum() == doc["examples"]
    assert (
        main(["eval", DIGITS, "--weights", str(run_dir), "--split", "val", "--json", "--fold", "--dtype", "bfloat16"])
        == 0
    )
    half = json.loads(capsys.readouterr().out)
    assert half["examples"] == doc["examples"] and abs(half["accuracy"] - doc["accuracy"]) <= 0.03


def test_user_mistakes_exit_2(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.cnn"
    bad.write_text("input 1@8x8\nflatten -> dense 10\ntrain {\n  epoch = 3\n}\n")
    assert main(["train", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:4:3: error: unknown train setting `epoch`" in err and "did you mean `epochs`?" in err
    assert main(["train", DIGITS, "--out", str(tmp_path / "o"), "--data", "no/such/dir"]) == 2
    assert "no data set `no/such/dir`" in capsys.readouterr().err
    assert main(["train", DIGITS, "--out", str(tmp_path / "o"), "--optimizer", "adamm"]) == 2
    assert "--optimizer: unknown optimizer `adamm`" in capsys.readouterr().err
    assert main(["train", DIGITS, "--out", str(run_dir)]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert main(["predict", DIGITS, "--weights", str(run_dir), str(tmp_path / "missing.png")]) == 2
    assert "no image" in capsys.readouterr().err
    assert main(["eval", DIGITS, "--weights", str(tmp_path / "nothing")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_max_time_stops_cleanly_and_resume_finishes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", DIGITS, "--out", str(out), "--epochs", "1", "--max-time", "0", "--no-plot"]) == 0
    text = capsys.readouterr().out
    assert "stopped  (max time) after step 1" in text and "--resume" in text
    assert main(["train", DIGITS, "--out", str(out), "--resume", "--no-plot"]) == 0
    assert "resuming after epoch 0, batch 1 (step 1)" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["stopped"] == "done"


def test_compile_still_does_not_import_jax() -> None:
    code = (
        "import sys; from cnndsl.cli import main; "
        f"rc = main(['compile', {str(ROOT / 'examples' / 'lenet5.cnn')!r}]); "
        "assert rc == 0 and 'jax' not in sys.modules, sorted(m for m in sys.modules if 'jax' in m)[:5]"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_mnist_benchmark_skips_cleanly_without_data(tmp_path: Path) -> None:
    script = ROOT / "benchmarks" / "train_mnist.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--only", "mnist", "--data-root", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("skipped: no MNIST")
