"""AugMix retraining (Hendrycks et al., "AugMix", ICLR 2020): torchvision's ``AugMix`` views
of each training batch and the paper's Jensen-Shannon consistency loss.

The views: torchvision's ``transforms.v2.AugMix`` on float images in [0, 1], on the
model's device (its v2 ops accept float tensors as well as the uint8 its docstring
names, so nothing is copied to the host or to uint8 and back). One call draws one
chain of ops (which op, its magnitude and sign, the chain's depth) for every image
it is given, and per image only the mixing weights; a whole batch in one call would
put every image through the same ops. Each image would get its own chain when
called image by image, as the paper's data loader does, but that is
``2 × batch`` calls of small ops per step (on mnist5k at one CPU thread, 65 ms of
views per batch of 64 against 7 ms in groups of 8, 1.6x the time per epoch,
for the same accuracy under corruptions; on a GPU each op is a few tiny launches). So
``harden.augmix_group`` images (default 8) share a chain: a batch of 64 sees 8
chains per view, and each image still mixes them with its own weights.

The loss (``harden.augmix_jsd`` = λ, default 12 as in the paper): cross-entropy on the
clean images plus λ · JS(p_clean, p_aug1, p_aug2), the Jensen-Shannon divergence of
the three predicted distributions, i.e. the mean KL divergence of each from their
mixture M (clamped to [1e-7, 1] before its log, as the paper's code does). The three
views go through the model as one batch of 3N (BatchNorm sees them together, as in the
paper). λ = 0 trains on one AugMix view with plain cross-entropy instead.

Randomness: each batch's ops and weights come from torch's global generators, seeded
from (run seed, batch index) inside ``fork_rng`` so the rest of the run's random
state is untouched: the same seed and batch size give the same views.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from auditclf.config import HardenConfig
from auditclf.seeding import derive_seed
from auditclf.train.standard import Loss

MIXTURE_FLOOR = 1e-7  # the paper's clamp of the mixture before its log


def augmix_transform(cfg: HardenConfig) -> v2.AugMix:
    """torchvision's AugMix with the ``harden.augmix_*`` settings (bilinear, black fill)."""
    return v2.AugMix(
        severity=cfg.augmix_severity,
        mixture_width=cfg.augmix_width,
        chain_depth=cfg.augmix_depth,
        alpha=cfg.augmix_alpha,
        all_ops=cfg.augmix_all_ops,
    )


def augmix_views(
    cfg: HardenConfig, seed: int, device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """An ``inputs(x, y)`` for :func:`auditclf.train.standard.train_classifier`: the batch
    x (N, C, H, W) in [0, 1] followed by two AugMix views of it, (3N, C, H, W) (with
    ``augmix_jsd`` = 0, one view alone, (N, C, H, W)); call k seeded from (seed, k)."""
    transform = augmix_transform(cfg)
    calls = itertools.count()
    devices = [device] if device.type == "cuda" else []

    def views(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed(seed, "augmix", next(calls)))
            augmented = [
                torch.cat([transform(part) for part in x.split(cfg.augmix_group)])
                for _ in range(2 if cfg.augmix_jsd > 0 else 1)
            ]
        return torch.cat([x, *augmented]) if cfg.augmix_jsd > 0 else augmented[0]

    return views


def jensen_shannon(logits: torch.Tensor, parts: int) -> torch.Tensor:
    """JS divergence of the ``parts`` predicted distributions stacked in ``logits``
    ((parts·N, K): part j is rows jN..(j+1)N): the mean over parts of KL(p_j ‖ M), M their
    mean, averaged over the N images (nats)."""
    probs = F.softmax(logits, dim=1).chunk(parts)
    log_mixture = torch.clamp(sum(probs) / parts, MIXTURE_FLOOR, 1).log()
    return sum(F.kl_div(log_mixture, p, reduction="batchmean") for p in probs) / parts


def augmix_loss(jsd_weight: float) -> Loss:
    """A ``loss(logits, y, weight)`` for the views of :func:`augmix_views`: the clean
    images' cross-entropy plus ``jsd_weight`` · the JS divergence of the three views,
    and the clean images' logits (the running accuracy's); with weight 0, cross-entropy
    on the one view."""

    def loss(
        logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if jsd_weight == 0:
            return F.cross_entropy(logits, y, weight=weight), logits
        clean = logits[: len(y)]
        consistency = jensen_shannon(logits, 3)
        return F.cross_entropy(clean, y, weight=weight) + jsd_weight * consistency, clean

    return loss
