"""Shared fixtures: tiny, seeded runs reused across tests to keep the suite fast."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from auditclf.cli import run

# A small, fast audit: 8x8 digits, 2 epochs, 200 bootstrap resamples.
FAST_FLAGS = ["--dataset", "digits", "--epochs", "2", "--quiet"]
# Every attack, on few images and queries.
FAST_ROBUSTNESS = """\
robustness:
  samples: 60
  square_samples: 30
  square_queries: 50
  min_eps_samples: 20
  min_eps_iterations: 6
  gallery_per_class: 1
"""
FAST_CONFIG = """\
seed: 0
data:
  dataset: digits
train:
  epochs: 2
analyses:
  bootstrap: 200
""" + FAST_ROBUSTNESS + """\
harden:
  epochs: 1
  steps: 3
explain:
  lime_samples: 50
  correct_per_class: 1
  errors_per_class: 0
"""


# The cheapest audit that still writes a whole report: one epoch, every optional section
# off. Tests of refusals (which must come before any of this) and of output files use it.
MINIMAL_CONFIG = """\
seed: 0
train:
  epochs: 1
analyses:
  bootstrap: 20
robustness:
  enabled: false
harden:
  method: none
explain:
  enabled: false
fairness:
  enabled: false
corruptions:
  enabled: false
"""


class CliResult:
    def __init__(self, status: int, out: str, err: str) -> None:
        self.status, self.out, self.err = status, out, err

    def __repr__(self) -> str:
        return f"CliResult(status={self.status}, err={self.err!r})"


def cli(*argv: str | Path) -> CliResult:
    """Run the CLI in-process and capture its streams."""
    out, err = io.StringIO(), io.StringIO()
    status = run([str(a) for a in argv], stdout=out, stderr=err)
    return CliResult(status, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def fast_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "audit.yaml"
    path.write_text(FAST_CONFIG)
    return path


@pytest.fixture(scope="session")
def clean_config(tmp_path_factory) -> Path:
    """MINIMAL_CONFIG on digits: re-auditing the digits run's checkpoint with it costs one
    evaluation pass (no training, attacks, hardening, attributions or subgroups), for tests
    of exit codes, gates and output files of `auditclf run`."""
    path = tmp_path_factory.mktemp("clean") / "clean.yaml"
    path.write_text(MINIMAL_CONFIG + "data:\n  dataset: digits\n")
    return path


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory, fast_config) -> Path:
    """One finished `auditclf run` on digits; its output folder (read-only by convention)."""
    out = tmp_path_factory.mktemp("digits-run")
    result = cli("run", "--config", fast_config, "--out", out, "--quiet")
    assert result.status == 0, result
    return out


# The digits run's model audited again, retrained with a stronger hardening (L∞ eps 0.3, two
# epochs: costs clean accuracy, buys robust accuracy), with three gates (one passes, one fails,
# one failing warn gate) and --baseline set to the digits run. Two attacks, no attributions
# and no subgroups keep it fast; corruptions as the digits run audits them, so that the
# baseline check compares like with like.
GATED_CONFIG = """\
seed: 0
data:
  dataset: digits
analyses:
  bootstrap: 50
robustness:
  attacks: [fgsm, pgd_linf]
  eps_linf: [0.1, 0.2]
  samples: 60
  min_eps_samples: 0
  gallery_per_class: 0
harden:
  epochs: 2
  steps: 3
  eps: 0.3
fairness:
  enabled: false
explain:
  enabled: false
gates:
  - performance.accuracy >= 0.5
  - performance.accuracy >= 0.99
  - {metric: performance.accuracy, min: 0.95, on: lower_ci, severity: warn}
"""


@pytest.fixture(scope="session")
def gated_run(tmp_path_factory, digits_run) -> Path:
    """A finished, gated `auditclf run` (exit 1: one gate fails); its output folder."""
    folder = tmp_path_factory.mktemp("gated-run")
    config = folder / "gated.yaml"
    config.write_text(GATED_CONFIG)
    out = folder / "out"
    result = cli(
        "run",
        "--config",
        config,
        "--checkpoint",
        digits_run / "model.safetensors",
        "--baseline",
        digits_run / "report.json",
        "--out",
        out,
        "--quiet",
    )
    assert result.status == 1, result
    return out
