"""The Python API: `from auditclf import audit`, and what its result offers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import auditclf
from auditclf import audit
from auditclf.errors import UsageError
from auditclf.results import AuditResult

# Clean metrics only: no attacks, hardening, attributions or subgroups (seconds, not minutes).
CLEAN_ONLY = {
    "robustness": {"enabled": False},
    "explain": {"enabled": False},
    "harden": {"method": "none"},
    "fairness": {"enabled": False},
    "corruptions": {"enabled": False},
    "analyses": {"bootstrap": 20},
}
REPORT_FILES = {
    "report.html",
    "report.json",
    "samples.csv",
    "junit.xml",
    "summary.md",
    "model_card.md",
}


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)
    )


def test_importing_auditclf_stays_cheap():
    code = "import sys, auditclf; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_results_import_no_renderer_and_the_report_no_model_code():
    code = (
        "import sys; from auditclf.results import AuditResult; "
        "assert not [m for m in sys.modules if m.startswith('auditclf.report')]; "
        "assert not [a for a in ('save', 'to_html', '_repr_html_') if hasattr(AuditResult, a)]; "
        "import auditclf.report; banned = ('auditclf.models', 'auditclf.probes'); "
        "assert not [m for m in sys.modules if m.startswith(banned)]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_audit_an_in_memory_module(tmp_path):
    net = _tiny_net()
    net.train()
    weights = [p.detach().clone() for p in net.parameters()]
    result = audit(net, "digits", CLEAN_ONLY, seed=0, gates=["performance.accuracy >= 0"])
    assert isinstance(result.result, AuditResult) and result.verdict == "pass"
    assert net.training and all(
        torch.equal(a, b) for a, b in zip(weights, net.parameters(), strict=True)
    )
    assert 0 <= result.metrics["performance.accuracy"] <= 1
    assert result.models["baseline"].card["architecture"] == "Sequential"
    assert "in-memory Sequential" in result.models["baseline"].card["source"]
    assert json.loads(result.to_json())["models"]["baseline"]["metrics"] == result.metrics
    assert result.to_html().startswith("<!DOCTYPE html>")

    written = result.save(tmp_path / "out")
    assert {p.name for p in written} == REPORT_FILES  # nothing trained: no weights
    assert not list((tmp_path / "out").glob(".staging-*"))

    summary = result._repr_html_()
    assert "pass" in summary and "performance.accuracy" in summary
    assert "<img" not in summary and len(summary) < 20_000  # compact, not the whole report


def test_audit_a_checkpoint_with_dotted_overrides(digits_run, fast_config, tmp_path):
    result = audit(
        digits_run / "model.safetensors",
        config=fast_config,
        **{
            f"{section}.{key}": value
            for section, body in CLEAN_ONLY.items()
            for key, value in body.items()
        },
    )
    before = json.loads((digits_run / "report.json").read_text())["models"]["baseline"]
    assert result.metrics["performance.accuracy"] == before["metrics"]["performance.accuracy"]
    assert result.models["baseline"].card["weights_sha256"] == before["card"]["weights_sha256"]


def test_bad_arguments_are_usage_errors():
    with pytest.raises(UsageError, match="model must be None, a checkpoint path"):
        audit(model=3)
    with pytest.raises(UsageError, match="either as an nn.Module or as model.checkpoint"):
        audit(_tiny_net(), "digits", {"model": {"checkpoint": "m.safetensors"}})
    with pytest.raises(UsageError, match="train.epochs"):
        audit(None, "digits", train={"epochs": "many"})
    with pytest.raises(UsageError, match="config must be"):
        audit(None, "digits", config=3)


def test_the_package_exposes_audit_lazily():
    assert auditclf.audit is audit
    with pytest.raises(AttributeError):
        auditclf.no_such_name  # noqa: B018
