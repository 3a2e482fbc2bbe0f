"""The reference modules have exactly torchvision's published state-dict keys (and shapes),
and cnndsl's torchvision names (cnndsl/interop/zoo.py) cover the same modules in the same
order as the zoo specs' layers, so a real torchvision file maps the same way. (timm's
resnet50 uses torchvision's names, see tests/fixtures/torchvision_keys/resnet50.json; its
efficientnet_b0 has its own layout, tested with the modern zoo in test_modern.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import pytest
import torch

import cnndsl
from cnndsl.backends.jax.model import init_variables
from cnndsl.interop import torchvision_modules
from cnndsl.interop.layout import slots

from .helpers import ROOT
from .torch_reference import MODELS

FIXTURES = ROOT / "tests" / "fixtures" / "torchvision_keys"
ZOO = [(name, tv) for name, (_, tv, _) in MODELS.items() if tv is not None]


def published(tv: str) -> dict[str, list[int]]:
    return json.loads(Path(FIXTURES / f"{tv}.json").read_text())["keys"]


@pytest.mark.parametrize(("name", "tv"), ZOO)
def test_reference_keys_are_torchvisions(name, tv):
    with torch.device("meta"):  # shapes and names only: no memory, no initialisation
        m = MODELS[name][0]()
    got = {k: list(v.shape) for k, v in m.state_dict().items()}
    assert list(got) == list(published(tv))  # the same keys in the same order
    assert got == published(tv)


FAST = ("resnet18", "squeezenet1_1")


@pytest.mark.parametrize(
    ("name", "tv"), [pytest.param(n, t, marks=[] if n in FAST else [pytest.mark.slow]) for n, t in ZOO]
)
def test_zoo_names_follow_the_spec(name, tv):
    """torchvision's modules, in order, pair with the spec's layers with parameters, and
    every tensor's shape agrees once converted to torch's layout."""
    net = cnndsl.load(ROOT / "examples" / f"{name}.cnn")
    wanted = slots(net.ir, jax.eval_shape(lambda k: init_variables(net.ir, k), jax.random.key(0)))
    builder, modules = torchvision_modules(net.name)
    assert builder == tv
    keys = published(tv)
    prefixes = list(dict.fromkeys(k.rpartition(".")[0] for k in keys if not k.startswith(("aux1.", "aux2."))))
    assert modules == prefixes
    for s, prefix in zip(wanted, modules, strict=True):
        for tname, (_, _, _, torch_shape) in s.arrays.items():
            assert keys[f"{prefix}.{tname}"] == list(torch_shape), (s.layer, prefix, tname)
