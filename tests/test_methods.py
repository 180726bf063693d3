"""Every registered attack and attribution method, run on a tiny model and a tiny batch.

A new entry of ``ATTACKS`` or ``ATTRIBUTIONS`` is walked here without anyone adding a
test: it is built, run, and its output checked for shape, dtype, device, range and (for
attacks) the eps ball, beside the facts the catalogue states about it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

from auditclf.catalog import ATTACK_NORMS, ATTRIBUTION_FACTS, CATALOG
from auditclf.config import ExplainConfig, RobustnessConfig
from auditclf.data import SplitView
from auditclf.models.adapter import ModelAdapter
from auditclf.probes.attacks import ATTACKS, AttackRunner, planned_attacks, run_artifacts
from auditclf.probes.attributions import ATTRIBUTIONS
from auditclf.probes.base import ProbeContext

CLASSES = 4  # APGD-T (targeted DLR loss) needs four
EPS = {"linf": "0.1", "l2": "1"}
DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    ),
]


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, CLASSES),
    )


def _context(device: str, n: int = 6) -> ProbeContext:
    """``n`` random 8×8 gray images with labels 0, 1, 2, 0, …, and a fast attack config."""
    rng = np.random.default_rng(0)
    images = (rng.random((n, 1, 8, 8)) * 255).astype(np.uint8)
    ids = np.array([f"img{i}" for i in range(n)])
    test = SplitView(images, np.arange(n) % CLASSES, ids, pd.DataFrame(), None)
    return ProbeContext(
        model=ModelAdapter(_cnn(), [0.0], [1.0]).to(device).eval(),
        test=test,
        classes=[str(c) for c in range(CLASSES)],
        device=torch.device(device),
        seed=0,
        batch_size=n,
        robustness=RobustnessConfig(steps=3, square_queries=20, square_samples=4),
    )


def test_the_registries_hold_the_catalogues_names_and_facts():
    assert ATTACKS.names() == list(CATALOG["attack"]) == list(ATTACK_NORMS)
    assert ATTRIBUTIONS.names() == list(CATALOG["attribution"]) == list(ATTRIBUTION_FACTS)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_stays_in_its_eps_ball(name, device):
    ctx = _context(device)
    method = ATTACKS.get(name)()
    assert method.name == name
    assert method.norm == ATTACK_NORMS[name] and method.norm in EPS
    assert method.restarts(ctx.robustness) >= 1
    count = method.samples(ctx.robustness)
    assert count is None or count >= 1
    runner = AttackRunner(ctx, np.arange(len(ctx.test.labels)))
    block = np.arange(len(ctx.test.labels))
    x, y = runner.batch(block)
    eps = float(EPS[method.norm])
    adv = runner.adversarial(name, EPS[method.norm], block, x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device
    assert torch.isfinite(adv).all() and adv.min() >= 0 and adv.max() <= 1
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(1) if method.norm == "linf" else delta.norm(dim=1)
    assert (size <= eps * (1 + 1e-5) + 1e-6).all(), size
    if method.white_box and not method.on_correct_only:
        assert (size > 0).any()  # a gradient attack moves the images it is given
    out = runner.run(name, EPS[method.norm], rows=np.arange(3))
    assert out["valid"].all() and out["pred"].shape == (3,)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_an_attack_is_planned_only_with_enough_classes(name):
    method = ATTACKS.get(name)
    cfg = RobustnessConfig(attacks=[name], square_samples=4)
    assert planned_attacks(cfg, method.min_classes) == [name]
    if method.min_classes > 2:
        artifacts = run_artifacts(cfg, 1, method.min_classes - 1, attacked=10)
        assert artifacts["attacks"] == []
        assert artifacts["skipped"] == [f"{name}: {method.min_classes_reason}"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ATTRIBUTIONS.names())
def test_every_attribution_method_maps_each_image_reproducibly(name, device):
    cfg = ExplainConfig(ig_steps=8, lime_samples=20)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)).to(device)
    target = torch.tensor([0, 1, 2, 0], device=device)
    ids = ["a", "b", "c", "d"]
    without_conv = nn.Sequential(nn.Flatten(), nn.Linear(64, CLASSES))
    method = ATTRIBUTIONS.get(name)()
    cnn = ModelAdapter(_cnn(), [0.0], [1.0]).to(device).eval()
    assert method.unavailable(cnn) is None
    for model in (cnn, ModelAdapter(without_conv, [0.0], [1.0]).to(device).eval()):
        reason = method.unavailable(model)
        if reason is not None:
            assert reason.strip()
            continue
        maps, delta = method.maps(model, x, target, cfg, ids, seed=0)
        assert maps.shape == (4, 8, 8) and maps.dtype == x.dtype and maps.device == x.device
        assert torch.isfinite(maps).all()
        assert (delta is not None) == ATTRIBUTION_FACTS[name].convergence_delta
        if delta is not None:
            assert delta.shape == (4,) and np.isfinite(delta).all()
        again, _ = method.maps(model, x, target, cfg, ids, seed=0)
        assert torch.equal(maps, again)
