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
}


def torchvision_modules(network: str) -> tuple[str, list[str]] | None:
    """`(torchvision builder, module names in execution order)` for a zoo network's name, or None."""
    entry = ZOO.get(network.lower())
    return None if entry is None else (entry[0], entry[1]())
