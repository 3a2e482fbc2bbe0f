"""Fine-tuning end to end, as docs/training.md tells it: ImageNet-layout weights (random,
written by torch here) -> `import-weights` -> a spec with a new head (`dense 1000` ->
`dense 3 as head`) and ImageNet preprocessing in the network -> `train --init --freeze`
on an image folder -> `predict --resize --crop` on new images of another size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnndsl.cli import main
from cnndsl.training.checkpoint import restore_checkpoint

from .helpers import ROOT
from .torch_reference import MODELS, BasicBlock, randomize

PRE = "scale 1/255 -> normalize mean=(0.485, 0.456, 0.406) std=(0.229, 0.224, 0.225)\n-> "
TINY = """network TinyResNet
input 3@32x32
block basic(c) {
  residual { conv c@3x3 p1 nobias -> bn -> relu -> conv c@3x3 p1 nobias -> bn } -> relu
}
conv 8@7x7 s2 p3 nobias -> bn -> relu -> maxpool 3 s2 p1
-> basic(8)
-> gap -> dense 1000
"""
COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (50, 60, 210)}


class TinyResNet(nn.Module):
    """TINY in torch, with torchvision's ResNet names (conv1, bn1, layer1.0.*, fc)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(BasicBlock(8, 8))
        self.fc = nn.Linear(8, 1000)


def photos(folder, n: int, size: tuple[int, int], seed: int) -> None:
    """`n` noisy images of each colour, one sub-folder per class."""
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        (folder / name).mkdir(parents=True)
        for i in range(n):
            img = np.clip(np.array(rgb) + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / name / f"{i}.png")


def finetune(
    tmp_path, capsys, spec_text: str, module: nn.Module, size: int, freeze: str, epochs: int, lr: float, head: str
) -> dict:
    src = tmp_path / "imagenet.cnn"
    src.write_text(spec_text)
    head = spec_text.replace("-> gap -> dense 1000", f"-> gap -> {head}")
    first = head.index("\nconv ") + 1  # where the chain starts, after the blocks
    new = tmp_path / "colours.cnn"
    new.write_text(head[:first] + PRE + head[first:])
    torch.save(randomize(module).state_dict(), tmp_path / "imagenet.pth")
    assert main(["import-weights", str(src), str(tmp_path / "imagenet.pth"), "-o", str(tmp_path / "imported")]) == 0
    capsys.readouterr()
    photos(tmp_path / "photos", 10, (size, size), 0)
    args = ["train", str(new), "--data", str(tmp_path / "photos"), "--init", str(tmp_path / "imported"),
            "--freeze", freeze, "--normalize", "none", "--epochs", str(epochs), "--batch", "9", "--lr", str(lr),
            "--out", str(tmp_path / "run"), "--no-progress", "--no-plot"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "missing in source" in rows["head"] and "extra in source" in rows["dense1"]  # new, and the old head
    assert "loaded" in rows["conv1"] and "loaded" in rows["bn1"]  # from the file
    imported = restore_checkpoint(tmp_path / "imported" / "checkpoints").tree
    trained = restore_checkpoint(tmp_path / "run" / "checkpoints").tree
    np.testing.assert_array_equal(trained["params"]["conv1"]["kernel"], imported["params"]["conv1"]["kernel"])
    np.testing.assert_array_equal(trained["batch_stats"]["bn1"]["mean"], imported["batch_stats"]["bn1"]["mean"])
    photos(tmp_path / "new", 2, (size + 21, size + 9), 1)  # other sizes: resized and centre-cropped
    images = sorted(str(p) for p in (tmp_path / "new").rglob("*.png"))
    resize = size * 8 // 7
    assert main(["predict", str(new), "--weights", str(tmp_path / "run"), *images, "--resize", str(resize),
                 "--crop", str(size), "--json", "--top", "1", "--which", "latest"]) == 0  # fmt: skip
    preds = json.loads(capsys.readouterr().out)
    right = sum(p["top"][0]["name"] in p["image"].split("/")[-2] for p in preds)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    return {"right": right, "of": len(preds), "summary": summary, "out": out}


def test_finetune_tiny(tmp_path, capsys):
    r = finetune(tmp_path, capsys, TINY, TinyResNet(), 32, "conv1,bn1,basic1", 6, 0.05, "dense 3 as head")
    assert r["right"] >= 5, r["out"]  # of 6 new images; chance is 2


@pytest.mark.slow
def test_finetune_resnet18(tmp_path, capsys):
    spec = (ROOT / "examples" / "resnet18.cnn").read_text()
    # Random "pretrained" weights give features in the hundreds after 18 layers (ImageNet ones
    # do not): normalise them before the new head, as linear probes do (see "Transfer learning").
    r = finetune(
        tmp_path,
        capsys,
        spec,
        MODELS["resnet18"][0](),
        224,
        "conv1,bn1,basic*,stage*",
        8,
        0.003,
        "layernorm -> dense 3 as head",
    )
    keep = ("compile_s", "train_s", "wall_s", "images_per_s", "best", "test")
    print(
        json.dumps({"right": r["right"], "of": r["of"], **{k: r["summary"][k] for k in keep}})
    )  # figures for the docs
    assert r["right"] >= 5, r["out"]
