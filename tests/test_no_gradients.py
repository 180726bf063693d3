"""A model without gradients (one that can only be queried, as an ONNX file run by
onnxruntime) is audited by queries only: black-box attacks and LIME run, the white-box
parts are skipped and named with the reason, gates on their keys and retraining are usage
errors, and a model that claims gradients it does not carry is refused, not mis-measured."""

from __future__ import annotations

import json
import re
import textwrap

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from auditclf.config import config_from_dict
from auditclf.dryrun import expected_metric_keys
from auditclf.probes.attributions import randomized_copy
from tests.conftest import cli

# A tiny digits network whose forward runs without autograd: it answers queries only.
NET = """
import torch
from torch import nn


class Queried(nn.Module):
    has_gradients = False

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)
        )

    def forward(self, x):
        with torch.no_grad():
            return self.net(x).detach()


def queried():
    return Queried()


def claims_gradients():
    net = Queried()
    net.has_gradients = True  # the same network, declared (wrongly) to have gradients
    return net
"""

CONFIG = """\
seed: 0
data:
  dataset: digits
analyses:
  bootstrap: 20
harden:
  method: none
robustness:
  attacks: [fgsm, pgd_linf, square]
  samples: 40
  square_samples: 20
  square_queries: 20
  min_eps_samples: 10
  gallery_per_class: 1
explain:
  methods: [gradcam, integrated_gradients, lime]
  lime_samples: 50
  correct_per_class: 1
  errors_per_class: 0
corruptions:
  names: [gaussian_noise]
  severities: [2]
  samples: 40
"""


@pytest.fixture(scope="module")
def model_args(tmp_path_factory) -> list[str]:
    """--config and --checkpoint of the queried network (trained a few steps on every digit,
    so that each class has images right for Square to attack and LIME to explain)."""
    folder = tmp_path_factory.mktemp("no-gradients")
    (folder / "net.py").write_text(textwrap.dedent(NET))
    (folder / "audit.yaml").write_text(CONFIG)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)
    )
    digits = load_digits()
    x = torch.tensor(digits.images[:, None] / 16, dtype=torch.float32)
    y = torch.tensor(digits.target)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(60):  # a few full-batch steps: every class mostly right
        optimiser.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimiser.step()
    torch.save({f"net.{k}": v for k, v in net.state_dict().items()}, folder / "net.pt")
    return ["--config", folder / "audit.yaml", "--checkpoint", folder / "net.pt"]


def _model(model_args: list, factory: str) -> str:
    """--model naming ``factory`` of the network file beside the checkpoint."""
    return f"{model_args[3].parent / 'net.py'}:{factory}"


def _one_line_usage_error(result, *words: str) -> None:
    assert result.status == 2, result
    assert result.err.count("\n") == 1 and "Traceback" not in result.err, result.err
    assert all(word in result.err for word in words), result.err


def test_a_model_without_gradients_is_audited_by_queries_only(model_args, tmp_path):
    out = tmp_path / "out"
    model = _model(model_args, "queried")
    result = cli(
        "run",
        *model_args,
        "--model",
        model,
        "--out",
        out,
        "--quiet",
        "--gate",
        "robustness.reliable>=1",
    )
    assert result.status == 0, result
    report = json.loads((out / "report.json").read_text())
    baseline = report["models"]["baseline"]
    metrics = baseline["metrics"]
    attacked = {m.group(1) for key in metrics if (m := re.match(r"robustness\.(\w+)@", key))}
    assert attacked == {"square", "worst"}
    assert metrics["robustness.reliable"] == 1  # the white-box checks are n/a, not failures
    assert not any("min_eps" in key for key in metrics)
    methods = {key.split(".")[1] for key in metrics if key.startswith("explain.")}
    assert "lime" in methods and not methods & {"gradcam", "integrated_gradients"}
    assert any(key.startswith("corruption.") for key in metrics)
    robustness = next(s for s in baseline["sections"] if s["name"] == "robustness")
    checks = {row[0]: row[1] for row in robustness["tables"]["checks"]["rows"]}
    assert checks["gradients_nonzero"] == checks["loss_rises"] == "n/a"
    assert checks["adversarial_valid"] == checks["deterministic_forward"] == "pass"
    assert "no gradients" in robustness["headline"]
    assert "gallery" not in baseline["artifacts"]
    skipped = {item["section"]: item["reason"] for item in report["limitations"]}
    assert "fgsm, pgd_linf" in skipped["Robustness without gradients"]
    assert "Grad-CAM, Integrated Gradients" in skipped["Explanations without gradients"]
    summary = (out / "summary.md").read_text()
    assert "Skipped (Robustness without gradients)" in summary
    assert "NotApplicable" in (out / "junit.xml").read_text()
    assert any("no gradients" in note for note in baseline["card"]["notes"])
    config = config_from_dict(report["run"]["config"])
    assert expected_metric_keys(config, report["data"], gradients=False) == set(metrics)


def test_a_model_without_torch_layers_skips_the_randomisation_check():
    """A model run by another runtime has no layer to re-initialise: the check is skipped
    (an unchanged copy would blame the attribution method), not faked."""

    class Weightless(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("w", torch.ones(64, 10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1) @ self.w

    assert randomized_copy(Weightless(), layers=2, seed=0) is None
    assert randomized_copy(nn.Linear(3, 2), layers=2, seed=0) is not None


def test_a_gate_on_a_white_box_key_is_refused_naming_why(model_args, tmp_path):
    model = _model(model_args, "queried")
    gate = "robustness.pgd_linf@0.1.accuracy>=0.5"
    result = cli("run", *model_args, "--model", model, "--out", tmp_path, "--gate", gate)
    _one_line_usage_error(result, "robustness.pgd_linf@0.1.accuracy", "no gradients")
    assert not (tmp_path / "report.json").exists()


def test_retraining_a_model_without_gradients_is_refused(model_args, tmp_path):
    model = _model(model_args, "queried")
    result = cli("run", *model_args, "--model", model, "--out", tmp_path, "--harden", "pgd")
    _one_line_usage_error(result, "harden.method pgd", "no gradients")


def test_a_model_that_claims_gradients_it_lacks_is_refused(model_args, tmp_path):
    model = _model(model_args, "claims_gradients")
    result = cli("run", *model_args, "--model", model, "--out", tmp_path)
    assert result.status == 4, result
    assert result.err.count("\n") == 1 and "Traceback" not in result.err, result.err
    assert "carries no gradient" in result.err
