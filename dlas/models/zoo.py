"""The study's models: CIFAR variants (3x3 stem, no early downsampling) and ImageNet ones.

The CIFAR variants reuse torchvision's definitions with the stem changed, as is standard for
32x32 inputs, so both variants share one well-tested implementation.
"""

from __future__ import annotations

from torch import nn

from dlas.models.registry import MODELS


def _torchvision(name: str, num_classes: int) -> nn.Module:
    from torchvision import models

    import dlas._torchvision  # noqa: F401

    return models.get_model(name, num_classes=num_classes)


def _imagenet_only(name: str):
    def build(num_classes: int, variant: str) -> nn.Module:
        if variant == "cifar":
            raise ValueError(f"model {name!r} has no CIFAR variant; use model.variant=imagenet")
        return _torchvision(name, num_classes)

    build.cifar_variant = False  # type: ignore[attr-defined]  (read by has_cifar_variant)
    return build


for _name in ("efficientnet_b0", "densenet161", "resnet50"):
    MODELS.register(_name)(_imagenet_only(_name))


@MODELS.register("resnet18")
def resnet18(num_classes: int, variant: str) -> nn.Module:
    model = _torchvision("resnet18", num_classes)
    if variant == "cifar":
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


@MODELS.register("mobilenet_v2")
def mobilenet_v2(num_classes: int, variant: str) -> nn.Module:
    model = _torchvision("mobilenet_v2", num_classes)
    if variant == "cifar":
        # Stem and first 24-channel block at stride 1: total stride 8 leaves 4x4 at the head.
        model.features[0][0].stride = (1, 1)
        model.features[2].conv[1][0].stride = (1, 1)
    return model


@MODELS.register("vgg16")
def vgg16(num_classes: int, variant: str) -> nn.Module:
    model = _torchvision("vgg16_bn", num_classes)
    if variant == "cifar":
        # Five 2x2 pools take 32x32 to 1x1x512: one linear layer is the standard CIFAR head.
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier = nn.Linear(512, num_classes)
    return model


@MODELS.register("tiny_cnn")
def tiny_cnn(num_classes: int, variant: str) -> nn.Module:
    """A small CNN with the operators the big ones use (conv, BN, ReLU, residual add,
    depthwise conv, pooling, linear), for smoke tests and quick experiments."""
    return TinyCNN(num_classes)


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.block = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 1, bias=False),
            nn.BatchNorm2d(width),
        )
        self.down = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(4 * width),
            nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes)
        )

    def forward(self, x):
        x = self.stem(x)
        x = nn.functional.relu(x + self.block(x))
        return self.head(self.down(x))
