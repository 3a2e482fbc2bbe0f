"""The modern zoo's torch references under torchvision's and timm's state-dict key names.

`tests/zoo_torch_reference.py` (another test's, reused as it is) builds each model with
torchvision's blocks but wraps the top level in an `nn.Sequential`, so its keys start `0.`,
`4.`; here the same modules are re-nested under torchvision's attribute names
(`features`, `classifier`, `trunk_output.block1.block1-0.f.a`, ...), read from
torchvision/models/{efficientnet,mobilenetv3,shufflenetv2,convnext,regnet,mnasnet,resnet}.py.
`timm_efficientnet_b0` is timm's `efficientnet_b0` in plain torch.nn, read from timm's
timm/models/efficientnet.py, _efficientnet_blocks.py and _efficientnet_builder.py: the same
network as torchvision's (BN eps 1e-5 in both; timm's `tf_efficientnet_b0` uses 1e-3 and
TensorFlow's 'same' padding) under timm's names (`conv_stem`, `blocks.i.j.conv_dw`, ...).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn

from tests import zoo_torch_reference as zoo


class TV(nn.Module):
    """A torchvision-shaped top level: `features` (or other named parts) then a head."""

    def __init__(self, run: Callable[[nn.Module, Tensor], Tensor], **parts: nn.Module) -> None:
        super().__init__()
        for k, v in parts.items():
            self.add_module(k, v)
        self._run = run

    def forward(self, x: Tensor) -> Tensor:
        return self._run(self, x)


def efficientnet_b0() -> nn.Module:
    m = zoo.efficientnet_b0()  # Sequential(features, avgpool, flatten, dropout, linear)
    return TV(
        lambda s, x: s.classifier(torch.flatten(s.avgpool(s.features(x)), 1)),
        features=m[0], avgpool=m[1], classifier=nn.Sequential(m[3], m[4]),
    )  # fmt: skip


def mobilenet_v3(arch: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        m = zoo.mobilenet_v3(arch)  # Sequential(features, avgpool, flatten, linear, hardswish, dropout, linear)
        return TV(
            lambda s, x: s.classifier(torch.flatten(s.avgpool(s.features(x)), 1)),
            features=m[0], avgpool=m[1], classifier=nn.Sequential(m[3], m[4], m[5], m[6]),
        )  # fmt: skip

    return build


def convnext_tiny() -> nn.Module:
    m = zoo.convnext_tiny()  # Sequential(features, avgpool, norm, flatten, linear)
    return TV(
        lambda s, x: s.classifier(s.avgpool(s.features(x))),
        features=m[0], avgpool=m[1], classifier=nn.Sequential(m[2], m[3], m[4]),
    )  # fmt: skip


def regnet_y_400mf() -> nn.Module:
    m = zoo.regnet_y_400mf()  # Sequential(stem, stage1..4, avgpool, flatten, fc)
    stages = []
    for i in range(1, 5):
        blocks = []
        for j, blk in enumerate(m[i]):
            blk.f = nn.Sequential(OrderedDict(zip(("a", "b", "se", "c"), blk.f, strict=True)))  # keeps its place
            blocks.append((f"block{i}-{j}", blk))
        stages.append((f"block{i}", nn.Sequential(OrderedDict(blocks))))
    return TV(
        lambda s, x: s.fc(torch.flatten(s.avgpool(s.trunk_output(s.stem(x))), 1)),
        stem=m[0], trunk_output=nn.Sequential(OrderedDict(stages)), avgpool=m[5], fc=m[7],
    )  # fmt: skip


def mnasnet1_0() -> nn.Module:
    m = list(zoo.mnasnet1_0())  # Sequential(8 stem layers, 16 blocks, conv, bn, relu, avgpool, flatten, dropout, fc)
    layers, i = m[:8], 8
    for n in (3, 3, 3, 2, 4, 1):  # torchvision's `_stack`s: a Sequential per stage
        layers.append(nn.Sequential(*m[i : i + n]))
        i += n
    return TV(
        lambda s, x: s.classifier(s.layers(x).mean([2, 3])),
        layers=nn.Sequential(*layers, *m[i : i + 3]), classifier=nn.Sequential(m[i + 5], m[i + 6]),
    )  # fmt: skip


def _resnet_forward(s: nn.Module, x: Tensor) -> Tensor:
    x = s.maxpool(s.relu(s.bn1(s.conv1(x))))
    x = s.layer4(s.layer3(s.layer2(s.layer1(x))))
    return s.fc(torch.flatten(s.avgpool(x), 1))


def resnet50_family(groups: int, width: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        m = list(zoo.resnet50_family(groups=groups, width_per_group=width))  # conv, bn, relu, pool, 16 blocks, ...
        stages, i = {}, 4
        for s, n in enumerate((3, 4, 6, 3), 1):
            stages[f"layer{s}"] = nn.Sequential(*m[i : i + n])
            i += n
        return TV(_resnet_forward, conv1=m[0], bn1=m[1], relu=m[2], maxpool=m[3], **stages, avgpool=m[i], fc=m[i + 2])

    return build


# --- timm's efficientnet_b0 -----------------------------------------------------------------


class BatchNormAct2d(nn.BatchNorm2d):
    """timm.layers.BatchNormAct2d: a BatchNorm2d (same tensors) with its activation as `act`."""

    def __init__(self, c: int, act: bool = True) -> None:
        super().__init__(c)  # timm's efficientnet_b0: nn.BatchNorm2d defaults, eps 1e-5
        self.drop = nn.Identity()
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.drop(super().forward(x)))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, rd: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(c, rd, 1, bias=True)
        self.act1 = nn.SiLU(inplace=True)
        self.conv_expand = nn.Conv2d(rd, c, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True)))))


class DepthwiseSeparableConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int) -> None:
        super().__init__()
        self.has_skip = stride == 1 and cin == cout
        self.conv_dw = nn.Conv2d(cin, cin, k, stride, (k - 1) // 2, groups=cin, bias=False)
        self.bn1 = BatchNormAct2d(cin)
        self.aa = nn.Identity()
        self.se = SqueezeExcite(cin, cin // 4)
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = BatchNormAct2d(cout, act=False)
        self.drop_path = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv_pw(self.se(self.aa(self.bn1(self.conv_dw(x))))))
        return self.drop_path(y) + x if self.has_skip else y


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, t: int = 6) -> None:
        super().__init__()
        mid = cin * t
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = BatchNormAct2d(mid)
        self.conv_dw = nn.Conv2d(mid, mid, k, stride, (k - 1) // 2, groups=mid, bias=False)
        self.bn2 = BatchNormAct2d(mid)
        self.aa = nn.Identity()
        self.se = SqueezeExcite(mid, cin // 4)  # se_ratio 0.25 of the block's input (se_from_exp=False)
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = BatchNormAct2d(cout, act=False)
        self.drop_path = nn.Identity()  # drop_path_rate 0 by default: an Identity

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        y = self.bn3(self.conv_pwl(self.se(self.aa(y))))
        return self.drop_path(y) + x if self.has_skip else y


class TimmEfficientNetB0(nn.Module):
    """timm.models.efficientnet.EfficientNet for `efficientnet_b0` (arch 'ds_r1_k3_s1_e1_c16_se0.25',
    'ir_r2_k3_s2_e6_c24_se0.25', ..., 'ir_r1_k3_s1_e6_c320_se0.25'), eval-mode numerics."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self.bn1 = BatchNormAct2d(32)
        stages: list[nn.Module] = [nn.Sequential(DepthwiseSeparableConv(32, 16, 3, 1))]
        cin = 16
        for n, k, s, c in ((2, 3, 2, 24), (2, 5, 2, 40), (3, 3, 2, 80), (3, 5, 1, 112), (4, 5, 2, 192), (1, 3, 1, 320)):
            stages.append(nn.Sequential(*[InvertedResidual(cin if i == 0 else c, c, k, s if i == 0 else 1)
                                          for i in range(n)]))  # fmt: skip
            cin = c
        self.blocks = nn.Sequential(*stages)
        self.conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self.bn2 = BatchNormAct2d(1280)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))
        return self.classifier(torch.flatten(self.global_pool(x), 1))


