"""Plain `torch.nn` references for the modern zoo, built as torchvision builds them.

torchvision cannot be installed here, so each model is rewritten from torchvision's sources
(`torchvision/models/{efficientnet,mobilenetv3,shufflenetv2,convnext,regnet,mnasnet}.py`,
`resnet.py`, `inception.py` and `torchvision/ops/misc.py`), keeping its module structure, widths
and epsilons (and, for EfficientNet, MobileNetV3 and ConvNeXt, its initialisation); only the
weight-loading and registry plumbing is left out. `test_zoo_modern.py` checks each
reference's parameter count against torchvision's published one (so a slip here is caught)
and compares its outputs with the `.cnn` files' under copied weights.

`copy_weights` moves a reference's weights into cnndsl's variables by execution order: the
modules that own parameters, in the order their forward finishes, pair one to one with the
cnndsl layers that own variables, in the IR's execution order (`ir.layers`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

# --- torchvision/models/_utils.py and torchvision/ops -------------------------------------


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """torchvision's `_make_divisible`: round to the nearest multiple, never below 90% of v."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvNormActivation(nn.Sequential):
    """torchvision.ops.misc.Conv2dNormActivation: conv (bias only without a norm) -> norm -> act."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        norm_layer: Callable[..., nn.Module] | None = nn.BatchNorm2d,
        activation_layer: Callable[..., nn.Module] | None = nn.ReLU,
        dilation: int = 1,
        bias: bool | None = None,
    ) -> None:
        padding = (kernel_size - 1) // 2 * dilation if padding is None else padding
        bias = norm_layer is None if bias is None else bias
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, kernel_size, stride, padding, dilation=dilation, groups=groups, bias=bias)
        ]
        if norm_layer is not None:
            layers.append(norm_layer(cout))
        if activation_layer is not None:
            layers.append(activation_layer())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """torchvision.ops.misc.SqueezeExcitation: x * scale_act(fc2(act(fc1(avgpool(x)))))."""

    def __init__(
        self,
        channels: int,
        squeeze: int,
        activation: Callable[..., nn.Module] = nn.ReLU,
        scale_activation: Callable[..., nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, x: Tensor) -> Tensor:
        return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x))))) * x


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth, "row" mode: drop whole examples in training, scaled by 1/(1-p)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        noise = torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype).bernoulli_(keep)
        return x * noise.div_(keep)


# --- EfficientNet-B0 (torchvision/models/efficientnet.py) ---------------------------------


class MBConv(nn.Module):
    def __init__(self, expand: int, k: int, stride: int, cin: int, cout: int, sd_prob: float) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        mid = make_divisible(cin * expand, 8)
        layers: list[nn.Module] = []
        if mid != cin:
            layers.append(ConvNormActivation(cin, mid, 1, activation_layer=nn.SiLU))
        layers.append(ConvNormActivation(mid, mid, k, stride, groups=mid, activation_layer=nn.SiLU))
        layers.append(SqueezeExcitation(mid, max(1, cin // 4), activation=partial(nn.SiLU, inplace=True)))
        layers.append(ConvNormActivation(mid, cout, 1, activation_layer=None))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(sd_prob)

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return self.stochastic_depth(y) + x if self.use_res_connect else y


def efficientnet_b0(num_classes: int = 1000, stochastic_depth_prob: float = 0.2) -> nn.Module:
    setting = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
               (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]  # fmt: skip
    layers: list[nn.Module] = [ConvNormActivation(3, 32, 3, 2, activation_layer=nn.SiLU)]
    total, block_id = sum(s[-1] for s in setting), 0
    for expand, k, stride, cin, cout, n in setting:
        stage = []
        for i in range(n):
            sd = stochastic_depth_prob * block_id / total
            stage.append(MBConv(expand, k, stride if i == 0 else 1, cin if i == 0 else cout, cout, sd))
            block_id += 1
        layers.append(nn.Sequential(*stage))
    layers.append(ConvNormActivation(320, 1280, 1, activation_layer=nn.SiLU))
    model = nn.Sequential(
        nn.Sequential(*layers),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Dropout(0.2),
        nn.Linear(1280, num_classes),
    )
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            r = 1.0 / math.sqrt(m.out_features)
            nn.init.uniform_(m.weight, -r, r)
            nn.init.zeros_(m.bias)
    return model


# --- MobileNetV3 (torchvision/models/mobilenetv3.py) --------------------------------------


class InvertedResidualV3(nn.Module):
    def __init__(self, cin: int, k: int, mid: int, cout: int, se: bool, hs: bool, stride: int) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
        act = nn.Hardswish if hs else nn.ReLU
        layers: list[nn.Module] = []
        if mid != cin:
            layers.append(ConvNormActivation(cin, mid, 1, norm_layer=norm, activation_layer=act))
        layers.append(ConvNormActivation(mid, mid, k, stride, groups=mid, norm_layer=norm, activation_layer=act))
        if se:
            layers.append(SqueezeExcitation(mid, make_divisible(mid // 4, 8), scale_activation=nn.Hardsigmoid))
        layers.append(ConvNormActivation(mid, cout, 1, norm_layer=norm, activation_layer=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return y + x if self.use_res_connect else y


MOBILENET_V3 = {
    # (in, kernel, expanded, out, SE, hardswish, stride), then the classifier's hidden width
    "large": (
        [(16, 3, 16, 16, False, False, 1), (16, 3, 64, 24, False, False, 2), (24, 3, 72, 24, False, False, 1),
         (24, 5, 72, 40, True, False, 2), (40, 5, 120, 40, True, False, 1), (40, 5, 120, 40, True, False, 1),
         (40, 3, 240, 80, False, True, 2), (80, 3, 200, 80, False, True, 1), (80, 3, 184, 80, False, True, 1),
         (80, 3, 184, 80, False, True, 1), (80, 3, 480, 112, True, True, 1), (112, 3, 672, 112, True, True, 1),
         (112, 5, 672, 160, True, True, 2), (160, 5, 960, 160, True, True, 1), (160, 5, 960, 160, True, True, 1)],
        1280,
    ),
    "small": (
        [(16, 3, 16, 16, True, False, 2), (16, 3, 72, 24, False, False, 2), (24, 3, 88, 24, False, False, 1),
         (24, 5, 96, 40, True, True, 2), (40, 5, 240, 40, True, True, 1), (40, 5, 240, 40, True, True, 1),
         (40, 5, 120, 48, True, True, 1), (48, 5, 144, 48, True, True, 1), (48, 5, 288, 96, True, True, 2),
         (96, 5, 576, 96, True, True, 1), (96, 5, 576, 96, True, True, 1)],
        1024,
    ),
}  # fmt: skip


def mobilenet_v3(arch: str, num_classes: int = 1000) -> nn.Module:
    setting, last = MOBILENET_V3[arch]
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
    layers: list[nn.Module] = [ConvNormActivation(3, 16, 3, 2, norm_layer=norm, activation_layer=nn.Hardswish)]
    layers += [InvertedResidualV3(*s) for s in setting]
    cout = setting[-1][3]
    layers.append(ConvNormActivation(cout, 6 * cout, 1, norm_layer=norm, activation_layer=nn.Hardswish))
    model = nn.Sequential(
        nn.Sequential(*layers),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(1),
        nn.Linear(6 * cout, last),
        nn.Hardswish(),
        nn.Dropout(0.2),
        nn.Linear(last, num_classes),
    )
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model


# --- ShuffleNetV2 (torchvision/models/shufflenetv2.py) ------------------------------------


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    n, c, h, w = x.size()
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, bias=False, groups=cin),
                nn.BatchNorm2d(cin),
                nn.Conv2d(cin, half, 1, bias=False),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            nn.Conv2d(cin if stride > 1 else half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, stride, 1, bias=False, groups=half),
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, repeats=(4, 8, 4), widths=(24, 116, 232, 464, 1024), num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin, stages = widths[0], []
        for n, cout in zip(repeats, widths[1:4]):
            stages.append(nn.Sequential(ShuffleUnit(cin, cout, 2), *[ShuffleUnit(cout, cout, 1) for _ in range(n - 1)]))
            cin = cout
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = nn.Sequential(nn.Conv2d(cin, widths[-1], 1, bias=False), nn.BatchNorm2d(widths[-1]), nn.ReLU())
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv5(self.stage4(self.stage3(self.stage2(self.maxpool(self.conv1(x))))))
        return self.fc(x.mean([2, 3]))


def shufflenet_v2_x1_0(num_classes: int = 1000) -> nn.Module:
    return ShuffleNetV2(num_classes=num_classes)


# --- ConvNeXt-T (torchvision/models/convnext.py) ------------------------------------------


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return torch.permute(x, self.dims)


class CNBlock(nn.Module):
    def __init__(self, dim: int, layer_scale: float, sd_prob: float) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * layer_scale)
        self.stochastic_depth = StochasticDepth(sd_prob)

    def forward(self, x: Tensor) -> Tensor:
        return self.stochastic_depth(self.layer_scale * self.block(x)) + x


def convnext_tiny(num_classes: int = 1000, stochastic_depth_prob: float = 0.1, layer_scale: float = 1e-6) -> nn.Module:
    setting = [(96, 192, 3), (192, 384, 3), (384, 768, 9), (768, None, 3)]
    norm = partial(LayerNorm2d, eps=1e-6)
    layers: list[nn.Module] = [ConvNormActivation(3, 96, 4, 4, 0, norm_layer=norm, activation_layer=None, bias=True)]
    total, block_id = sum(s[2] for s in setting), 0
    for cin, cout, n in setting:
        stage = []
        for _ in range(n):
            stage.append(CNBlock(cin, layer_scale, stochastic_depth_prob * block_id / (total - 1.0)))
            block_id += 1
        layers.append(nn.Sequential(*stage))
        if cout is not None:
            layers.append(nn.Sequential(norm(cin), nn.Conv2d(cin, cout, kernel_size=2, stride=2)))
    model = nn.Sequential(
        nn.Sequential(*layers), nn.AdaptiveAvgPool2d(1), norm(768), nn.Flatten(1), nn.Linear(768, num_classes)
    )
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


# --- RegNetY-400MF (torchvision/models/regnet.py) and MNASNet 1.0 (mnasnet.py) -------------


class ResBottleneckBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, group_width: int = 8, se_ratio: float = 0.25) -> None:
        super().__init__()
        self.proj = None
        if cin != cout or stride != 1:
            self.proj = ConvNormActivation(cin, cout, 1, stride, activation_layer=None)
        self.f = nn.Sequential(
            ConvNormActivation(cin, cout, 1),
            ConvNormActivation(cout, cout, 3, stride, groups=cout // group_width),
            SqueezeExcitation(cout, round(se_ratio * cin)),
            ConvNormActivation(cout, cout, 1, activation_layer=None),
        )
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        # torchvision computes `self.proj(x) + self.f(x)`; the sum is the same, and running f
        # first gives the execution order of the `.cnn` file (body, then `project`)
        f = self.f(x)
        return self.activation((self.proj(x) if self.proj is not None else x) + f)


def regnet_y_400mf(num_classes: int = 1000) -> nn.Module:
    """depth 16, w_0 48, w_a 27.89, w_m 2.09, group width 8, SE 0.25: stages 1, 3, 6, 6 of 48, 104, 208, 440."""
    layers: list[nn.Module] = [ConvNormActivation(3, 32, 3, 2)]
    cin = 32
    for n, w in zip((1, 3, 6, 6), (48, 104, 208, 440)):
        layers.append(
            nn.Sequential(*[ResBottleneckBlock(cin if i == 0 else w, w, 2 if i == 0 else 1) for i in range(n)])
        )
        cin = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(cin, num_classes))


class MnasInvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, t: int) -> None:
        super().__init__()
        mid, bn = cin * t, partial(nn.BatchNorm2d, momentum=1 - 0.9997)
        self.apply_residual = cin == cout and stride == 1
        self.layers = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), bn(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, k, padding=k // 2, stride=stride, groups=mid, bias=False), bn(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), bn(cout),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x) + x if self.apply_residual else self.layers(x)


def mnasnet1_0(num_classes: int = 1000) -> nn.Module:
    bn = partial(nn.BatchNorm2d, momentum=1 - 0.9997)
    layers: list[nn.Module] = [
        nn.Conv2d(3, 32, 3, padding=1, stride=2, bias=False), bn(32), nn.ReLU(inplace=True),
        nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), bn(32), nn.ReLU(inplace=True),
        nn.Conv2d(32, 16, 1, bias=False), bn(16),
    ]  # fmt: skip
    cin = 16
    for cout, k, s, t, n in [(24, 3, 2, 3, 3), (40, 5, 2, 3, 3), (80, 5, 2, 6, 3), (96, 3, 1, 6, 2),
                             (192, 5, 2, 6, 4), (320, 3, 1, 6, 1)]:  # fmt: skip
        layers += [MnasInvertedResidual(cin if i == 0 else cout, cout, k, s if i == 0 else 1, t) for i in range(n)]
        cin = cout
    layers += [nn.Conv2d(320, 1280, 1, bias=False), bn(1280), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Dropout(0.2), nn.Linear(1280, num_classes))


# --- ResNeXt-50 32x4d, Wide ResNet-50-2 (resnet.py) and Inception-v3 (inception.py) -------


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride on the 3x3, width = planes * base_width / 64 * groups."""

    def __init__(self, cin: int, planes: int, stride: int, groups: int, base_width: int) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn3(self.conv3(self.relu(self.bn2(self.conv2(y)))))
        return self.relu(y + (self.downsample(x) if self.downsample is not None else x))


