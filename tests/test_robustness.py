"""Robustness: agreement with torchattacks, a known answer, and masking caught as unreliable."""

from __future__ import annotations

import json
import textwrap
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torchattacks

from auditclf.config import load_config
from auditclf.data import SplitView, prepare_data
from auditclf.keys import check_outcomes
from auditclf.models import ModelAdapter, PreparedModel
from auditclf.pipeline import PhaseTimer, audit_model, build_model
from auditclf.probes.attacks import AttackRunner, PgdLinf
from auditclf.probes.base import ProbeContext
from tests.conftest import cli

SMALL = {
    "data": {"dataset": "digits"},
    "train": {"epochs": 8},
    "analyses": {"bootstrap": 0},
    "robustness": {
        "samples": 120,
        "square_samples": 60,
        "square_queries": 100,
        "min_eps_samples": 0,
        "gallery_per_class": 0,
    },
    "harden": {"method": "none"},
    "corruptions": {"enabled": False},
}


@pytest.fixture(scope="module")
def trained():
    """A basic CNN trained on digits, with its data and config (seed 0)."""
    config = load_config(None, SMALL)
    data = prepare_data(config.data, seed=0)
    prepared, _ = build_model(config, data, torch.device("cpu"), progress=False, timer=PhaseTimer())
    return config, data, prepared


def _audit(config, data, net: nn.Module, normalization: dict) -> dict:
    adapter = ModelAdapter(net, **normalization)
    prepared = PreparedModel(
        adapter,
        {"architecture": "test", "arguments": {}, "normalization": normalization},
        needs_training=False,
    )
    result, table = audit_model(
        "baseline", prepared, None, data, config, torch.device("cpu"), PhaseTimer(), debug=True
    )
    return {"metrics": result.metrics, "findings": result.findings, "table": table}


@pytest.fixture(scope="module")
def normal(trained):
    config, data, prepared = trained
    return _audit(config, data, prepared.adapter.net, prepared.spec["normalization"])


def test_a_normal_model_is_reliable(trained, normal):
    # the probes ran the network channels-last and leave its weights as they found them
    assert all(p.is_contiguous() and p.requires_grad for p in trained[2].adapter.parameters())
    metrics = normal["metrics"]
    assert metrics["robustness.reliable"] == 1.0
    assert all(v == 1.0 for k, v in metrics.items() if k.startswith("robustness.check."))
    assert metrics["robustness.pgd_linf@0.1.accuracy"] < metrics["robustness.clean_accuracy"]


def test_our_numbers_agree_with_torchattacks_called_directly(trained, normal):
    config, data, prepared = trained
    table = normal["table"]
    attacked = table["attacked"].to_numpy() == 1
    test = data.view("test")
    x = torch.from_numpy(test.images[attacked]).float() / 255
    y = torch.from_numpy(test.labels[attacked])
    model = prepared.adapter.eval()

    def direct(attack) -> float:
        adversarial = attack(x, y)
        with torch.no_grad():
            return (model(adversarial).argmax(1) == y).float().mean().item()

    # Deterministic attacks: our pipeline and torchattacks must agree within 1 point.
    fgsm = direct(torchattacks.FGSM(model, eps=0.1))
    assert abs(normal["metrics"]["robustness.fgsm@0.1.accuracy"] - fgsm) <= 0.01
    fixed = config.robustness.model_copy(update={"random_start": False})
    ctx = ProbeContext(
        model=model,
        test=test,
        classes=data.classes,
        device=torch.device("cpu"),
        seed=0,
        batch_size=64,
        robustness=fixed,
    )
    ours = AttackRunner(ctx, np.flatnonzero(attacked)).run("pgd_linf", "0.1")
    ours_accuracy = float((ours["pred"] == y.numpy()).mean())
    pgd = direct(torchattacks.PGD(model, eps=0.1, alpha=0.025, steps=10, random_start=False))
    assert abs(ours_accuracy - pgd) <= 0.01
    # With random starts the two draw different starting points; they still agree closely.
    torch.manual_seed(123)
    random_start = direct(torchattacks.PGD(model, eps=0.1, alpha=0.025, steps=10))
    assert abs(normal["metrics"]["robustness.pgd_linf@0.1.accuracy"] - random_start) <= 0.05


