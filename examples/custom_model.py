"""A model of your own, built by a factory auditclf calls as ``module:function`` or
``path/to/file.py:function`` (it receives ``in_channels`` and ``num_classes`` if it takes
them). Train it once and audit the checkpoint:

    auditclf train --config examples/custom-model.yaml --out audit-custom-model
    auditclf run --config examples/custom-model.yaml \\
        --checkpoint audit-custom-model/model.safetensors

The checkpoint is loaded as weights only (safetensors, or a .pt state dict through
``torch.load(weights_only=True)``): nothing in it can run code.
"""

from __future__ import annotations

from torch import nn


def build(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """A small VGG-style network: two conv blocks and a linear head; logits out."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4, num_classes),
    )