def resnet50_family(groups: int = 1, width_per_group: int = 64, num_classes: int = 1000) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
    layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    cin = 64
    for planes, n, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(n):
            layers.append(Bottleneck(cin, planes, stride if i == 0 else 1, groups, width_per_group))
            cin = planes * 4
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(2048, num_classes))


class BasicConv2d(nn.Sequential):
    def __init__(self, cin: int, cout: int, **kwargs: Any) -> None:
        super().__init__(nn.Conv2d(cin, cout, bias=False, **kwargs), nn.BatchNorm2d(cout, eps=0.001), nn.ReLU())


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5 = nn.Sequential(
            BasicConv2d(cin, 48, kernel_size=1), BasicConv2d(48, 64, kernel_size=5, padding=2)
        )
        self.branch3x3dbl = nn.Sequential(
            BasicConv2d(cin, 64, kernel_size=1),
            BasicConv2d(64, 96, kernel_size=3, padding=1),
            BasicConv2d(96, 96, kernel_size=3, padding=1),
        )
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        outs = [self.branch1x1(x), self.branch5x5(x), self.branch3x3dbl(x)]  # torchvision's order
        return torch.cat([*outs, self.branch_pool(nn.functional.avg_pool2d(x, kernel_size=3, stride=1, padding=1))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl = nn.Sequential(
            BasicConv2d(cin, 64, kernel_size=1),
            BasicConv2d(64, 96, kernel_size=3, padding=1),
            BasicConv2d(96, 96, kernel_size=3, stride=2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl(x), nn.functional.max_pool2d(x, 3, 2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7 = nn.Sequential(
            BasicConv2d(cin, c7, kernel_size=1),
            BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3)),
            BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0)),
        )
        self.branch7x7dbl = nn.Sequential(
            BasicConv2d(cin, c7, kernel_size=1),
            BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0)),
            BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3)),
            BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0)),
            BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3)),
        )
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        outs = [self.branch1x1(x), self.branch7x7(x), self.branch7x7dbl(x)]
        return torch.cat([*outs, self.branch_pool(nn.functional.avg_pool2d(x, kernel_size=3, stride=1, padding=1))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = nn.Sequential(
            BasicConv2d(cin, 192, kernel_size=1), BasicConv2d(192, 320, kernel_size=3, stride=2)
        )
        self.branch7x7x3 = nn.Sequential(
            BasicConv2d(cin, 192, kernel_size=1),
            BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3)),
            BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0)),
            BasicConv2d(192, 192, kernel_size=3, stride=2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch3x3(x), self.branch7x7x3(x), nn.functional.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = self.branch_pool(nn.functional.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b3, d, pool], 1)


