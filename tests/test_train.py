"""Training pieces: augmentation, class weights, oversampling, early stopping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from auditclf.config import TrainConfig, load_config
from auditclf.data import SplitView
from auditclf.errors import UsageError
from auditclf.models import ModelAdapter, wrap_module
from auditclf.models.loading import build_architecture
from auditclf.train import recipes, train_classifier
from auditclf.train.augment import random_affine
from auditclf.train.standard import _class_weights, _epoch_order


def test_augmentation_is_seeded_per_sample_and_keeps_range():
    x = torch.rand(6, 1, 12, 12)
    a = random_affine(x, torch.Generator().manual_seed(1))
    b = random_affine(x, torch.Generator().manual_seed(1))
    c = random_affine(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    # Each image gets its own transform: identical inputs come out different.
    same = random_affine(x[:1].repeat(4, 1, 1, 1), torch.Generator().manual_seed(3))
    assert not torch.equal(same[0], same[1])


def test_identity_parameters_leave_the_image_unchanged():
    x = torch.rand(2, 3, 9, 9)
    out = random_affine(
        x, torch.Generator().manual_seed(0), degrees=0, translate=0, scale=(1.0, 1.0), hflip=False
    )
    assert torch.allclose(out, x, atol=1e-5)


def test_hflip_mirrors_only_when_allowed():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(64, 1, 1, 1) / 15
    kwargs = {"degrees": 0, "translate": 0, "scale": (1.0, 1.0)}
    flipped = random_affine(x, torch.Generator().manual_seed(0), hflip=True, **kwargs)
    mirrored = [torch.allclose(img, x[0].flip(-1), atol=1e-5) for img in flipped]
    assert 10 < sum(mirrored) < 54  # about half
    kept = random_affine(x, torch.Generator().manual_seed(0), hflip=False, **kwargs)
    assert torch.allclose(kept, x, atol=1e-5)


def test_class_weights_are_inverse_frequency():
    weights = _class_weights(np.array([0, 0, 0, 1]), 3)
    # n / (K * count): 4 / (3 * 3), 4 / (3 * 1); an absent class gets 0
    assert torch.allclose(weights, torch.tensor([4 / 9, 4 / 3, 0.0]))


def test_oversampling_balances_classes():
    labels = torch.tensor([0] * 90 + [1] * 10)
    order = _epoch_order(labels, TrainConfig(oversample=True), torch.Generator().manual_seed(0), 2)
    share = (labels[order] == 1).float().mean().item()
    assert 0.4 < share < 0.6
    plain = _epoch_order(labels, TrainConfig(), torch.Generator().manual_seed(0), 2)
    assert sorted(plain.tolist()) == list(range(100))


def _split(n: int, seed: int) -> SplitView:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = np.where(labels[:, None, None, None] == 1, 200, 30).astype(np.uint8)
    images = np.broadcast_to(images, (n, 1, 6, 6)).copy()
    images = (images + rng.integers(0, 20, images.shape)).astype(np.uint8)
    return SplitView(
        images,
        labels.astype(np.int64),
        np.arange(n).astype(str),
        pd.DataFrame(index=range(n)),
        None,
    )


def test_training_learns_an_easy_task_and_keeps_the_best_epoch():
    torch.manual_seed(0)
    net = build_architecture(
        "basic-cnn", {"in_channels": 1, "num_classes": 2, "input_size": [6, 6]}
    )
    adapter = ModelAdapter(net, [0.5], [0.3])
    history = train_classifier(
        adapter,
        _split(64, 0),
        _split(32, 1),
        TrainConfig(epochs=6, patience=2, augment=False),
        num_classes=2,
        seed=0,
        device=torch.device("cpu"),
        hflip_ok=False,
        progress=False,
    )
    assert history.epochs[-1]["val_accuracy"] == 1.0
    losses = [e["val_loss"] for e in history.epochs]
    assert history.best_epoch == int(np.argmin(losses)) + 1
    assert not adapter.training


@pytest.mark.parametrize("recipe", ["harden", "rebalance"])
def test_a_network_that_cannot_be_rebuilt_is_not_retrained_from_scratch(recipe):
    config = load_config(None, {"harden": {"from_scratch": True}, "fairness": {"rebalance": "a"}})
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    passed = wrap_module(net, config.model, classes=["x", "y"], input_shape=(1, 8, 8))
    with pytest.raises(UsageError, match="rebuildable architecture"):  # before touching data
        getattr(recipes, recipe)(config, None, passed, torch.device("cpu"), progress=False)
