"""The run's training recipes: the baseline's standard training, hardening (``harden``:
adversarial retraining, or AugMix against corruptions) and group-balanced retraining
(``rebalance``), each returning the model prepared for the audit and its training history.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from auditclf import distributed
from auditclf.config import AuditConfig, HardenConfig, eps_label, parse_eps
from auditclf.data import PreparedData, SplitView
from auditclf.errors import UsageError
from auditclf.models import ModelAdapter, PreparedModel, initial_network
from auditclf.probes.attacks import REFERENCE_EPS, training_attack
from auditclf.seeding import derive_seed
from auditclf.train.augmix import augmix_loss, augmix_views
from auditclf.train.standard import TrainHistory, group_balanced_weights, train_classifier

# a hardened model's sidecar records the harden settings its method acts on, not the others
_ADVERSARIAL_FIELDS = {"eps", "steps", "step_size"}
_AUGMIX_FIELDS = {name for name in HardenConfig.model_fields if name.startswith("augmix_")}


def hflip_allowed(config: AuditConfig, data: PreparedData) -> bool:
    """Whether training may flip images left-right: ``train.hflip``, else the data's say."""
    return data.imageset.hflip_ok if config.train.hflip is None else config.train.hflip


def step_seed(seed: int) -> int:
    """The seed of a retraining's per-step draws (an attack's random start, AugMix's
    chains): ``seed`` in a single process; under data-parallel training one per rank, so
    that each rank's images get draws of their own (per step and rank, reproducible)."""
    return seed if not distributed.active() else derive_seed(seed, "rank", distributed.rank())


def _train(
    adapter: ModelAdapter,
    train: SplitView,
    data: PreparedData,
    config: AuditConfig,
    device: torch.device,
    progress: bool,
    sample_weights: np.ndarray | None = None,
) -> TrainHistory:
    """The run's standard training of ``adapter`` on ``train`` (validation on the val split)."""
    return train_classifier(
        adapter,
        train,
        data.view("val"),
        config.train,
        num_classes=len(data.classes),
        seed=config.seed,
        device=device,
        hflip_ok=hflip_allowed(config, data),
        progress=progress,
        sample_weights=sample_weights,
    )


def train_baseline(
    prepared: PreparedModel,
    train: SplitView,
    config: AuditConfig,
    data: PreparedData,
    device: torch.device,
    *,
    progress: bool,
) -> TrainHistory:
    """Train the model the run built (in place, on ``train``, the train split) and record
    the training on its spec."""
    history = _train(prepared.adapter, train, data, config, device, progress)
    prepared.spec["training"] = {
        **config.train.model_dump(mode="json"),
        "best_epoch": history.best_epoch,
        "epochs_run": len(history.epochs),
    }
    return history


def training_findings(history: TrainHistory, max_epochs: int) -> list[dict]:
    """Plain-words notes on how training ended (still improving at the epoch limit)."""
    # Early stopping did not fire: the validation loss improved within the last `patience`
    # epochs, so training ended while the model was still getting better.
    has_val = any(math.isfinite(e["val_loss"]) for e in history.epochs)
    if history.stopped_early or len(history.epochs) < max_epochs or not has_val:
        return []
    message = (
        f"training ended at the epoch limit ({max_epochs}) while the validation loss was "
        f"still improving (best at epoch {history.best_epoch}): the model may be "
        "under-trained; raise train.epochs"
    )
    return [{"severity": "info", "section": "training", "metric": None, "message": message}]


def _fresh_adapter(
    config: AuditConfig, baseline: PreparedModel, refusal: str
) -> tuple[ModelAdapter, str]:
    """A newly initialised network of the baseline's architecture, in the baseline's
    adapter settings, and where its weights start; ``refusal`` when the baseline cannot
    be rebuilt (a whole pickled model, a module passed in memory)."""
    if not baseline.rebuildable:
        raise UsageError(refusal)
    net, pretrained = initial_network(
        config.model, baseline.spec["architecture"], baseline.spec["arguments"]
    )
    adapter = ModelAdapter(
        net, **baseline.spec["normalization"], target_layer=config.model.target_layer
    )
    return adapter, "random initialisation" if pretrained is None else pretrained["file"]


