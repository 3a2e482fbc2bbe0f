"""Layout conversions beyond the zoo (grouped, depthwise and transposed convs, PReLU, 1-D
convs, a non-square flatten), order and name rules, explicit maps, and every way an
import can fail: each a `CnnError` that names the fix."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_numpy
from torch import nn

import cnndsl
from cnndsl.cli import main
from cnndsl.errors import ArgumentError, DataError
from cnndsl.interop import export_state_dict, import_state_dict, read_map, read_state_dict

from .helpers import ROOT, run_cnndsl
from .torch_reference import LeNet5, randomize

MIXED = """network Mixed
input 3@12x10
conv 8@3x5 p1 -> bn eps=0.001 -> prelu -> conv 8@3x3 p1 g2 -> dwconv 3x3 p1 -> deconv 4@2x2 s2 -> relu -> maxpool 2
-> flatten -> dense 5
"""


class Mixed(nn.Module):
    """MIXED in torch: the input is 12 wide, 10 high, so (N, 3, 10, 12)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, (5, 3), padding=1)
        self.bn = nn.BatchNorm2d(8, eps=0.001)
        self.act = nn.PReLU()
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.fc = nn.Linear(384, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depthwise(self.grouped(self.act(self.bn(self.conv(x)))))
        x = torch.max_pool2d(torch.relu(self.up(x)), 2)
        return self.fc(torch.flatten(x, 1))


def _randomized(m: nn.Module) -> nn.Module:
    randomize(m, 3)
    with torch.no_grad():
        m.act.weight.fill_(0.3)
        m.up.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(5))
    return m


def test_mixed_layouts_match_torch_and_round_trip():
    m = _randomized(Mixed())
    x = torch.randn(2, 3, 10, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = m(x).numpy()
    net = cnndsl.loads(MIXED)
    variables, report = import_state_dict(net, m)
    assert np.abs(run_cnndsl(net, variables, x) - ref).max() <= 1e-4 * np.abs(ref).max()
    transforms = {r.torch_key: r.transform for r in report.rows}
    assert transforms["grouped.weight"] == "OIHW -> HWIO, 2 groups"
    assert transforms["depthwise.weight"] == "OIHW -> HWIO, depthwise"
    assert transforms["up.weight"] == "IOHW -> HWIO"
    assert transforms["act.weight"] == "reshape 1 -> scalar"
    assert transforms["fc.weight"] == "(out, in) -> (in, out), rows NCHW -> NHWC (4@12x8)"
    assert transforms["bn.running_var"] == "-> batch_stats.var"
    assert not any("eps" in n for n in report.notes)  # the module's eps (0.001) is the spec's
    sd, _ = export_state_dict(net, variables, names=report.modules)
    back = Mixed()
    back.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    for k, v in m.state_dict().items():
        if "num_batches" not in k:
            assert torch.equal(back.state_dict()[k], v), k


def test_conv1d_and_dense_after_flatten():
    net = cnndsl.loads("network OneD\ninput 4@20\nconv 6@3 -> relu -> flatten -> dense 2\n")
    m = nn.Sequential(nn.Conv1d(4, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(108, 2)).eval()
    x = torch.randn(3, 4, 20)
    variables = net.load_state_dict(m)
    import jax

    from cnndsl.backends.jax.model import forward

    y = np.asarray(jax.jit(lambda v, a: forward(net.ir, v, a)[0])(variables, x.numpy().transpose(0, 2, 1)))
    np.testing.assert_allclose(y, m(x).detach().numpy(), rtol=1e-5, atol=1e-5)


def test_eps_differences_are_reported():
    net = cnndsl.loads(MIXED.replace("eps=0.001", ""))
    m = _randomized(Mixed())
    _, report = import_state_dict(net, m)
    assert any("BN epsilon differs in 1 layers" in n and "bn eps=0.001" in n for n in report.notes)
    _, report = import_state_dict(cnndsl.loads(MIXED), m.state_dict())  # a state dict does not record eps
    assert any("use eps=0.001" in n and "does not record eps" in n for n in report.notes)


TWIN = "network Twin\ninput 8\ndense 8 -> relu -> dense 8\n"


def _twin_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    # "second" runs first: a .pth keeps this order; safetensors sorts names (first < second)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in
            (("second.weight", (8, 8)), ("second.bias", (8,)), ("first.weight", (8, 8)), ("first.bias", (8,)))}  # fmt: skip


def test_order_from_pth_names_for_safetensors_and_explicit_map(tmp_path):
    t = _twin_tensors()
    net = cnndsl.loads(TWIN)
    torch.save({k: torch.from_numpy(v) for k, v in t.items()}, tmp_path / "twin.pth")
    save_numpy(t, str(tmp_path / "twin.safetensors"))
    _, rep = import_state_dict(net, tmp_path / "twin.pth")
    assert rep.modules == {"dense1": "second", "dense2": "first"}  # file order
    _, rep = import_state_dict(net, tmp_path / "twin.safetensors")
    assert rep.modules == {"dense1": "first", "dense2": "second"}  # natural order of names, and said so
    assert any("records no order" in n for n in rep.notes)
    (tmp_path / "map.json").write_text(json.dumps({"second": "dense1", "first.weight": "dense2"}))
    v, rep = import_state_dict(net, tmp_path / "twin.safetensors", map=read_map(tmp_path / "map.json"))
    assert rep.modules == {"dense1": "second", "dense2": "first"}
    np.testing.assert_array_equal(v["params"]["dense1"]["kernel"], t["second.weight"].T)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": "dense1", "a": "dense2"}', "appears twice"),
        ('{"a": NaN}', "not JSON"),
        ('["a", "dense1"]', "JSON object of strings"),
        ("{'a': 'dense1'}", "not valid JSON"),
    ],
)
def test_map_is_strict_json(tmp_path, text, message):
    (tmp_path / "m.json").write_text(text)
    with pytest.raises(DataError, match=message):
        read_map(tmp_path / "m.json")