def inception_v3(num_classes: int = 1000) -> nn.Module:
    """`inception_v3(aux_logits=False, transform_input=False, init_weights=False)` at 299x299."""
    return nn.Sequential(
        BasicConv2d(3, 32, kernel_size=3, stride=2),
        BasicConv2d(32, 32, kernel_size=3),
        BasicConv2d(32, 64, kernel_size=3, padding=1),
        nn.MaxPool2d(kernel_size=3, stride=2),
        BasicConv2d(64, 80, kernel_size=1),
        BasicConv2d(80, 192, kernel_size=3),
        nn.MaxPool2d(kernel_size=3, stride=2),
        InceptionA(192, 32), InceptionA(256, 64), InceptionA(288, 64), InceptionB(288),
        InceptionC(768, 128), InceptionC(768, 160), InceptionC(768, 160), InceptionC(768, 192),
        InceptionD(768), InceptionE(1280), InceptionE(2048),
        nn.AdaptiveAvgPool2d(1), nn.Dropout(0.5), nn.Flatten(1), nn.Linear(2048, num_classes),
    )  # fmt: skip


REFERENCES: dict[str, Callable[[], nn.Module]] = {
    "efficientnet_b0": efficientnet_b0,
    "mobilenet_v3_large": partial(mobilenet_v3, "large"),
    "mobilenet_v3_small": partial(mobilenet_v3, "small"),
    "shufflenet_v2_x1_0": shufflenet_v2_x1_0,
    "convnext_tiny": convnext_tiny,
    "regnet_y_400mf": regnet_y_400mf,
    "mnasnet1_0": mnasnet1_0,
    "resnext50_32x4d": partial(resnet50_family, groups=32, width_per_group=4),
    "wide_resnet50_2": partial(resnet50_family, width_per_group=128),
    "inception_v3": inception_v3,
}


