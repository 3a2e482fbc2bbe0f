"""Foreign names (PyTorch, Keras, timm spellings) get a hint naming the cnndsl op, and names
of real ops are accepted rather than corrected to an unrelated one."""

from __future__ import annotations

import pytest

import cnndsl
from cnndsl.ops import REGISTRY
from cnndsl.ops.base import FOREIGN_NAMES

FOREIGN = {
    "hardswish": ["hswish", "h_swish", "HardSwish", "hard_swish", "Hardswish"],
    "hardsigmoid": ["hsigmoid", "h_sigmoid", "Hardsigmoid", "hard_sigmoid"],
    "droppath": ["stochasticdepth", "StochasticDepth", "stochastic_depth", "drop_path", "DropPath", "drop_connect"],
    "shuffle": ["channel_shuffle", "ChannelShuffle", "channelshuffle"],
    "layerscale": ["layer_scale", "LayerScale"],
    "groupnorm": ["GroupNorm", "group_norm", "GroupNormalization"],
    "instancenorm": ["InstanceNorm2d", "instance_norm", "InstanceNorm1d"],
    "lrn": ["LocalResponseNorm", "local_response_norm", "LRN"],
    "layernorm": ["LayerNorm2d", "LayerNorm"],
    "slice": ["split", "chunk", "narrow"],
    "mish": ["Mish"],
    "softplus": ["Softplus"],
    "gelu": ["GELU"],
    "silu": ["SiLU", "Swish", "swish"],
    "mul": ["SqueezeExcitation", "se", "multiply"],
}


def hints(name: str) -> list[str]:
    with pytest.raises(cnndsl.CnnError) as e:
        cnndsl.loads(f"input 4@8x8\n{name}")
    assert e.value.message == f"unknown layer `{name}`"
    return e.value.hints


@pytest.mark.parametrize("op, names", FOREIGN.items())
def test_foreign_names_point_to_the_op(op, names):
    for name in names:
        (hint,) = hints(name)
        assert f"`{op}" in hint, (name, hint)


@pytest.mark.parametrize("name", sorted({op.name for op in REGISTRY.values()}))
def test_every_op_name_is_accepted_and_its_other_spellings_hinted(name):
    assert cnndsl.ops.lookup(name, None).name == name  # `hardsigmoid`, `layerscale`, `lrn`: real ops
    camel = name.capitalize() + "2d"
    if camel.lower() not in REGISTRY:
        (hint,) = hints(camel)
        assert f"`{name}`" in hint, (camel, hint)


def test_foreign_names_name_real_ops():
    words = [v for v in FOREIGN_NAMES.values() if " " not in v]
    assert [w for w in words if w not in REGISTRY] == []


@pytest.mark.parametrize("name", ["hardtanh", "hardsigmod"])
def test_no_misleading_suggestion(name):
    assert not any("`tanh`?" in h or "`sigmoid`?" in h for h in hints(name))
