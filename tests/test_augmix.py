"""AugMix hardening: the Jensen-Shannon loss against a hand computation, the views, seeded
training, and a digits run whose hardened model, sidecar and reports say augmix."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from auditclf.config import HardenConfig, TrainConfig, load_config
from auditclf.data import SplitView
from auditclf.errors import UsageError
from auditclf.models import ModelAdapter
from auditclf.models.loading import build_architecture
from auditclf.report.ledger import ledger
from auditclf.train import train_classifier
from auditclf.train.augmix import augmix_loss, augmix_views, jensen_shannon
from tests.conftest import cli

CPU = torch.device("cpu")


def test_jensen_shannon_loss_equals_the_hand_computation():
    # Image 1: clean (1/2, 1/2), views (3/4, 1/4) and (1/4, 3/4): their mixture is (1/2, 1/2).
    # Image 2: the three predictions agree, so it adds nothing (but counts in the mean).
    ln3 = math.log(3)
    logits = torch.tensor([[0.0, 0.0], [1.0, 2.0], [ln3, 0.0], [1.0, 2.0], [0.0, ln3], [1.0, 2.0]])
    kl_view = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    js = (0 + kl_view + kl_view) / 3 / 2  # mean over the three views, then over 2 images
    assert jensen_shannon(logits, 3).item() == pytest.approx(js, rel=1e-6)
    y = torch.tensor([0, 1])
    cross_entropy = (math.log(2) + math.log(1 + math.exp(-1))) / 2  # clean rows only
    loss, clean = augmix_loss(12.0)(logits, y, None)
    assert loss.item() == pytest.approx(cross_entropy + 12 * js, rel=1e-6)
    assert torch.equal(clean, logits[:2])


@pytest.mark.parametrize("channels", [1, 3])
def test_views_are_seeded_in_range_and_keep_the_clean_batch_first(channels):
    x = torch.rand(10, channels, 12, 12)
    cfg = HardenConfig(method="augmix", augmix_group=4)
    first, again = augmix_views(cfg, 0, CPU), augmix_views(cfg, 0, CPU)
    views = first(x, None)
    assert views.shape == (30, channels, 12, 12) and views.dtype == x.dtype
    assert torch.equal(views[:10], x) and not torch.equal(views[10:20], views[20:])
    assert views.min() >= 0 and views.max() <= 1
    assert torch.equal(views, again(x, None))  # the same seed and call index: the same views
    assert not torch.equal(views, first(x, None))  # the next call draws anew
    assert torch.equal(views, augmix_views(cfg, 0, CPU)(x, None))
    # Without the consistency term, one view alone.
    one = augmix_views(cfg.model_copy(update={"augmix_jsd": 0.0}), 0, CPU)(x, None)
    assert one.shape == x.shape and not torch.equal(one, x)


def _split(n: int, seed: int) -> SplitView:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 60, (n, 1, 8, 8)) + 150 * labels[:, None, None, None]
    return SplitView(
        images.astype(np.uint8),
        labels.astype(np.int64),
        np.arange(n).astype(str),
        pd.DataFrame(index=range(n)),
        None,
    )


def _augmix_trained(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = build_architecture(
        "basic-cnn", {"in_channels": 1, "num_classes": 2, "input_size": [8, 8]}
    )
    adapter = ModelAdapter(net, [0.5], [0.3])
    cfg = HardenConfig(method="augmix")
    train_classifier(
        adapter,
        _split(48, 0),
        _split(16, 1),
        TrainConfig(epochs=1, batch_size=16),
        num_classes=2,
        seed=seed,
        device=CPU,
        hflip_ok=False,
        progress=False,
        inputs=augmix_views(cfg, seed, CPU),
        loss_of=augmix_loss(cfg.augmix_jsd),
        keep_last=True,
    )
    return adapter.state_dict()


def test_augmix_training_is_deterministic_from_the_seed():
    first, again, other = _augmix_trained(0), _augmix_trained(0), _augmix_trained(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


AUGMIX_CONFIG = """\
seed: 0
data:
  dataset: digits
train:
  epochs: 1
analyses:
  bootstrap: 20
robustness:
  attacks: [fgsm]
  eps_linf: [0.1]
  samples: 30
  min_eps_samples: 0
  gallery_per_class: 0
harden:
  epochs: 1
explain:
  enabled: false
fairness:
  enabled: false
"""


def test_run_hardens_with_augmix_and_the_reports_say_so(tmp_path):
    config = tmp_path / "audit.yaml"
    config.write_text(AUGMIX_CONFIG)
    out = tmp_path / "out"
    result = cli("run", "--config", config, "--harden", "augmix", "--out", out, "--quiet")
    assert result.status == 0, result
    report = json.loads((out / "report.json").read_text())
    hardened = report["models"]["hardened"]
    assert hardened["card"]["source"].startswith("retrained against corruptions (augmix")
    assert "performance.accuracy" in hardened["metrics"]
    sidecar = json.loads((out / "hardened.json").read_text())
    assert sidecar["hardening"]["method"] == "augmix" and sidecar["hardening"]["augmix_jsd"] == 12
    assert "eps" not in sidecar["hardening"]  # an adversarial setting, not AugMix's
    html = (out / "report.html").read_text()
    assert "what AugMix retraining against corruptions cost and bought" in html
    assert "adversarial retraining" not in html
    summary = (out / "summary.md").read_text()
    assert "AugMix retraining" in summary and "Hardening" not in summary


def test_ledger_names_the_method_and_leads_with_what_it_was_for():
    base = {"performance.accuracy": 0.9, "corruption.mean.accuracy": 0.7}
    hard = {"performance.accuracy": 0.89, "corruption.mean.accuracy": 0.8}
    augmix = ledger(base, hard, "0.1", "augmix")
    assert augmix["title"] == (
        "Baseline vs hardened: what AugMix retraining against corruptions cost and bought"
    )
    assert augmix["headline"] == (
        "AugMix retraining raised mean accuracy under corruptions from 70.0% to 80.0% and "
        "cost 1.0 points of clean accuracy (90.0% → 89.0%)."
    )
    worst = "robustness.worst@0.1.accuracy"
    base[worst], hard[worst] = 0.2, 0.3
    assert ledger(base, hard, "0.1", "augmix")["headline"].endswith(
        "Worst-case accuracy at L∞ eps 0.1: 20.0% → 30.0%."
    )
    pgd = ledger(base, hard, "0.1", "pgd")
    assert pgd["title"] == "Baseline vs hardened: what adversarial retraining cost and bought"
    assert pgd["headline"].startswith("Hardening raised worst-case accuracy at L∞ eps 0.1")


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ({"augmix_depth": 0}, "harden.augmix_depth: must be -1"),
        ({"augmix_severity": 11}, "harden.augmix_severity: .* 10"),
    ],
)
def test_augmix_settings_out_of_range_are_refused_naming_the_key(setting, fragment):
    with pytest.raises(UsageError, match=fragment):
        load_config(None, {"harden": {"method": "augmix", **setting}})
