"""Imported torchvision-layout weights give torch's outputs (1e-4 relative), from .pth and
.safetensors alike, and export back to a state dict that torch loads with strict=True."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cnndsl
from cnndsl.interop import export_state_dict, import_state_dict

from .helpers import ROOT, parity, reference
from .torch_reference import MODELS, GoogLeNet

TOL = 1e-4
FAST = ("lenet5", "resnet18", "squeezenet1_1")
SLOW = tuple(n for n in MODELS if n not in FAST)


def check(name: str, tmp_path, both: bool) -> None:
    results = parity(name, tmp_path, both=both)
    for r in results:
        assert r.rel < TOL, f"{name} from {r.fmt}: max abs {r.max_abs:.3g}, relative {r.rel:.3g}"
    a, b = (r.variables for r in results)  # .pth and .safetensors give the same arrays
    for x, y in zip(*(list(_leaves(v)) for v in (a, b)), strict=True):
        np.testing.assert_array_equal(x, y)


def _leaves(tree):
    for k in sorted(tree):
        v = tree[k]
        yield from _leaves(v) if isinstance(v, dict) else [np.asarray(v)]


@pytest.mark.parametrize("name", FAST)
def test_parity(name, tmp_path):
    check(name, tmp_path, both=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_parity_slow(name, tmp_path):
    check(name, tmp_path, both=True)


def round_trip(name: str, tmp_path) -> None:
    """import -> export -> torch `load_state_dict(strict=True)` into a fresh module: the same
    tensors bit for bit and the same outputs."""
    m, x, ref = reference(name)
    net = cnndsl.load(ROOT / "examples" / f"{name}.cnn")
    variables, report = import_state_dict(net, m, ignore=["aux1.*", "aux2.*"] if name == "googlenet" else [])
    zoo = MODELS[name][1] is not None  # zoo networks get torchvision's names; others the ones recorded on import
    sd, naming = export_state_dict(net, variables, names=None if zoo else report.modules)
    fresh = GoogLeNet(aux_logits=False) if name == "googlenet" else MODELS[name][0]()
    fresh.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    fresh.eval()
    original = m.state_dict()
    for k, v in fresh.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(v, original[k]), k
    with torch.no_grad():
        np.testing.assert_array_equal(fresh(x).numpy(), ref)
    assert naming.startswith("torchvision's" if zoo else "the names recorded")


def test_round_trip_lenet(tmp_path):  # grouped, depthwise and transposed convs: test_import.py
    round_trip("lenet5", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in MODELS if n != "lenet5"])
def test_round_trip_slow(name, tmp_path):
    round_trip(name, tmp_path)


@pytest.mark.slow
def test_densenet_published_spelling(tmp_path):
    """torchvision's published densenet121 file spells `denselayer1.norm.1`; as safetensors
    (no order recorded) it still maps as the current names do."""
    import re

    from safetensors.torch import save_file

    from cnndsl.interop import import_state_dict

    m, _, _ = reference("densenet121")
    old = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v for k, v in m.state_dict().items()}
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    save_file(old, str(tmp_path / "old.safetensors"))
    net = cnndsl.load(ROOT / "examples" / "densenet121.cnn")
    a, _ = import_state_dict(net, m)
    b, report = import_state_dict(net, tmp_path / "old.safetensors")
    assert any("as torchvision's `densenet121` runs them" in n for n in report.notes)
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
