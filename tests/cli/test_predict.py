"""`cnndsl predict` as a user meets it (issue 13, item 9): any image size with `--resize`,
folders and globs, bad images reported and skipped (exit 2 at the end, each named), strict
`--json`, and a run folder alone (the checkpoint keeps the spec); and item 10: `train` and
`eval` say which weights they used, so best-vs-final is never silent."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

import cnndsl
from cnndsl.cli import main
from cnndsl.training import train
from cnndsl.training.evaluation import ImageError, predict

# lr 0: epoch 2 ties epoch 1, so the best checkpoint (epoch 1) is not the final weights (epoch 2)
SPEC = """network Tiny
input 1@8x8
flatten -> dense 10 -> softmax
train {
  data = digits
  optimizer = sgd(lr=0)
  batch = 64
  epochs = 2
  seed = 0
}
"""
TRAIN_OUT: list[str] = []


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A two-epoch run of a tiny net (seconds), and its spec file; its output in TRAIN_OUT."""
    from rich.console import Console

    folder = tmp_path_factory.mktemp("predict")
    spec = folder / "tiny.cnn"
    spec.write_text(SPEC)
    console = Console(file=io.StringIO(), width=300, highlight=False, soft_wrap=True)
    train(cnndsl.load(spec), out=folder / "run", console=console, progress=False, plot=False)
    TRAIN_OUT.append(console.file.getvalue())  # type: ignore[attr-defined]
    return folder / "run", spec


@pytest.fixture(scope="module")
def pics(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """imgs/: two 8x8 digits, one 28x28 image, one file that is no image."""
    from PIL import Image

    from cnndsl.shape import Shape
    from cnndsl.training.data import load_dataset

    ds = load_dataset("digits", Shape(1, (8, 8)))
    d = tmp_path_factory.mktemp("imgs")
    for i in range(2):
        Image.fromarray(ds.x_test[i, :, :, 0].astype(np.uint8)).save(d / f"d{i}.png")
    Image.fromarray(np.kron(ds.x_test[0, :, :, 0], np.ones((4, 4))).astype(np.uint8)[2:30, 2:30]).save(d / "big.png")
    (d / "broken.png").write_text("not an image")
    (d / "notes.txt").write_text("not an image either, and not an image suffix")
    return d


def test_a_run_folder_alone_predicts(run: tuple[Path, Path], pics: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder, spec = run
    assert main(["predict", "--weights", str(folder), str(pics / "d0.png"), "--top", "2"]) == 0
    alone = capsys.readouterr().out
    assert main(["predict", str(spec), "--weights", str(folder), str(pics / "d0.png"), "--top", "2"]) == 0
    assert capsys.readouterr().out == alone  # the same network, from the checkpoint's copy of the spec
    assert alone.splitlines()[0] == str(pics / "d0.png") and alone.count("%") == 2


def test_bad_images_are_skipped_named_and_exit_2(
    run: tuple[Path, Path], pics: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = run
    args = ["predict", "--weights", str(folder), str(pics), str(pics / "missing.png"), "--json", "--top", "3"]
    assert main(args) == 2
    out, err = capsys.readouterr()
    doc = json.loads(out)  # strict JSON: json.loads would take NaN, so check the text too
    assert "NaN" not in out and "Infinity" not in out
    by = {Path(d["image"]).name: d for d in doc}
    assert set(by) == {"big.png", "broken.png", "d0.png", "d1.png", "missing.png"}  # notes.txt: not an image suffix
    assert len(by["d0.png"]["top"]) == 3 and "error" not in by["d0.png"]
    assert "1@28x28, but the network's input is 1@8x8" in by["big.png"]["error"]
    assert "cannot read the image" in by["broken.png"]["error"] and by["missing.png"]["error"].startswith("no image")
    assert "`--resize` (bilinear)" in err  # the hint names the option predict has
    last = err.strip().splitlines()[-2:]
    assert last[0].startswith("error: 3 of 5 images skipped: ") and "big.png" in last[0] and "missing.png" in last[0]
    assert last[1] == "  = the predictions above are for the other 2"
    assert "Traceback" not in err


def test_resize_fits_any_size_and_globs_expand(
    run: tuple[Path, Path], pics: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = run
    # `--resize` alone before an image: argparse takes the image as N; predict gives it back
    assert main(["predict", "--weights", str(folder), "--resize", str(pics / "big.png"), "--top", "1"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == str(pics / "big.png")
    assert main(["predict", "--weights", str(folder), str(pics / "d*.png"), "--json"]) == 0
    assert [Path(d["image"]).name for d in json.loads(capsys.readouterr().out)] == ["d0.png", "d1.png"]
    assert main(["predict", "--weights", str(folder), str(pics / "*.jpeg")]) == 2
    assert "no file matches" in capsys.readouterr().err
    assert main(["predict", "--weights", str(folder), "--resize", "--crop", "4", str(pics / "d0.png")]) == 2
    assert "nothing left to crop" in capsys.readouterr().err
    assert main(["predict", "--weights", str(folder)]) == 2
    assert "no images given" in capsys.readouterr().err


def test_resize_matches_the_bilinear_stretch(run: tuple[Path, Path], pics: Path) -> None:
    """`resize=True` is PIL's bilinear resize to the input size, then the same network."""
    from PIL import Image

    folder, _ = run
    small = pics.parent / "stretched.png"
    Image.open(pics / "big.png").convert("L").resize((8, 8), Image.Resampling.BILINEAR).save(small)
    errors: list[ImageError] = []
    a = predict(None, folder, [pics / "big.png", pics / "broken.png"], resize=True, errors=errors)
    b = predict(None, folder, [small])
    assert [e.path for e in errors] == [str(pics / "broken.png")] and len(a) == 1
    assert a[0].top[0][0] == b[0].top[0][0] and a[0].top[0][2] == pytest.approx(b[0].top[0][2], abs=1e-6)
    with pytest.raises(cnndsl.errors.DataError, match="cannot read the image"):
        predict(None, folder, [pics / "broken.png"])  # without `errors`, the first bad image raises


def test_train_and_eval_say_which_weights(run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    folder, spec = run
    text = TRAIN_OUT[0]
    ck = folder / "checkpoints"
    assert "examples; the final weights: step 40, after epoch 2)" in text
    assert (
        f"best     epoch 1: val accuracy 7.64% → {ck / 'best'} (step 20; `cnndsl eval` and `predict` use it by"
        " default, `--which latest` the final weights)" in text
    )
    assert main(["eval", str(spec), "--weights", str(folder)]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("weights "))
    assert line == (
        f"weights {ck / 'step-00000020'} (best by val accuracy 7.64%) · step 20, after epoch 1"
        " · the final weights are step 40, after epoch 2: `--which latest`"
    )
    assert main(["eval", "--which", "latest", str(spec), "--weights", str(folder), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["checkpoint"] == {
        "checkpoint": str(ck / "step-00000040"),
        "which": "latest",
        "step": 40,
        "epoch": 2,
        "final_step": 40,
    }
    assert main(["eval", str(spec), "--weights", str(ck / "step-00000020")]) == 0
    assert (
        f"weights {ck / 'step-00000020'} (the step folder given) · step 20, after epoch 1\n" in capsys.readouterr().out
    )