# --- weights -------------------------------------------------------------------------------


def randomise(model: nn.Module, seed: int = 0) -> None:
    """Random values wherever torchvision's initialisation leaves constants, so that eval mode
    is not the identity and a swapped scale and bias cannot pass: BatchNorm running mean
    ~ N(0, 0.1) and variance ~ U(0.5, 2); norm scales ~ U(0.5, 1.5) and biases ~ N(0, 0.1);
    conv and dense biases ~ N(0, 0.05); ConvNeXt's layer scale (1e-6, which would hide the
    blocks' contribution) ~ U(0.1, 0.5)."""
    g = torch.Generator().manual_seed(seed)

    def fill(p: Tensor, lo: float, hi: float | None = None) -> None:
        p.copy_(
            torch.rand(p.shape, generator=g) * (hi - lo) + lo
            if hi is not None
            else torch.randn(p.shape, generator=g) * lo
        )

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                fill(m.running_mean, 0.1)
                fill(m.running_var, 0.5, 2.0)
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                fill(m.weight, 0.5, 1.5)
                fill(m.bias, 0.1)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                fill(m.bias, 0.05)
            elif isinstance(m, CNBlock):
                fill(m.layer_scale, 0.1, 0.5)


def owners_in_execution_order(model: nn.Module, x: Tensor) -> list[nn.Module]:
    """Modules that own parameters directly, in the order their forward finishes (a module
    run twice appears twice; ConvNeXt's CNBlock owns `layer_scale` and finishes after its body)."""
    order: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: order.append(m))
        for m in model.modules()
        if any(True for _ in m.parameters(recurse=False))
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return order


