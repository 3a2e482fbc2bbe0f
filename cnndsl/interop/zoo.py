"""torchvision's module names for the zoo models, in execution order.

`torchvision_modules("ResNet18")` lists the prefix of every module with parameters
(`conv1`, `bn1`, `layer1.0.conv1`, ..., `fc`) in the order the network runs them, which
is the order of the cnndsl spec's layers with parameters (examples/*.cnn). They name the
tensors `cnndsl export --torch` writes, so the file loads into torchvision's module with
`strict=True`, and they order a `.safetensors` file (which records no order) on import.
Written from torchvision's model code (torchvision/models/*.py); tests check them against
the published key lists in tests/fixtures/torchvision_keys/.
"""

from __future__ import annotations

from collections.abc import Callable


def _alexnet() -> list[str]:
    return [f"features.{i}" for i in (0, 3, 6, 8, 10)] + [f"classifier.{i}" for i in (1, 4, 6)]


_VGG = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def _vgg(depth: int, bn: bool) -> Callable[[], list[str]]:
    def names() -> list[str]:
        out, i = [], 0
        for v in _VGG[depth]:
            if v == "M":
                i += 1
                continue
            out.append(f"features.{i}")
            if bn:
                out.append(f"features.{i + 1}")
            i += 3 if bn else 2
        return out + [f"classifier.{i}" for i in (0, 3, 6)]

    return names


def _resnet(blocks: tuple[int, ...], bottleneck: bool) -> Callable[[], list[str]]:
    def names() -> list[str]:
        out = ["conv1", "bn1"]
        convs = 3 if bottleneck else 2
        for s, n in enumerate(blocks, 1):
            for b in range(n):
                p = f"layer{s}.{b}"
                out += [f"{p}.{kind}{j}" for j in range(1, convs + 1) for kind in ("conv", "bn")]
                if b == 0 and (s > 1 or bottleneck):
                    out += [f"{p}.downsample.0", f"{p}.downsample.1"]
        return out + ["fc"]

    return names


def _googlenet() -> list[str]:
    out = [f"conv{i}.{m}" for i in (1, 2, 3) for m in ("conv", "bn")]
    for block in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
        p = f"inception{block}"
        for branch in ("branch1", "branch2.0", "branch2.1", "branch3.0", "branch3.1", "branch4.1"):
            out += [f"{p}.{branch}.conv", f"{p}.{branch}.bn"]
    return out + ["fc"]


def _densenet121() -> list[str]:
    out = ["features.conv0", "features.norm0"]
    for i, n in enumerate((6, 12, 24, 16), 1):
        for j in range(1, n + 1):
            p = f"features.denseblock{i}.denselayer{j}"
            out += [f"{p}.norm1", f"{p}.conv1", f"{p}.norm2", f"{p}.conv2"]
        if i < 4:
            out += [f"features.transition{i}.norm", f"features.transition{i}.conv"]
    return out + ["features.norm5", "classifier"]


def _mobilenet_v2() -> list[str]:
    out = ["features.0.0", "features.0.1"]
    setting = ((1, 1), (6, 2), (6, 3), (6, 4), (6, 3), (6, 3), (6, 1))  # (t, n) per stage
    i = 1
    for t, n in setting:
        for _ in range(n):
            p = f"features.{i}.conv"
            if t == 1:
                out += [f"{p}.0.0", f"{p}.0.1", f"{p}.1", f"{p}.2"]
            else:
                out += [f"{p}.0.0", f"{p}.0.1", f"{p}.1.0", f"{p}.1.1", f"{p}.2", f"{p}.3"]
            i += 1
    return out + [f"features.{i}.0", f"features.{i}.1", "classifier.1"]


def _squeezenet1_1() -> list[str]:
    out = ["features.0"]
    for i in (3, 4, 6, 7, 9, 10, 11, 12):
        out += [f"features.{i}.squeeze", f"features.{i}.expand1x1", f"features.{i}.expand3x3"]
    return out + ["classifier.1"]


def _cna(p: str) -> list[str]:
    """torchvision.ops.Conv2dNormActivation `p`: its conv and its norm."""
    return [f"{p}.0", f"{p}.1"]


def _efficientnet_b0() -> list[str]:
    out = _cna("features.0")
    for i, (t, n) in enumerate(((1, 1), (6, 2), (6, 2), (6, 3), (6, 3), (6, 4), (6, 1)), 1):
        for b in range(n):
            p, j = f"features.{i}.{b}.block", 0
            if t != 1:
                out += _cna(f"{p}.0")
                j = 1
            out += _cna(f"{p}.{j}") + [f"{p}.{j + 1}.fc1", f"{p}.{j + 1}.fc2"] + _cna(f"{p}.{j + 2}")
    return out + _cna("features.8") + ["classifier.1"]


