"""The ``robustness.preset: autoattack`` preset and its targeted attacks, APGD-T and FAB-T.

The preset must build what AutoAttack's standard version runs (Croce & Hein 2020, as
RobustBench reports it), a value the config sets must win over it, and the two targeted
attacks, whose torchattacks loops attack a shrinking part of the batch, must still give an
image the same result in any block.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from sklearn.datasets import load_digits

from auditclf.config import (
    AUTOATTACK_TARGETS,
    PRESETS,
    RobustnessConfig,
    config_from_dict,
    load_config,
    preset_note,
)
from auditclf.data import SplitView
from auditclf.models.adapter import ModelAdapter
from auditclf.probes.attacks import ATTACKS, AttackRunner
from auditclf.probes.base import ProbeContext
from auditclf.starter_config import starter_yaml

STANDARD = ["apgd_ce", "apgd_t", "fab_t", "square"]


def test_the_preset_builds_autoattacks_standard_attacks():
    cfg = RobustnessConfig(preset="autoattack")
    assert (cfg.attacks, cfg.steps, cfg.square_queries, cfg.restarts) == (STANDARD, 100, 5000, 1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 10))
    built = {
        name: ATTACKS.get(name)().build(model, 8 / 255, cfg, seed=1, steps=cfg.steps)
        for name in cfg.attacks
    }
    assert (built["apgd_ce"].loss, built["apgd_ce"].steps, built["apgd_ce"].n_restarts) == (
        "ce",
        100,
        1,
    )
    apgd_t, fab_t = built["apgd_t"], built["fab_t"]
    assert (apgd_t.steps, apgd_t.n_restarts, apgd_t.thr_decr, apgd_t.eot_iter) == (100, 1, 0.75, 1)
    assert (fab_t.steps, fab_t.n_restarts, fab_t.multi_targeted) == (100, 1, True)
    assert ATTACKS.get("fab_t")().restarts(cfg) == 1
    assert (built["square"].n_queries, built["square"].n_restarts) == (5000, 1)
    assert all(b.norm == "Linf" and b.eps == 8 / 255 for b in built.values())
    assert AUTOATTACK_TARGETS == 9
    assert "not comparable" not in preset_note(cfg.model_dump(mode="json"))


def test_a_value_the_config_sets_wins_over_the_preset(tmp_path):
    path = tmp_path / "audit.yaml"
    path.write_text("robustness:\n  preset: autoattack\n  steps: 20\n  attacks: null\n")
    cfg = load_config(path).robustness
    assert (cfg.attacks, cfg.steps, cfg.square_queries) == (STANDARD, 20, 5000)
    note = preset_note(cfg.model_dump(mode="json"))
    assert note.endswith("Set by this config: steps 20 (preset: 100).")
    # a saved report's config reads back the same
    assert config_from_dict({"robustness": cfg.model_dump(mode="json")}).robustness == cfg


def test_the_default_preset_is_todays_grid_and_says_it_is_not_autoattack():
    cfg = RobustnessConfig()
    assert (cfg.preset, cfg.steps, cfg.square_queries) == ("default", 10, 300)
    assert cfg.attacks == list(PRESETS["default"]["attacks"])
    assert "not comparable with RobustBench" in preset_note(cfg.model_dump(mode="json"))
    # the starter config leaves the preset's keys null, so switching the preset works
    starter = yaml.safe_load(starter_yaml())
    starter["robustness"]["preset"] = "autoattack"
    assert config_from_dict(starter).robustness.attacks == STANDARD


@pytest.fixture(scope="module")
def digits_mlp() -> tuple[nn.Module, SplitView]:
    """A small MLP fitted to scikit-learn's digits in a second, and 40 held-out images: at
    eps 0.1 some images survive the first target rank, so later ranks attack a subset."""
    digits = load_digits()
    x = torch.tensor(digits.images[:, None] / 16, dtype=torch.float32)
    y = torch.tensor(digits.target)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    optimiser = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(100):
        optimiser.zero_grad()
        F.cross_entropy(net(x[:1500]), y[:1500]).backward()
        optimiser.step()
    images = (digits.images[1500:1540, None] * 255 / 16).round().astype(np.uint8)
    ids = np.array([f"d{i}" for i in range(40)])
    test = SplitView(images, digits.target[1500:1540], ids, pd.DataFrame(), None)
    return ModelAdapter(net, [0.0], [1.0]).eval(), test


def _runner(digits_mlp, batch_size: int) -> AttackRunner:
    model, test = digits_mlp
    ctx = ProbeContext(
        model=model,
        test=test,
        classes=[str(c) for c in range(10)],
        device=torch.device("cpu"),
        seed=0,
        batch_size=40,
        robustness=RobustnessConfig(preset="autoattack", steps=4, batch_size=batch_size),
    )
    return AttackRunner(ctx, np.arange(40))


@pytest.mark.parametrize("name", ["apgd_t", "fab_t"])
def test_a_targeted_attack_gives_an_image_the_same_result_in_any_block(digits_mlp, name):
    big, small = _runner(digits_mlp, 40), _runner(digits_mlp, 7)
    together, apart = big.run(name, "0.1"), small.run(name, "0.1")
    fooled = (together["margin"] < 0).sum()
    assert 0 < fooled < 40  # some images reach the later target ranks
    for key in ("pred", "margin", "valid", "loss"):
        assert np.array_equal(together[key], apart[key]), key
    block = np.arange(40)[::-1].copy()  # another order: each image keeps its own result
    x, y = big.batch(block)
    reversed_adv = big.adversarial(name, "0.1", block, x, y)
    (_, x0, y0), *_ = big.blocks()
    assert torch.equal(reversed_adv, big.adversarial(name, "0.1", np.arange(40), x0, y0)[block])