def test_map_errors():
    net = cnndsl.loads(TWIN)
    with pytest.raises(ArgumentError, match="torch module `frist`") as e:
        import_state_dict(net, _twin_tensors(), map={"frist": "dense1"})
    assert "did you mean" in e.value.render()
    with pytest.raises(ArgumentError, match="cnndsl layer `dense9`"):
        import_state_dict(net, _twin_tensors(), map={"first": "dense9"})


def test_unmatched_on_both_sides_is_one_error_with_both_lists():
    sd = {k: v.detach().numpy() for k, v in LeNet5().state_dict().items()}
    sd["fc3.weight"] = np.zeros((7, 84), np.float32)  # a 7-class head
    sd["fc3.bias"] = np.zeros(7, np.float32)
    sd["aux.weight"] = np.zeros((3, 3), np.float32)
    net = cnndsl.load(ROOT / "examples" / "lenet5.cnn")
    with pytest.raises(DataError) as e:
        import_state_dict(net, sd)
    text = e.value.render()
    assert f"layers at line:column of {ROOT / 'examples' / 'lenet5.cnn'}; side by side" in text
    assert "1 of 5 layers found no torch module, 2 torch modules found no layer" in text
    assert "cnndsl layers with no torch module | torch modules with no cnndsl layer" in " ".join(text.split())
    assert "dense3 (dense, 8:56): weight 10x84, bias 10" in text and "fc3: weight 7x84, bias 7" in text
    assert "aux: weight 3x3" in text and "--new LAYER" in text and "--map FILE" in text
    # the fixes: leave the stray tensor out, keep the head new
    v, rep = import_state_dict(net, sd, ignore=["aux.*", "fc3.*"], new=["dense3"])
    assert rep.new == ("dense3",) and ("aux.weight", "--ignore aux.*") in rep.ignored
    assert v["params"]["dense3"]["kernel"].shape == (84, 10)
    assert any(line.split()[:2] == ["(new)", "dense3"] for line in rep.render().splitlines())
    with pytest.raises(ArgumentError, match="matches no tensor"):
        import_state_dict(net, sd, ignore=["aux2.*"])
    with pytest.raises(ArgumentError, match="matches no layer"):
        import_state_dict(net, sd, new=["head"])