# MobileNetV3's blocks: (expanded width == input width, squeeze-and-excitation)
_MOBILENET_V3 = {
    "large": [(True, False), (False, False), (False, False), (False, True), (False, True), (False, True)]
    + [(False, False)] * 4
    + [(False, True)] * 5,
    "small": [(True, True), (False, False), (False, False)] + [(False, True)] * 8,
}


def _mobilenet_v3(arch: str) -> Callable[[], list[str]]:
    def names() -> list[str]:
        out = _cna("features.0")
        blocks = _MOBILENET_V3[arch]
        for i, (no_expand, se) in enumerate(blocks, 1):
            p, j = f"features.{i}.block", 0
            if not no_expand:
                out += _cna(f"{p}.0")
                j = 1
            out += _cna(f"{p}.{j}")
            if se:
                j += 1
                out += [f"{p}.{j}.fc1", f"{p}.{j}.fc2"]
            out += _cna(f"{p}.{j + 1}")
        return out + _cna(f"features.{len(blocks) + 1}") + ["classifier.0", "classifier.3"]

    return names


def _shufflenet_v2() -> list[str]:
    out = ["conv1.0", "conv1.1"]
    for s, n in ((2, 4), (3, 8), (4, 4)):
        for b in range(n):
            p = f"stage{s}.{b}"
            if b == 0:
                out += [f"{p}.branch1.{i}" for i in (0, 1, 2, 3)]
            out += [f"{p}.branch2.{i}" for i in (0, 1, 3, 4, 5, 6)]
    return out + ["conv5.0", "conv5.1", "fc"]


def _convnext_tiny() -> list[str]:
    out = ["features.0.0", "features.0.1"]
    for s, n in enumerate((3, 3, 9, 3)):
        i = 2 * s + 1
        for b in range(n):  # cnndsl runs the layer scale after the block's body; torch registers it first
            p = f"features.{i}.{b}"
            out += [f"{p}.block.{j}" for j in (0, 2, 3, 5)] + [p]
        if s < 3:
            out += [f"features.{i + 1}.0", f"features.{i + 1}.1"]
    return out + ["classifier.0", "classifier.2"]


def _convnext_linears() -> set[str]:
    """ConvNeXt's 1x1 convs are `nn.Linear` layers on channels-last tensors in torchvision."""
    return {f"features.{2 * s + 1}.{b}.block.{j}" for s, n in enumerate((3, 3, 9, 3)) for b in range(n) for j in (3, 5)}


def _regnet_y_400mf() -> list[str]:
    out = ["stem.0", "stem.1"]
    for s, n in enumerate((1, 3, 6, 6), 1):
        for b in range(n):  # the spec runs the transform f before the projection (torch: proj(x) + f(x))
            p = f"trunk_output.block{s}.block{s}-{b}"
            out += [f"{p}.f.{x}.{i}" for x in "ab" for i in (0, 1)] + [f"{p}.f.se.fc1", f"{p}.f.se.fc2"]
            out += [f"{p}.f.c.0", f"{p}.f.c.1"] + ([f"{p}.proj.0", f"{p}.proj.1"] if b == 0 else [])
    return out + ["fc"]


def _mnasnet1_0() -> list[str]:
    out = [f"layers.{i}" for i in (0, 1, 3, 4, 6, 7)]
    for s, n in enumerate((3, 3, 3, 2, 4, 1), 8):
        out += [f"layers.{s}.{b}.layers.{i}" for b in range(n) for i in (0, 1, 3, 4, 6, 7)]
    return out + ["layers.14", "layers.15", "classifier.1"]


# Inception-v3's modules, in torchvision's order (the auxiliary head, registered after Mixed_6e,
# is not part of the spec: a published file's `AuxLogits.*` are left out with --ignore).
_INCEPTION_V3 = {
    "A": ["branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3",
          "branch_pool"],
    "B": ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"],
    "C": ["branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1", "branch7x7dbl_2",
          "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool"],
    "D": ["branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"],
    "E": ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2",
          "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"],
}  # fmt: skip


def _inception_v3() -> list[str]:
    out = []
    for m in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"):
        out += [f"{m}.conv", f"{m}.bn"]
    mixed = [("5b", "A"), ("5c", "A"), ("5d", "A"), ("6a", "B"), ("6b", "C"), ("6c", "C"), ("6d", "C"),
             ("6e", "C"), ("7a", "D"), ("7b", "E"), ("7c", "E")]  # fmt: skip
    for name, kind in mixed:
        out += [f"Mixed_{name}.{b}.{m}" for b in _INCEPTION_V3[kind] for m in ("conv", "bn")]
    return out + ["fc"]