def timm_efficientnet_b0() -> nn.Module:
    return TimmEfficientNetB0()


def randomize(m: nn.Module, seed: int = 0) -> nn.Module:
    """The zoo references' randomisation (BN statistics, norm affines, biases, layer scales), eval mode."""
    zoo.randomise(m, seed)
    return m.eval()


# name of examples/NAME.cnn -> (builder, torchvision's (or timm's) model name, input shape)
MODELS: dict[str, tuple[Callable[[], nn.Module], str, tuple[int, int, int]]] = {
    "efficientnet_b0": (efficientnet_b0, "efficientnet_b0", (3, 224, 224)),
    "mobilenet_v3_large": (mobilenet_v3("large"), "mobilenet_v3_large", (3, 224, 224)),
    "mobilenet_v3_small": (mobilenet_v3("small"), "mobilenet_v3_small", (3, 224, 224)),
    "shufflenet_v2_x1_0": (zoo.shufflenet_v2_x1_0, "shufflenet_v2_x1_0", (3, 224, 224)),
    "convnext_tiny": (convnext_tiny, "convnext_tiny", (3, 224, 224)),
    "regnet_y_400mf": (regnet_y_400mf, "regnet_y_400mf", (3, 224, 224)),
    "mnasnet1_0": (mnasnet1_0, "mnasnet1_0", (3, 224, 224)),
    "resnext50_32x4d": (resnet50_family(32, 4), "resnext50_32x4d", (3, 224, 224)),
    "wide_resnet50_2": (resnet50_family(1, 128), "wide_resnet50_2", (3, 224, 224)),
}
TIMM = {"efficientnet_b0": (timm_efficientnet_b0, "timm_efficientnet_b0", (3, 224, 224))}