def _linear_context(
    weights: torch.Tensor, bias: torch.Tensor, images: np.ndarray, labels: np.ndarray, config
) -> ProbeContext:
    net = nn.Sequential(nn.Flatten(), nn.Linear(weights.shape[1], 2))
    with torch.no_grad():
        net[1].weight.copy_(weights)
        net[1].bias.copy_(bias)
    adapter = ModelAdapter(net, [0.0], [1.0])
    n = len(labels)
    test = SplitView(
        images, labels, np.array([f"x{i}" for i in range(n)]), pd.DataFrame(index=range(n)), None
    )
    return ProbeContext(
        model=adapter,
        test=test,
        classes=["a", "b"],
        device=torch.device("cpu"),
        seed=0,
        batch_size=64,
        robustness=config.robustness,
    )


def test_minimal_perturbation_of_a_linear_model_matches_the_exact_answer():
    # For logits W x + b with two classes, the smallest L∞ change that flips x is
    # |d(x)| / ||w_1 - w_0||_1 with d(x) = (w_1 - w_0)·x + (b_1 - b_0) (box constraints
    # permitting: pixels stay near 0.5 here, far from 0 and 1).
    config = load_config(None, {"robustness": {"min_eps_iterations": 12}})
    rng = np.random.default_rng(0)
    d = 16
    weights = torch.tensor(rng.normal(size=(2, d)), dtype=torch.float32)
    bias = torch.tensor([0.0, 0.0])
    pixels = rng.integers(110, 146, size=(40, 1, 4, 4)).astype(np.uint8)
    x = torch.from_numpy(pixels).float().flatten(1) / 255
    w_diff = weights[1] - weights[0]
    decision = x @ w_diff
    labels = (decision > 0).long().numpy()
    exact = (decision.abs() / w_diff.abs().sum()).numpy()
    ctx = _linear_context(weights, bias, pixels, labels, config)
    runner = AttackRunner(ctx, np.arange(len(labels)))
    estimate, upper = runner.minimal_eps(np.arange(len(labels)), 0.5)
    tolerance = 0.5 / 2**12
    flippable = exact < 0.15  # clipping to [0, 1] cannot bind below 110/255 - 0.15
    assert flippable.sum() >= 20
    assert np.all(np.abs(estimate[flippable] - exact[flippable]) <= tolerance + 1e-5)
    assert np.all(upper[flippable] >= exact[flippable] - 1e-5)


class Rounding(nn.Module):
    """Quantises the input: its gradient is zero almost everywhere (shattered gradients)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(torch.round(x * 4) / 4)


class Saturated(nn.Module):
    """Logits scaled ×1000: cross-entropy saturates, its gradient underflows to zero."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x) * 1000.0


class AlwaysDropout(nn.Module):
    """Dropout forced on in eval mode: a randomised model."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(nn.functional.dropout(x, p=0.3, training=True))


def _failed(result: dict) -> set[str]:
    return {
        k.split(".")[-1]
        for k, v in result["metrics"].items()
        if k.startswith("robustness.check.") and v == 0.0
    }


def test_rounding_input_is_never_reported_as_reliably_robust(trained, normal):
    config, data, prepared = trained
    masked = _audit(config, data, Rounding(prepared.adapter.net), prepared.spec["normalization"])
    reliable = masked["metrics"]["robustness.reliable"] == 1.0
    worst = masked["metrics"]["robustness.worst@0.1.accuracy"]
    assert not reliable or abs(worst - normal["metrics"]["robustness.worst@0.1.accuracy"]) < 0.1
    assert not reliable, "gradient masking by rounding went unnoticed"
    assert "gradients_nonzero" in _failed(masked)
    assert any(
        f["severity"] == "error" and "UNRELIABLE" in f["message"] for f in masked["findings"]
    )


def test_saturated_softmax_is_caught_or_measured_correctly(trained, normal):
    config, data, prepared = trained
    masked = _audit(config, data, Saturated(prepared.adapter.net), prepared.spec["normalization"])
    reliable = masked["metrics"]["robustness.reliable"] == 1.0
    worst = masked["metrics"]["robustness.worst@0.1.accuracy"]
    unmasked = normal["metrics"]["robustness.worst@0.1.accuracy"]
    # Either the verdict says unreliable, or the worst case over the attacks (APGD-DLR and
    # Square are scale-invariant) still measures the true robust accuracy.
    assert not reliable or abs(worst - unmasked) <= 0.05
    if not reliable:
        assert _failed(masked) & {
            "gradients_nonzero",
            "dlr_agrees_with_ce",
            "pgd_beats_fgsm",
            "black_box_not_stronger",
        }


def test_a_randomised_model_is_caught_by_the_repeated_forward_check(trained):
    config, data, prepared = trained
    random = _audit(
        config, data, AlwaysDropout(prepared.adapter.net), prepared.spec["normalization"]
    )
    assert random["metrics"]["robustness.reliable"] == 0.0
    assert "deterministic_forward" in _failed(random)


def test_a_softmax_output_gets_a_finding(trained):
    config, data, prepared = trained
    net = nn.Sequential(prepared.adapter.net, nn.Softmax(dim=1))
    result = _audit(config, data, net, prepared.spec["normalization"])
    assert any("outputs are probabilities" in f["message"] for f in result["findings"])


ROUNDING_FACTORY = textwrap.dedent("""
    import torch
    import torch.nn as nn
    from auditclf.models.zoo import BasicCNN

    class Rounded(nn.Module):
        def __init__(self, in_channels, num_classes, input_size):
            super().__init__()
            self.net = BasicCNN(in_channels, num_classes, tuple(input_size))

        def forward(self, x):
            return self.net(torch.round(x * 4) / 4)

    def rounded(in_channels, num_classes, input_size):
        return Rounded(in_channels, num_classes, input_size)
