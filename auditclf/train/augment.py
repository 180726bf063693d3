"""Training-time augmentation: small random rotation, scale and translation (+ flips).

Each image gets its own random affine transform in one batched
``affine_grid``/``grid_sample`` call (torchvision's ``RandomAffine`` draws one
transform per call, i.e. per batch), with parameters drawn from a seeded
generator so training is reproducible. Under data-parallel training a process holds
every ``world``-th image of the batch (``share``); it draws the whole batch's parameters
and keeps its images' rows, so each image is transformed as in a single process.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    degrees: float = 10.0,
    translate: float = 0.1,
    scale: tuple[float, float] = (0.9, 1.1),
    hflip: bool = False,
    share: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Augment a batch x (N, C, H, W) in [0, 1].

    degrees: max absolute rotation; translate: max shift as a fraction of the
    side; scale: zoom range; hflip: mirror half of the images (never for
    digits, where a mirrored 2 is not a 2). Borders replicate edge pixels.
    share: (rank, world) when x is images rank, rank + world, ... of a batch of
    ``world`` · N spread over ``world`` processes (all drawing from equal generators):
    the draws of the whole batch are made, and rows rank::world kept.
    """
    n = x.shape[0]
    if share is None:
        u = torch.rand(n, 5, generator=generator).to(x.device)
    else:
        rank, world = share
        u = torch.rand(n * world, 5, generator=generator)[rank::world].to(x.device)
    angle = (u[:, 0] * 2 - 1) * math.radians(degrees)
    zoom = scale[0] + u[:, 1] * (scale[1] - scale[0])
    shift_x, shift_y = ((u[:, 2:4] * 2 - 1) * translate * 2).unbind(1)  # grid units span 2
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if hflip else torch.ones_like(angle)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [
            torch.stack([cos * flip, -sin, shift_x], dim=1),
            torch.stack([sin * flip, cos, shift_y], dim=1),
        ],
        dim=1,
    ).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
