"""The modern zoo's weights in and out: the norms, layer scale and nn.Linear-as-1x1-conv
layouts; torchvision's key names for EfficientNet, MobileNetV3, ShuffleNetV2, ConvNeXt,
RegNet, MNASNet, ResNeXt and Wide ResNet (tests/fixtures/torchvision_keys/); timm's
`efficientnet_b0` layout; parity (1e-4 relative) from .pth and .safetensors, and the
round trip back into the torch module with strict=True (slow)."""

from __future__ import annotations

import json
import time

import jax
import numpy as np
import pytest
import torch
from torch import nn

import cnndsl
from cnndsl.backends.jax.model import init_variables
from cnndsl.interop import export_state_dict, import_state_dict
from cnndsl.interop.layout import slots
from cnndsl.interop.zoo import known_layouts, torchvision_linears

from .helpers import ROOT, run_cnndsl, save_both
from .modern_reference import MODELS, TIMM, randomize

FIXTURES = ROOT / "tests" / "fixtures" / "torchvision_keys"
TOL = 1e-4
ALL = {**MODELS, **{f"timm_{k}": v for k, v in TIMM.items()}}  # "timm_efficientnet_b0" -> examples/efficientnet_b0


def spec(name: str) -> str:
    return name.removeprefix("timm_")


def published(fixture: str) -> dict[str, list[int]]:
    return json.loads((FIXTURES / f"{fixture}.json").read_text())["keys"]


# --- the norms, layer scale and Linear-as-1x1 layouts, on a small network ---------------------
NORMS = """network Norms
input 4@6x5
conv 8@3x3 p1 -> groupnorm 4 -> instancenorm affine -> layernorm eps=1e-5 -> conv 8@1x1 -> layerscale 0.5
-> gap -> dense 3
"""


