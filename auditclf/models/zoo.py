"""The model zoo: architectures auditclf can build and train from scratch.

Every factory takes ``in_channels``, ``num_classes`` and ``input_size`` (H, W)
and returns an ``nn.Module`` mapping normalised NCHW float input to logits.
Weights are random; auditclf never downloads pretrained weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn as nn

from auditclf.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")


class BasicCNN(nn.Module):
    """The classic tutorial CNN (as in the Keras/PyTorch MNIST examples).

    Conv 32 3×3 + ReLU, max-pool 2, Conv 64 3×3 + ReLU, max-pool 2, flatten,
    dense 128 + ReLU, dense ``num_classes``. It returns **logits**: the softmax
    lives in the cross-entropy loss (and in the analyses), never in the model,
    because a softmax output would weaken the gradients that attacks and
    attributions rely on.

    Departures from the tutorial, both so that any input size works (8×8
    digits included): the convolutions pad by one pixel, and pooling rounds
    up, so the feature map is ceil(H/4) × ceil(W/4).
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, input_size: tuple[int, int] = (28, 28)
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
        )
        height, width = (math.ceil(math.ceil(side / 2) / 2) for side in input_size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * height * width, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@MODELS.register("basic-cnn")
def basic_cnn(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    return BasicCNN(in_channels, num_classes, tuple(input_size))


@MODELS.register("resnet18")
def resnet18(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    """ResNet-18 with the CIFAR-style stem: a 3×3 first conv and no max-pool.

    Inputs of 64 px and more keep a stride-2 first conv to bound compute.
    """
    from torchvision.models import resnet18 as tv_resnet18

    net = tv_resnet18(weights=None, num_classes=num_classes)
    stride = 2 if min(input_size) >= 64 else 1
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=stride, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


@MODELS.register("mobilenet_v3_small")
def mobilenet_v3_small(
    in_channels: int, num_classes: int, input_size: tuple[int, int]
) -> nn.Module:
    """MobileNetV3-Small whose first conv takes ``in_channels`` with stride 1 below 64 px."""
    from torchvision.models import mobilenet_v3_small as tv_mobilenet

    net = tv_mobilenet(weights=None, num_classes=num_classes)
    first = net.features[0][0]
    stride = 2 if min(input_size) >= 64 else 1
    net.features[0][0] = nn.Conv2d(
        in_channels, first.out_channels, kernel_size=3, stride=stride, padding=1, bias=False
    )
    # torchvision builds it with BatchNorm momentum 0.01 (tuned for ImageNet-length runs); on
    # a few thousand images the running statistics would barely leave their initial values
    # and the eval-mode model would predict one class. 0.1 is PyTorch's usual default.
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    return net