# Network name (as in `network NAME` of examples/*.cnn, compared case-insensitively) ->
# (torchvision's builder, module names).
ZOO: dict[str, tuple[str, Callable[[], list[str]]]] = {
    "alexnet": ("alexnet", _alexnet),
    "vgg11": ("vgg11", _vgg(11, False)),
    "vgg16": ("vgg16", _vgg(16, False)),
    "vgg16_bn": ("vgg16_bn", _vgg(16, True)),
    "resnet18": ("resnet18", _resnet((2, 2, 2, 2), False)),
    "resnet34": ("resnet34", _resnet((3, 4, 6, 3), False)),
    "resnet50": ("resnet50", _resnet((3, 4, 6, 3), True)),
    "googlenet": ("googlenet", _googlenet),
    "densenet121": ("densenet121", _densenet121),
    "mobilenetv2": ("mobilenet_v2", _mobilenet_v2),
    "squeezenet1_1": ("squeezenet1_1", _squeezenet1_1),
    "efficientnetb0": ("efficientnet_b0", _efficientnet_b0),
    "mobilenetv3large": ("mobilenet_v3_large", _mobilenet_v3("large")),
    "mobilenetv3small": ("mobilenet_v3_small", _mobilenet_v3("small")),
    "shufflenetv2_x1_0": ("shufflenet_v2_x1_0", _shufflenet_v2),
    "convnexttiny": ("convnext_tiny", _convnext_tiny),
    "regnety400mf": ("regnet_y_400mf", _regnet_y_400mf),
    "mnasnet1_0": ("mnasnet1_0", _mnasnet1_0),
    "resnext50_32x4d": ("resnext50_32x4d", _resnet((3, 4, 6, 3), True)),
    "wideresnet50_2": ("wide_resnet50_2", _resnet((3, 4, 6, 3), True)),
    "inceptionv3": ("inception_v3", _inception_v3),
}


def _timm_efficientnet_b0() -> list[str]:
    """timm's `efficientnet_b0` (timm/models/efficientnet.py, _efficientnet_blocks.py): a
    depthwise-separable first block, then inverted residuals; BN modules are BatchNormAct2d."""
    se = ["se.conv_reduce", "se.conv_expand"]
    out = ["conv_stem", "bn1"] + [f"blocks.0.0.{m}" for m in ["conv_dw", "bn1", *se, "conv_pw", "bn2"]]
    for s, n in enumerate((2, 2, 3, 3, 4, 1), 1):
        for b in range(n):
            out += [f"blocks.{s}.{b}.{m}" for m in ["conv_pw", "bn1", "conv_dw", "bn2", *se, "conv_pwl", "bn3"]]
    return out + ["conv_head", "bn2", "classifier"]


# timm's own layouts for zoo networks (timm's resnet50 uses torchvision's names): they order a
# `.safetensors` file on import (timm's top-level `bn1` would otherwise sort after `blocks.*`).
TIMM: dict[str, tuple[str, Callable[[], list[str]]]] = {"efficientnetb0": ("efficientnet_b0", _timm_efficientnet_b0)}

# Modules torchvision holds as `nn.Linear` where the spec has a 1x1 conv (export writes them (out, in)).
LINEARS: dict[str, Callable[[], set[str]]] = {"convnexttiny": _convnext_linears}


def torchvision_modules(network: str) -> tuple[str, list[str]] | None:
    """`(torchvision builder, module names in execution order)` for a zoo network's name, or None."""
    entry = ZOO.get(network.lower())
    return None if entry is None else (entry[0], entry[1]())


def known_layouts(network: str) -> list[tuple[str, list[str]]]:
    """`(whose, module names in the spec's order)` for each published layout of a zoo network:
    torchvision's, then timm's where it has its own (`"timm's `efficientnet_b0`"`)."""
    out = []
    for who, table in (("torchvision", ZOO), ("timm", TIMM)):
        entry = table.get(network.lower())
        if entry is not None:
            out.append((f"{who}'s `{entry[0]}`", entry[1]()))
    return out


def torchvision_linears(network: str) -> set[str]:
    """The module names of a zoo network that torchvision holds as `nn.Linear` where the spec
    has a 1x1 conv (ConvNeXt's), written `(out, in)` on export."""
    f = LINEARS.get(network.lower())
    return set() if f is None else f()