class Scale(nn.Module):
    def __init__(self, d: int, name: str, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_parameter(
            name, nn.Parameter(torch.rand(d, generator=torch.Generator().manual_seed(7)).reshape(shape) + 0.5)
        )


class Norms(nn.Module):
    """NORMS in torch, ConvNeXt-style: the 1x1 conv an nn.Linear on channels-last values, the
    layer scale torchvision's `layer_scale` (D, 1, 1), or timm's `gamma` (D,)."""

    def __init__(self, timm: bool = False, ln_eps: float = 1e-5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.gn = nn.GroupNorm(4, 8)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.ln = nn.LayerNorm(8, eps=ln_eps)
        self.pw = nn.Linear(8, 8)
        self.timm = timm
        self.scale = Scale(8, "gamma", (8,)) if timm else Scale(8, "layer_scale", (8, 1, 1))
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inorm(self.gn(self.conv(x))).permute(0, 2, 3, 1)
        x = self.pw(self.ln(x)).permute(0, 3, 1, 2)
        g = self.scale.gamma.reshape(8, 1, 1) if self.timm else self.scale.layer_scale
        return self.fc((g * x).mean((2, 3)))


def _norms(timm: bool = False, ln_eps: float = 1e-5) -> nn.Module:
    m = Norms(timm, ln_eps)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return m.eval()


@pytest.mark.parametrize("timm", [False, True])
def test_norms_layerscale_and_linear_layouts(timm, tmp_path):
    m = _norms(timm)
    x = torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = m(x).numpy()
    net = cnndsl.loads(NORMS)
    files = save_both(m, tmp_path)
    for f in files.values():
        variables, report = import_state_dict(net, f)
        np.testing.assert_allclose(run_cnndsl(net, variables, x), ref, rtol=1e-5, atol=1e-5)
    rows = {r.torch_key: r for r in report.rows}
    assert (
        rows["gn.weight"].path == "params.groupnorm1.scale" and rows["inorm.bias"].path == "params.instancenorm1.bias"
    )
    assert rows["pw.weight"].transform.startswith("(out, in) -> 1x1 HWIO")
    ls = rows["scale.gamma" if timm else "scale.layer_scale"]
    assert (ls.path, ls.torch_shape, ls.shape) == ("params.layerscale1.scale", (8,) if timm else (8, 1, 1), (8,))
    assert report.alt == (("conv2", "layerscale1") if timm else ("conv2",))
    # back out under the names and layouts the import found: loads into the torch module as it is
    sd, naming = export_state_dict(net, variables, names=report.modules, alt=report.alt)
    fresh = Norms(timm)
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    for k, v in m.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    assert naming.startswith("the names recorded")


def test_layernorm_eps_from_the_module_is_reported():
    m = _norms(ln_eps=1e-6)
    _, report = import_state_dict(cnndsl.loads(NORMS), m)
    assert any("layernorm epsilon differs in 1 layers" in n and "layernorm eps=1e-06" in n for n in report.notes)
    _, report = import_state_dict(cnndsl.loads(NORMS.replace("eps=1e-5", "eps=1e-6")), m.state_dict())
    assert any("1 layernorm layers use eps=1e-06" in n and "ConvNeXt use 1e-6" in n for n in report.notes)


# --- key names -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_reference_keys_are_published(name):
    """The references hold exactly the fixture's keys, in order, with its shapes."""
    build, fixture, _ = ALL[name]
    with torch.device("meta"):
        m = build()
    got = {k: list(v.shape) for k, v in m.state_dict().items()}
    assert list(got) == list(published(fixture))
    assert got == published(fixture)


FAST = ("convnext_tiny", "shufflenet_v2_x1_0", "timm_efficientnet_b0")


@pytest.mark.parametrize("name", [pytest.param(n, marks=[] if n in FAST else [pytest.mark.slow]) for n in ALL])
def test_layout_names_follow_the_spec(name):
    """cnndsl's names for each layout (zoo.py) cover the fixture's modules, and every tensor's
    shape agrees with the spec's layer in that position once converted to torch's layout."""
    _, fixture, _ = ALL[name]
    net = cnndsl.load(ROOT / "examples" / f"{spec(name)}.cnn")
    wanted = slots(net.ir, jax.eval_shape(lambda k: init_variables(net.ir, k), jax.random.key(0)))
    layouts = dict(known_layouts(net.name))
    modules = layouts[f"timm's `{spec(name)}`" if name.startswith("timm_") else f"torchvision's `{fixture}`"]
    keys = published(fixture)
    prefixes = {k.rpartition(".")[0] for k in keys}
    assert set(modules) == prefixes and len(modules) == len(prefixes)
    linears = set() if name.startswith("timm_") else torchvision_linears(net.name)
    for s, prefix in zip(wanted, modules, strict=True):
        s = s.alt if prefix in linears else s
        for tname, (_, _, _, torch_shape) in s.arrays.items():
            assert keys[f"{prefix}.{tname}"] == list(torch_shape), (s.layer, prefix, tname)


# --- parity and round trip (slow: 224x224 models) --------------------------------------------
def reference(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor, np.ndarray]:
    build, _, shape = ALL[name]
    torch.manual_seed(seed)
    m = randomize(build(), seed)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        return m, x, m(x).numpy()


def parity(name: str, folder) -> list[dict]:
    """Import from `.pth` and `.safetensors`, run torch's input through cnndsl; the figures."""
    m, x, ref = reference(name)
    files = save_both(m, folder)
    net = cnndsl.load(ROOT / "examples" / f"{spec(name)}.cnn")
    out, arrays = [], []
    for fmt in ("pth", "safetensors"):
        t = time.perf_counter()
        variables, report = import_state_dict(net, files[fmt])
        dt = time.perf_counter() - t
        err = float(np.abs(run_cnndsl(net, variables, x) - ref).max())
        out.append({"model": name, "fmt": fmt, "max_abs": err, "rel": err / float(np.abs(ref).max()),
                    "import_s": dt, "notes": report.notes})  # fmt: skip
        arrays.append(jax.tree.leaves(variables))
    for a, b in zip(*arrays, strict=True):  # .pth and .safetensors give the same arrays
        np.testing.assert_array_equal(a, b)
    print(*(f"{r['model']} {r['fmt']}: max abs {r['max_abs']:.3g}, rel {r['rel']:.3g}, import {r['import_s']:.2f}s"
            for r in out), sep="\n")  # fmt: skip
    return out


PARITY = ["efficientnet_b0", "mobilenet_v3_large", "shufflenet_v2_x1_0", "convnext_tiny", "regnet_y_400mf",
          "mnasnet1_0", "mobilenet_v3_small", "resnext50_32x4d", "wide_resnet50_2"]  # fmt: skip


# A state dict records no epsilon: a spec whose norms use another than PyTorch's default gets a
# note (torchvision's MobileNetV3 uses BN eps 0.001, ConvNeXt layernorm eps 1e-6, as the specs do);
# given the torch module itself, the epsilons are compared and agree, so no note.
EPS_NOTE = {"mobilenet_v3_large": "bn layers use eps=0.001", "mobilenet_v3_small": "bn layers use eps=0.001",
            "convnext_tiny": "layernorm layers use eps=1e-06"}  # fmt: skip


def eps_notes(notes) -> list[str]:
    return [n for n in notes if "eps" in n and "momentum" not in n]


@pytest.mark.slow
@pytest.mark.parametrize("name", PARITY)
def test_parity_torchvision_layout(name, tmp_path):
    for r in parity(name, tmp_path):
        assert r["rel"] < TOL, r
        got = eps_notes(r["notes"])
        assert [EPS_NOTE[name] in n for n in got] == ([True] if name in EPS_NOTE else []), got
    m, _, _ = reference(name)
    _, report = import_state_dict(cnndsl.load(ROOT / "examples" / f"{name}.cnn"), m)
    assert eps_notes(report.notes) == []


@pytest.mark.slow
def test_parity_timm_efficientnet_b0(tmp_path):
    """timm's own key names (`conv_stem`, `blocks.i.j.conv_dw`, ...) into the same spec. timm's
    efficientnet_b0 and torchvision's both use PyTorch's BN eps 1e-5 (the spec's too), so no
    eps note; timm's `tf_efficientnet_b0` (eps 1e-3) is reported when given as a module."""
    results = parity("timm_efficientnet_b0", tmp_path)
    for r in results:
        assert r["rel"] < TOL, r
        assert eps_notes(r["notes"]) == [], r["notes"]
    assert any("timm's `efficientnet_b0` runs them" in n for n in results[1]["notes"])  # the .safetensors order
    m, _, _ = reference("timm_efficientnet_b0")
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.eps = 1e-3  # as timm's tf_efficientnet_b0
    net = cnndsl.load(ROOT / "examples" / "efficientnet_b0.cnn")
    _, report = import_state_dict(net, m)
    assert any("BN epsilon differs in 49 layers" in n and "bn eps=0.001" in n for n in report.notes), report.notes


ROUND_TRIP = ["efficientnet_b0", "mobilenet_v3_large", "shufflenet_v2_x1_0", "convnext_tiny", "regnet_y_400mf",
              "mnasnet1_0"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", ROUND_TRIP)
def test_round_trip(name):
    """import -> export with torchvision's names (zoo.py) -> `load_state_dict(strict=True)` into
    a fresh module: the same tensors bit for bit, the same outputs."""
    m, x, ref = reference(name)
    net = cnndsl.load(ROOT / "examples" / f"{name}.cnn")
    variables, _ = import_state_dict(net, m)
    sd, naming = export_state_dict(net, variables)
    assert naming == f"torchvision's `{ALL[name][1]}`"
    fresh = ALL[name][0]().eval()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    original = m.state_dict()
    for k, v in fresh.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, original[k]), k
    with torch.no_grad():
        np.testing.assert_array_equal(fresh(x).numpy(), ref)


def test_inception_v3_names_follow_the_spec():
    """No reference module under torchvision's Inception-v3 names yet: each name's kind
    (`Mixed_5b.branch1x1.conv`, `.bn`, `fc`) at least matches the spec's layer in its place."""
    net = cnndsl.load(ROOT / "examples" / "inception_v3.cnn")
    wanted = slots(net.ir, jax.eval_shape(lambda k: init_variables(net.ir, k), jax.random.key(0)))
    ((whose, modules),) = known_layouts(net.name)
    assert whose == "torchvision's `inception_v3`"
    kinds = [{"conv": "conv", "bn": "bn"}.get(p.rpartition(".")[2], "dense") for p in modules]
    assert [s.op for s in wanted] == kinds and len(set(modules)) == len(modules) == 189
    assert modules[:2] == ["Conv2d_1a_3x3.conv", "Conv2d_1a_3x3.bn"] and modules[-3:-1] == [
        "Mixed_7c.branch_pool.conv", "Mixed_7c.branch_pool.bn"]  # fmt: skip
