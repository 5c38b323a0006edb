"""One parametrised ResNet; each named variant is a three-line registered function."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from sightd.errors import SightdError


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = _shortcut(in_channels, channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4): the ResNet-50 block."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + self.shortcut(x))


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
    )


class ResNet(nn.Module):
    """7x7 stride-2 stem, 3x3 max pool, residual stages, global average pool, linear head."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        channels: list[int],
        num_classes: int = 10,
    ):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages, in_channels = [], 64
        for index, (depth, width) in enumerate(zip(layers, channels, strict=True)):
            stride = 1 if index == 0 else 2
            blocks = []
            for _ in range(depth):
                blocks.append(block(in_channels, width, stride))
                in_channels, stride = width * block.expansion, 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = in_channels
        self.fc = nn.Linear(in_channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(features), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = nn.Linear(self.num_features, num_classes)


_REGISTRY: dict[str, Callable[[int], ResNet]] = {}


def register(fn: Callable[[int], ResNet]) -> Callable[[int], ResNet]:
    _REGISTRY[fn.__name__] = fn
    return fn


@register
def seed(num_classes: int = 10) -> ResNet:
    """The original project's network: two stages of two basic blocks (64 -> 128)."""
    return ResNet(BasicBlock, [2, 2], [64, 128], num_classes)


@register
def resnet18(num_classes: int = 10) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], [64, 128, 256, 512], num_classes)


@register
def resnet34(num_classes: int = 10) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], [64, 128, 256, 512], num_classes)


@register
def resnet50(num_classes: int = 10) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], [64, 128, 256, 512], num_classes)


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """For inference: fold each batch norm into the convolution before it, same outputs.

    The convolution's weights and bias are rescaled and the batch norm becomes Identity, which
    saves a pass over every activation. Only the pairs this module's forwards apply back to
    back: convN -> bnN in a block, and a Conv2d followed by a BatchNorm2d in a Sequential.
    Works in place on an eval-mode model (a trained one: batch statistics are frozen).
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                    module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                    module[i + 1] = nn.Identity()
            continue
        n = 1
        while isinstance(getattr(module, f"conv{n}", None), nn.Conv2d) and isinstance(
            getattr(module, f"bn{n}", None), nn.BatchNorm2d
        ):
            conv, bn = getattr(module, f"conv{n}"), getattr(module, f"bn{n}")
            setattr(module, f"conv{n}", fuse_conv_bn_eval(conv, bn))
            setattr(module, f"bn{n}", nn.Identity())
            n += 1
    return model


def model_names() -> list[str]:
    return list(_REGISTRY)


def create_model(name: str, num_classes: int = 10) -> ResNet:
    if name not in _REGISTRY:
        raise SightdError(f"unknown model arch {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name](num_classes)
