"""`cnndsl viz`: the feature maps after each spatial layer and the first kernels, drawn."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

import cnndsl
from cnndsl.cli import main
from cnndsl.viz import kernel_layers, panels, spatial_layers

SPEC = "network Tiny\ninput 3@16x12\nscale 1/255 -> grayscale -> filter sobel -> conv 4@3x3 p1 -> relu -> maxpool 2\n-> flatten -> dense 3"


def picture(tmp_path: Path, w: int = 16, h: int = 12) -> Path:
    """A bright square on black: Sobel responds at its left/right (x) and top/bottom (y) edges."""
    a = np.zeros((h, w, 3), np.uint8)
    a[3:9, 4:12] = 255
    path = tmp_path / "square.png"
    Image.fromarray(a).save(path)
    return path


def test_panels_are_the_layers_maps_and_kernels(tmp_path: Path) -> None:
    net = cnndsl.loads(SPEC)
    variables = net.init(jax.random.key(0))
    x = np.asarray(Image.open(picture(tmp_path)), np.float32)[None]
    ps = panels(net.ir, variables, x, maps=16)
    assert [p.kind for p in ps] == ["input", "filters", "filters"] + ["maps"] * len(spatial_layers(net.ir))
    assert [p.title for p in ps if p.kind == "maps"] == [
        "scale1 · `scale 1/255` · 3@16x12",
        "grayscale1 · `grayscale` · 1@16x12",
        "filter1 · `filter sobel` · 2@16x12",
        "conv1 · `conv 4@3x3 p1` · 4@16x12",
        "relu1 · `relu` · 4@16x12",
        "maxpool1 · `maxpool 2` · 4@8x6",
    ]
    sobel = next(p for p in ps if p.kind == "maps" and "sobel" in p.title).images  # (2, H, W)
    assert sobel.shape == (2, 12, 16)
    gx, gy = sobel
    assert gx[5, 3] > 0 > gx[5, 12]  # brighter to the right at the left edge, darker at the right
    assert gy[2, 8] > 0 > gy[9, 8]  # brighter downwards at the top edge
    kernels = {n.name: k for n, k in kernel_layers(net.ir, variables)}
    assert list(kernels) == ["filter1", "conv1"]
    np.testing.assert_array_equal(kernels["filter1"][..., 0, 0], [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    assert ps[0].images.shape == (1, 12, 16, 3)


def test_maps_are_capped_and_layers_selected(tmp_path: Path) -> None:
    net = cnndsl.loads(SPEC)
    x = np.asarray(Image.open(picture(tmp_path)), np.float32)[None]
    ps = panels(net.ir, net.init(jax.random.key(0)), x, layers=["conv*", "maxpool1"], maps=2)
    maps = [p for p in ps if p.kind == "maps"]
    assert [p.title.split(" ")[0] for p in maps] == ["conv1", "maxpool1"]
    assert all(len(p.images) == 2 and p.total == 4 for p in maps)


def run(args: list[str], capsys) -> tuple[int, str, str]:
    status = main(args)
    got = capsys.readouterr()
    return status, got.out, got.err


def test_cli_writes_a_png(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "tiny.cnn"
    spec.write_text(SPEC + "\n", encoding="utf-8")
    out = tmp_path / "maps.png"
    status, stdout, err = run(["viz", str(spec), str(picture(tmp_path)), "-o", str(out)], capsys)
    assert (status, stdout) == (0, "")
    assert err == f"wrote {out} (initial weights): the input, 2 kernel panels, 6 layers of feature maps\n"
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] == 1000 and im.size[1] > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.png", "square.png", "tiny.cnn"]


@pytest.mark.parametrize(
    ("spec", "extra", "message"),
    [
        ("input 120\ndense 10", [], "error: `{path}` has no 2-D feature maps to draw (input 120)"),
        (SPEC, ["--layers", "bn*"], "error: no spatial layer matches `bn*`"),
        (SPEC, ["-o", "maps.gif"], "error: cannot write a `.gif` picture"),
    ],
)
def test_cli_mistakes_are_diagnostics(spec: str, extra: list[str], message: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "net.cnn"
    path.write_text(spec + "\n", encoding="utf-8")
    status, _, err = run(["viz", str(path), str(picture(tmp_path)), *extra], capsys)
    assert status == 2
    assert err.splitlines()[0] == message.format(path=path), err
    assert "Traceback" not in err


def test_cli_missing_image(tmp_path: Path, capsys) -> None:
    path = tmp_path / "net.cnn"
    path.write_text(SPEC + "\n", encoding="utf-8")
    status, _, err = run(["viz", str(path), str(tmp_path / "nope.png")], capsys)
    assert status == 2 and f"no image `{tmp_path / 'nope.png'}`" in err


def test_cli_with_weights_draws_the_trained_values(tmp_path: Path, capsys, monkeypatch) -> None:
    from cnndsl import viz
    from cnndsl.training.checkpoint import save_checkpoint

    spec = tmp_path / "tiny.cnn"
    spec.write_text(SPEC + "\n", encoding="utf-8")
    net = cnndsl.load(spec)
    variables = net.init(jax.random.key(1))
    variables["params"]["conv1"]["kernel"] = np.full((3, 3, 2, 4), 0.5, np.float32)
    ckpt = save_checkpoint(tmp_path / "run" / "checkpoints", variables, step=1, meta={"spec": SPEC + "\n"})
    drawn: list = []
    real = viz.panels
    monkeypatch.setattr(viz, "panels", lambda *a, **k: drawn.extend(real(*a, **k)) or drawn)
    out = tmp_path / "maps.png"
    status, _, err = run(
        ["viz", str(spec), str(picture(tmp_path)), "--weights", str(tmp_path / "run"), "-o", str(out)], capsys
    )
    assert status == 0, err
    assert err.startswith(f"wrote {out} (weights {ckpt}")
    conv = next(p for p in drawn if p.kind == "filters" and p.title.startswith("conv1"))
    np.testing.assert_array_equal(conv.images, np.full((4, 3, 3), 0.5))  # the checkpoint's kernel, not a fresh one
