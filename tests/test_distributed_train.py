"""torchrun: data-parallel training (DDP) in 2 CPU processes (gloo) learns what one process
learns, every rank ends with the same weights, and the batches and augmentations split
the one-process run's exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed

from auditclf import distributed
from auditclf.train.augment import random_affine
from auditclf.train.standard import rank_batches
from tests.conftest import cli

ROOT = Path(__file__).resolve().parents[1]

gloo = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)

# baseline training (3 epochs, early stopping on) and PGD retraining, nothing else probed
TRAIN_CONFIG = """\
seed: 0
threads: 1
data:
  dataset: digits
train:
  epochs: 3
analyses:
  bootstrap: 100
robustness:
  enabled: false
harden:
  method: pgd
  epochs: 1
  steps: 2
explain:
  enabled: false
fairness:
  enabled: false
corruptions:
  enabled: false
"""


def _torchrun(*argv: str, logs: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launch += ["--nproc-per-node", "2", "--log-dir", str(logs), "--redirects", "3"]
    return subprocess.run([*launch, *argv], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("world", [2, 3])
def test_rank_batches_split_the_global_batches(world):
    order = np.random.default_rng(0).permutation(6 * 8 * world + 5)
    alone = rank_batches(order, 8 * world, None)
    ranks = [rank_batches(order, 8 * world, (r, world)) for r in range(world)]
    assert len({tuple(map(len, batches)) for batches in ranks}) == 1  # same steps everywhere
    for k, batch in enumerate(alone[:-1]):
        together = np.empty(len(batch), dtype=order.dtype)
        for r in range(world):
            together[r::world] = ranks[r][k]
        np.testing.assert_array_equal(together, batch)
    last = np.concatenate([batches[-1] for batches in ranks])  # padded with the first ones
    assert set(last) == set(alone[-1]) | set(order[: len(last) - len(alone[-1])])


def test_each_image_gets_its_one_process_augmentation():
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    alone = random_affine(x, torch.Generator().manual_seed(7), hflip=True)
    for r in range(3):
        part = random_affine(x[r::3], torch.Generator().manual_seed(7), hflip=True, share=(r, 3))
        torch.testing.assert_close(part, alone[r::3], rtol=0, atol=1e-6)


@gloo
def test_two_process_training_matches_one(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(TRAIN_CONFIG)
    one, two = tmp_path / "one", tmp_path / "two"
    alone = cli("run", "--config", config, "--out", one, "--quiet")
    assert alone.status == 0, alone
    # the run's training checks that both ranks end with identical weights (else exit 6)
    done = _torchrun(
        "-m",
        "auditclf",
        "run",
        "--config",
        str(config),
        "--out",
        str(two),
        "--quiet",
        logs=tmp_path / "logs",
    )
    assert done.returncode == 0, done.stderr[-2000:]

    first, second = (json.loads((out / "report.json").read_text()) for out in (one, two))
    spread = second["run"]["distributed"]
    assert (spread["world_size"], spread["backend"]) == (2, "gloo")
    for name in ("baseline", "hardened"):
        assert first["models"][name]["training"]["world_size"] == 1
        assert second["models"][name]["training"]["world_size"] == 2
        got = second["models"][name]["metrics"]["performance.accuracy"]
        base = first["models"][name]["metrics"]
        low, high = base["performance.accuracy.ci_low"], base["performance.accuracy.ci_high"]
        assert low <= got <= high, (name, got, low, high)
    training = second["models"]["baseline"]["training"]
    assert 1 <= training["best_epoch"] <= len(training["epochs"]) <= 3


@gloo
def test_ranks_with_different_weights_are_refused(tmp_path):
    """The end-of-training check (what the run above relies on) fails when one rank's
    weights differ, on every rank."""
    done = _torchrun("-m", "tests.test_distributed_train", str(tmp_path), logs=tmp_path / "logs")
    assert done.returncode == 0, done.stderr[-2000:]
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)] == ["same, refused"] * 2


def _check_weights_worker(folder: Path) -> None:
    """Under torchrun: check equal weights, then one rank's changed; write the outcomes."""
    from auditclf.models import ModelAdapter
    from auditclf.train.standard import _check_same_weights

    distributed.init("cpu", timeout=60)
    torch.manual_seed(0)
    adapter = ModelAdapter(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)), mean=[0.0], std=[1.0]
    )
    _check_same_weights(adapter)
    outcomes = ["same"]
    if distributed.rank() == 1:
        with torch.no_grad():
            adapter.net[1].bias.add_(1e-3)
    try:
        _check_same_weights(adapter)
        outcomes.append("passed")
    except RuntimeError:
        outcomes.append("refused")
    (folder / f"rank{distributed.rank()}.txt").write_text(", ".join(outcomes))
    distributed.exit_all(0)


if __name__ == "__main__":
    _check_weights_worker(Path(sys.argv[1]))