def rebalance(
    config: AuditConfig,
    data: PreparedData,
    baseline: PreparedModel,
    device: torch.device,
    *,
    progress: bool,
) -> tuple[PreparedModel, TrainHistory]:
    """Retrain the baseline's architecture with group-balanced sampling (``--rebalance-groups``).

    Same architecture, initialisation seed and training settings as the
    baseline; only the sampling differs: each epoch draws the training images
    with replacement, each with weight 1 / (images of its group), so every
    group of ``fairness.rebalance`` is drawn equally often.
    """
    torch.manual_seed(config.seed)  # the baseline's initialisation, when it was trained here
    adapter, start = _fresh_adapter(
        config,
        baseline,
        "--rebalance-groups retrains from scratch and needs a rebuildable architecture; "
        "a whole pickled model cannot be rebuilt",
    )
    attribute = config.fairness.rebalance
    train = data.view("train")
    groups = train.attributes[attribute].to_numpy(dtype=str)
    counts = dict(zip(*np.unique(groups, return_counts=True), strict=True))
    spec = {
        **baseline.spec,
        "source": f"retrained from {start} with group-balanced sampling over "
        f"{attribute!r} ({len(counts)} groups, {config.train.epochs} epochs at most)",
        "rebalance": {
            "attribute": attribute,
            "train_counts": {k: int(n) for k, n in counts.items()},
        },
    }
    weights = group_balanced_weights(groups)
    history = _train(adapter, train, data, config, device, progress, sample_weights=weights)
    adapter.to(device).eval()
    return PreparedModel(adapter, spec, needs_training=True), history


def harden(
    config: AuditConfig,
    data: PreparedData,
    baseline: PreparedModel,
    device: torch.device,
    *,
    progress: bool,
) -> tuple[PreparedModel, TrainHistory]:
    """Retrain a copy of the baseline (or a fresh model) per ``config.harden``: adversarially
    (pgd, fgsm-rs) or against corruptions (augmix). Either way ``harden.epochs`` at
    ``harden.lr``, the final weights kept (the clean validation loss is recorded but picks
    no epoch: it is not what the retraining is for)."""
    cfg = config.harden
    if cfg.from_scratch:
        adapter, start = _fresh_adapter(
            config,
            baseline,
            "harden.from_scratch needs a rebuildable architecture; a whole "
            "pickled model can only be fine-tuned",
        )
    else:
        adapter, start = copy.deepcopy(baseline.adapter), "the baseline's weights"
    adapter.to(device)
    if cfg.method == "augmix":
        spec, options = _augmix_recipe(config, start, device)
    else:
        spec, options = _adversarial_recipe(config, data, adapter, start, device)
    train_cfg = config.train.model_copy(update={"epochs": cfg.epochs, "lr": cfg.lr})
    history = train_classifier(
        adapter,
        data.view("train"),
        data.view("val"),
        train_cfg,
        num_classes=len(data.classes),
        seed=derive_seed(config.seed, "harden"),
        device=device,
        hflip_ok=hflip_allowed(config, data),
        progress=progress,
        keep_last=True,
        **options,
    )
    adapter.to(device).eval()
    return PreparedModel(adapter, {**baseline.spec, **spec}, needs_training=True), history


def _adversarial_recipe(
    config: AuditConfig,
    data: PreparedData,
    adapter: ModelAdapter,
    start: str,
    device: torch.device,
) -> tuple[dict, dict]:
    """PGD-AT or FGSM-RS: the hardened model's spec entries and the training's options."""
    cfg = config.harden
    channels = data.input_shape[0]
    eps_text = (
        eps_label(cfg.eps) if cfg.eps is not None else REFERENCE_EPS[1 if channels == 1 else 3]
    )
    spec = {
        "source": f"adversarially retrained ({cfg.method}, L∞ eps "
        f"{eps_text}, {cfg.epochs} epochs) from {start}",
        "hardening": {
            **cfg.model_dump(mode="json", exclude=_AUGMIX_FIELDS),
            "eps": eps_text,
        },
    }
    perturb = training_attack(
        cfg.method,
        adapter,
        parse_eps(eps_text),
        steps=cfg.steps,
        step_size=cfg.step_size,
        seed=step_seed(config.seed),
        device=device,
    )
    return spec, {"inputs": perturb}


def _augmix_recipe(config: AuditConfig, start: str, device: torch.device) -> tuple[dict, dict]:
    """AugMix (:mod:`auditclf.train.augmix`): the spec entries and the training's options."""
    cfg = config.harden
    depth = "1-3" if cfg.augmix_depth == -1 else str(cfg.augmix_depth)
    loss = f"JSD weight {cfg.augmix_jsd:g}" if cfg.augmix_jsd > 0 else "cross-entropy on one view"
    spec = {
        "source": f"retrained against corruptions (augmix, severity {cfg.augmix_severity}, "
        f"width {cfg.augmix_width}, depth {depth}, {loss}, {cfg.epochs} epochs) from {start}",
        "hardening": cfg.model_dump(mode="json", exclude=_ADVERSARIAL_FIELDS),
    }
    options = {
        "inputs": augmix_views(cfg, step_seed(config.seed), device),
        "loss_of": augmix_loss(cfg.augmix_jsd),
    }
    return spec, options