""")


def test_gate_on_an_unreliable_robustness_number_exits_5(trained, tmp_path, fast_config):
    _, _, prepared = trained
    factory = tmp_path / "masked.py"
    factory.write_text(ROUNDING_FACTORY)
    weights = tmp_path / "masked.pt"
    torch.save({f"net.{k}": v for k, v in prepared.adapter.net.state_dict().items()}, weights)
    result = cli(
        "run",
        "--config",
        fast_config,
        "--model",
        f"{factory}:rounded",
        "--checkpoint",
        weights,
        "--harden",
        "none",
        "--gate",
        "robustness.pgd_linf@0.1.accuracy>=0.0",
        "--out",
        tmp_path / "out",
        "--quiet",
    )
    assert result.status == 5, result
    assert "verdict: UNRELIABLE — 1 of 1 gate reads a robustness" in result.out
    # the report, the summary, the CLI line and junit.xml name the same failed checks
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    metrics = report["models"]["baseline"]["metrics"]
    passed, failed = check_outcomes(metrics)
    assert failed and "gradients_nonzero" in failed
    section = next(s for s in report["models"]["baseline"]["sections"] if s["name"] == "robustness")
    rows = section["tables"]["checks"]["rows"]
    assert [row[0] for row in rows if row[1] != "pass"] == failed
    assert len(rows) == len(passed) + len(failed)
    assert f"{len(passed)} of {len(rows)} sanity checks passed" in section["headline"]
    findings = report["models"]["baseline"]["findings"]
    message = next(f["message"] for f in findings if "UNRELIABLE" in f["message"])
    assert [row[0] for row in rows if f"{row[0]} (" in message] == failed
    sentence = f"{len(failed)} of {len(rows)} sanity checks failed ({', '.join(failed)})"
    assert sentence in result.out
    assert sentence in (out / "summary.md").read_text().replace("\\_", "_")  # Markdown escapes
    junit = ET.parse(out / "junit.xml").getroot()
    failing = [
        case.get("name")
        for case in junit.iter("testcase")
        if case.get("classname") == "auditclf.sanity.baseline" and case.find("failure") is not None
    ]
    assert failing == failed


def test_a_weak_large_eps_probe_is_not_taken_for_masking(trained, monkeypatch):
    """An honest model whose chance-level probe is weaker than its small-eps attack (here the
    PGD-L∞ probe at the large eps does not move the image at all, as a too-large step can
    fail on a deep network) is reported reliable: an image fooled at a smaller eps counts
    as fooled at every larger one, and the large eps attacks only the survivors."""
    config, data, prepared = trained
    build = PgdLinf.build

    def weak_at_large_eps(self, model, eps, cfg, *, seed, steps):
        if eps >= 0.5:  # a probe that goes nowhere: no random start, no step
            return torchattacks.PGD(model, eps=eps, alpha=0.0, steps=1, random_start=False)
        return build(self, model, eps, cfg, seed=seed, steps=steps)

    monkeypatch.setattr(PgdLinf, "build", weak_at_large_eps)
    cheap = config.model_copy(
        update={
            "robustness": config.robustness.model_copy(
                update={"attacks": ["fgsm", "pgd_linf"], "samples": 60}
            )
        }
    )
    weak = _audit(cheap, data, prepared.adapter.net, prepared.spec["normalization"])
    metrics, table = weak["metrics"], weak["table"]
    assert metrics["robustness.reliable"] == 1.0, _failed(weak)
    # the probe alone, run on every attacked image, leaves them as they were (far above
    # chance: the old per-eps check called this masking) ...
    attacked = np.flatnonzero(table["attacked"].to_numpy() == 1)
    ctx = ProbeContext(
        model=prepared.adapter.eval(),
        test=data.view("test"),
        classes=data.classes,
        device=torch.device("cpu"),
        seed=0,
        batch_size=64,
        robustness=cheap.robustness,
    )
    raw = AttackRunner(ctx, attacked).run("pgd_linf", "0.5")
    clean = table["pred"].to_numpy()[attacked]
    assert (raw["pred"] == clean).all()
    # ... and the curve still never rises with eps
    accuracies = [metrics[f"robustness.pgd_linf@{e}.accuracy"] for e in ("0.1", "0.3", "0.5")]
    assert accuracies == sorted(accuracies, reverse=True)
    assert metrics["robustness.pgd_linf@0.5.accuracy"] <= 0.1 + 0.02


def test_square_and_bisection_subsets_cover_every_class_of_sorted_data():
    config = load_config(None, {})
    labels = np.repeat(np.arange(10), 30)  # stored sorted by class, as mnist5k is
    images = np.zeros((len(labels), 1, 4, 4), dtype=np.uint8)
    test = SplitView(
        images,
        labels,
        np.array([f"x{i}" for i in range(len(labels))]),
        pd.DataFrame(index=range(len(labels))),
        None,
    )
    ctx = ProbeContext(
        model=ModelAdapter(nn.Sequential(nn.Flatten(), nn.Linear(16, 10)), [0.0], [1.0]),
        test=test,
        classes=[str(c) for c in range(10)],
        device=torch.device("cpu"),
        seed=0,
        batch_size=64,
        robustness=config.robustness,
    )
    runner = AttackRunner(ctx, np.arange(len(labels)))
    rows = runner.stratified_rows(100)
    assert len(rows) == 100 and np.all(np.diff(rows) > 0)
    assert np.bincount(labels[rows], minlength=10).tolist() == [10] * 10
    assert len(runner.stratified_rows(5)) == 5  # fewer rows than classes still works


def test_old_tables_are_made_monotone_and_large_eps_needs_an_linf_attack_there():
    """A samples.csv saved before the survivors-only probe (no `.ran` columns) is read as
    the probe writes them now: an image wrong at a smaller eps stays wrong at the larger
    ones. The large-eps check runs only where an L∞ attack ran at the large eps."""
    from auditclf.analyses.robustness import attack_columns, monotone, sanity_checks

    table = pd.DataFrame(
        {
            "label": [0, 1, 2, 3],
            "pred": [0, 1, 2, 3],
            "attacked": [1, 1, 1, 1],
            "adv.pgd_linf@0.1.pred": [1.0, 1, 2, 3],  # image 0 fooled at 0.1 ...
            "adv.pgd_linf@0.1.valid": [1.0, 1, 1, 1],
            "adv.pgd_linf@0.5.pred": [0.0, 0, 0, 0],  # ... "recovers" at 0.5 in an old run
            "adv.pgd_linf@0.5.valid": [1.0, 1, 1, 1],
            "adv.pgd_l2@0.5.pred": [1.0, 0, 0, 0],
            "adv.pgd_l2@0.5.valid": [1.0, 1, 1, 1],
        }
    )
    grid = attack_columns(table)
    made = monotone(table, grid)
    assert made["adv.pgd_linf@0.5.pred"].tolist() == [1, 0, 0, 0]
    assert monotone(made.assign(**{"adv.pgd_linf@0.5.ran": 1.0}), grid).equals(
        made.assign(**{"adv.pgd_linf@0.5.ran": 1.0})
    )
    names = {c.name for c in sanity_checks(made, grid, 4, {"large_eps": "0.5"})}
    assert "large_eps_reaches_chance" in names
    l2_only = made.drop(columns=[c for c in made if c.startswith("adv.pgd_linf")])
    names = {
        c.name for c in sanity_checks(l2_only, attack_columns(l2_only), 4, {"large_eps": "0.5"})
    }
    assert "large_eps_reaches_chance" not in names  # 0.5 is an L2 radius there, not L∞