def test_pth_needs_torch_and_says_how_to_convert(tmp_path, monkeypatch):
    torch.save(LeNet5().state_dict(), tmp_path / "w.pth")
    monkeypatch.setitem(sys.modules, "torch", None)  # as if PyTorch were not installed
    with pytest.raises(DataError) as e:
        read_state_dict(tmp_path / "w.pth")
    text = e.value.render()
    assert "needs PyTorch" in text and "weights_only=True" in text and "pip install torch" in text
    assert "save_file(torch.load('FILE.pth', weights_only=True), 'FILE.safetensors')" in text


class Payload:
    """Anything but a tensor: weights_only refuses to rebuild it."""


def test_pickles_beyond_tensors_are_refused(tmp_path):
    torch.save({"w": torch.ones(2), "obj": Payload()}, tmp_path / "bad.pth")
    with pytest.raises(DataError, match="cannot be read as tensors") as e:
        read_state_dict(tmp_path / "bad.pth")
    assert "weights_only=True" in e.value.render()


def test_wrappers_prefixes_size_and_damage(tmp_path):
    sd = LeNet5().state_dict()
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ckpt.pth")
    got = read_state_dict(tmp_path / "ckpt.pth")
    assert list(got.tensors) == list(sd) and len(got.notes) == 2
    with pytest.raises(DataError, match="more than the"):
        read_state_dict(tmp_path / "ckpt.pth", max_bytes=1000)
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(DataError, match="not a readable safetensors file"):
        read_state_dict(tmp_path / "junk.safetensors")
    with pytest.raises(DataError, match="no weights file"):
        read_state_dict(tmp_path / "missing.pth")


def test_cli_import_export_predict(tmp_path, capsys):
    from PIL import Image

    spec = str(ROOT / "examples" / "lenet5.cnn")
    m = randomize(LeNet5(), 1)
    torch.save(m.state_dict(), tmp_path / "lenet.pth")
    run = tmp_path / "run"
    assert main(["import-weights", spec, str(tmp_path / "lenet.pth"), "-o", str(run)]) == 0
    out = capsys.readouterr().out
    assert "fc1.weight    params.dense1.kernel  120x400      400x120   (out, in) -> (in, out), rows NCHW" in out
    assert json.loads((run / "import.json").read_text())["modules"]["dense1"] == "fc1"
    assert main(["import-weights", spec, str(tmp_path / "lenet.pth"), "-o", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["import-weights", spec, str(tmp_path / "lenet.pth"), "-o", str(run), "--overwrite",
                 "--normalize", "imagenet"]) == 2  # fmt: skip
    assert "ImageNet's statistics are for RGB input" in capsys.readouterr().err
    (tmp_path / "names.txt").write_text("".join(f"digit {i}\n" for i in range(10)))
    assert main(["import-weights", spec, str(tmp_path / "lenet.pth"), "-o", str(run), "--overwrite", "--quiet",
                 "--class-names", str(tmp_path / "names.txt")]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["export", spec, "--weights", str(run), "--torch", str(tmp_path / "back.safetensors")]) == 0
    back = read_state_dict(tmp_path / "back.safetensors").tensors  # in the order recorded in the metadata
    assert list(back) == list(m.state_dict())  # the names recorded on import, in torch's order
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(back[k], v.numpy())
    assert main(["export", spec, "--weights", str(run), "--torch", str(tmp_path / "x.pt")]) == 2
    assert "written as safetensors" in capsys.readouterr().err
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 61), np.uint8)).save(tmp_path / "odd.png")
    assert (
        main(["predict", spec, "--weights", str(run), str(tmp_path / "odd.png"), "--resize", "36", "--crop", "32"]) == 0
    )
    out = capsys.readouterr().out
    assert out.startswith(str(tmp_path / "odd.png")) and "1. digit " in out
    assert main(["predict", spec, "--weights", str(run), str(tmp_path / "odd.png"), "--crop", "28"]) == 2
    assert "28x28 after --resize/--crop, but the network takes 32x32" in capsys.readouterr().err
    assert main(["import-weights", str(ROOT / "examples" / "resnet18.cnn"), str(tmp_path / "lenet.pth"), "-o",
                 str(tmp_path / "r")]) == 2  # fmt: skip
    assert "do not fit `ResNet18`" in capsys.readouterr().err
