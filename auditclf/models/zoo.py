"""The model zoo: architectures auditclf can build, train and fine-tune.

Every factory takes ``in_channels``, ``num_classes`` and ``input_size`` (H, W)
and returns an ``nn.Module`` mapping normalised NCHW float input to logits.
Weights are random; auditclf never downloads pretrained weights. The
real-size models (:data:`REAL_SIZE`) keep torchvision's own layer names and
stems so that torchvision's published state dicts fit them (``model.weights``,
see :mod:`auditclf.models.pretrained`); only the classification head (the last
``nn.Linear``) is built for the data's classes, and the first conv for its
channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn

from auditclf.errors import UsageError
from auditclf.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")
# torchvision's architectures at their native stems: its published ImageNet weights fit them.
REAL_SIZE = ("resnet50", "efficientnet_b0", "vgg16", "vit_b_16")
VIT_PATCH = 16


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


def _with_in_channels(net: nn.Module, name: str, in_channels: int) -> nn.Module:
    """Replace the conv ``name`` by one taking ``in_channels`` (same shape otherwise)."""
    conv = net.get_submodule(name)
    if conv.in_channels != in_channels:
        parent, _, attribute = name.rpartition(".")
        replacement = nn.Conv2d(
            in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            bias=conv.bias is not None,
        )
        setattr(net.get_submodule(parent) if parent else net, attribute, replacement)
    return net


@MODELS.register("resnet50")
def resnet50(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    """torchvision ResNet-50 as published (7×7 stride-2 stem and max-pool), for 224 px;
    it runs from 8 px up (the adaptive pooling takes any feature-map size)."""
    from torchvision.models import resnet50 as tv_resnet50

    net = tv_resnet50(weights=None, num_classes=num_classes)
    return _with_in_channels(net, "conv1", in_channels)


@MODELS.register("efficientnet_b0")
def efficientnet_b0(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    """torchvision EfficientNet-B0 as published, for 224 px; any size from 8 px up."""
    from torchvision.models import efficientnet_b0 as tv_efficientnet

    net = tv_efficientnet(weights=None, num_classes=num_classes)
    return _with_in_channels(net, "features.0.0", in_channels)


@MODELS.register("vgg16")
def vgg16(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    """torchvision VGG-16 (no batch norm) as published, for 224 px. Its five 2× max-pools
    need at least 32 px a side; smaller inputs are refused (a usage error)."""
    if min(input_size) < 32:
        raise UsageError(
            f"model vgg16 needs images of at least 32×32 px (its five max-pools halve them); "
            f"these are {input_size[0]}×{input_size[1]}: set data.image_size (--image-size)"
        )
    from torchvision.models import vgg16 as tv_vgg16

    net = tv_vgg16(weights=None, num_classes=num_classes)
    return _with_in_channels(net, "features.0", in_channels)


class PatchGridNorm(nn.LayerNorm):
    """A ViT block's first LayerNorm that shows its patch tokens as an image to Grad-CAM.

    The output is the LayerNorm's, unchanged; on the way, the patch tokens pass
    through ``patch_grid`` (an ``nn.Identity``) reshaped as pytorch-grad-cam's
    ViT ``reshape_transform`` does: the class token dropped, the (N, h·w, D)
    patch tokens laid out as an (N, D, h, w) map, h and w the image side / 16.
    Grad-CAM hooks ``patch_grid`` like a conv layer's output. It adds no
    parameters, so torchvision's state dicts still fit (keys ``ln_1.weight``
    and ``ln_1.bias``).
    """

    def __init__(self, hidden_dim: int, grid: tuple[int, int], eps: float = 1e-6) -> None:
        super().__init__(hidden_dim, eps=eps)
        self.grid = tuple(grid)
        self.patch_grid = nn.Identity()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        normed = super().forward(tokens)
        n, _, dim = normed.shape
        patches = normed[:, 1:].transpose(1, 2).reshape(n, dim, *self.grid)
        patches = self.patch_grid(patches)
        return torch.cat([normed[:, :1], patches.flatten(2).transpose(1, 2)], dim=1)


@MODELS.register("vit_b_16")
def vit_b_16(in_channels: int, num_classes: int, input_size: tuple[int, int]) -> nn.Module:
    """torchvision ViT-B/16 (12 layers, 12 heads, width 768, MLP 3072), for 224 px; built
    for the data's square side (torchvision's ``image_size``), which must be a multiple of
    16 (a usage error otherwise). See :func:`vision_transformer`."""
    return vision_transformer(
        in_channels, num_classes, input_size, num_layers=12, num_heads=12, hidden_dim=768,
        mlp_dim=3072,
    )  # fmt: skip


def vision_transformer(
    in_channels: int, num_classes: int, input_size: tuple[int, int], **sizes: int
) -> nn.Module:
    """A torchvision ``VisionTransformer`` with 16-px patches and the given ``sizes``
    (``num_layers``, ``num_heads``, ``hidden_dim``, ``mlp_dim``).

    It has no convolution past the patch embedding, so Grad-CAM takes the last
    encoder block's input tokens (its ``ln_1``, through :class:`PatchGridNorm`):
    the block's output patch tokens reach nothing (the head reads the class token
    alone), so their gradients are zero, the reason pytorch-grad-cam's ViT example
    also hooks the last block's first norm.
    """
    height, width = input_size
    if height != width or height % VIT_PATCH:
        raise UsageError(
            f"model vit_b_16 needs square images whose side is a multiple of {VIT_PATCH} px; "
            f"these are {height}×{width}: set data.image_size (--image-size), e.g. 224"
        )
    from torchvision.models import VisionTransformer

    net = VisionTransformer(height, VIT_PATCH, num_classes=num_classes, **sizes)
    net = _with_in_channels(net, "conv_proj", in_channels)
    last = net.encoder.layers[-1]
    grid = (height // VIT_PATCH, width // VIT_PATCH)
    last.ln_1 = PatchGridNorm(net.hidden_dim, grid, eps=last.ln_1.eps)
    return net