def _convert(m: nn.Module, want: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """One torch module's tensors as cnndsl variables of the shapes `want` (name -> shape)."""

    def t(v: Tensor) -> np.ndarray:
        return v.detach().cpu().numpy().astype(np.float32)

    if isinstance(m, nn.Conv2d):  # (O, I/g, KH, KW) -> (KH, KW, I/g, O)
        out = {"kernel": t(m.weight).transpose(2, 3, 1, 0)}
    elif isinstance(m, nn.Linear):  # (O, I) -> (I, O), or (1, 1, I, O) where cnndsl has a 1x1 conv
        out = {"kernel": t(m.weight).T.reshape(want["kernel"])}
    elif isinstance(m, nn.BatchNorm2d):
        out = {"scale": t(m.weight), "mean": t(m.running_mean), "var": t(m.running_var)}
    elif isinstance(m, nn.LayerNorm):
        out = {"scale": t(m.weight)}
    else:  # a module owning a bare parameter (ConvNeXt's layer scale)
        (p,) = m.parameters(recurse=False)
        ((name, shape),) = want.items()
        return {name: t(p).reshape(shape)}
    if getattr(m, "bias", None) is not None:
        out["bias"] = t(m.bias)
    return out


def copy_weights(model: nn.Module, net: Any, variables: dict[str, Any], x: Tensor) -> dict[str, Any]:
    """cnndsl variables (same tree as `variables`) holding `model`'s weights, paired by execution order."""
    from cnndsl import ir

    def at(tree: dict, path: tuple[str, ...]) -> dict:
        for part in path:
            tree = tree[part]
        return tree

    owners = owners_in_execution_order(model, x)
    layers = []
    for n in ir.layers(net.ir.body):
        want = {}
        for coll in ("params", "batch_stats"):
            try:
                want.update({k: (coll, tuple(v.shape)) for k, v in at(variables.get(coll, {}), n.path).items()})
            except KeyError:
                pass
        if want:
            layers.append((n, want))
    assert len(owners) == len(layers), f"{len(owners)} torch modules own weights, {len(layers)} cnndsl layers"
    out: dict[str, Any] = {c: _copy_tree(v) for c, v in variables.items()}
    for m, (n, want) in zip(owners, layers):
        got = _convert(m, {k: s for k, (_, s) in want.items()})
        assert set(got) == set(want), (
            f"{n.name} ({n.op}): torch {type(m).__name__} gives {sorted(got)}, wants {sorted(want)}"
        )
        for k, (coll, shape) in want.items():
            assert got[k].shape == shape, f"{n.name}.{k}: torch {type(m).__name__} {got[k].shape}, cnndsl {shape}"
            at(out[coll], n.path)[k] = got[k]
    return out


def _copy_tree(tree: Any) -> Any:
    return {k: _copy_tree(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
