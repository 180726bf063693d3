"""torchrun: the same audit in 2 CPU processes (gloo) gives the one-process numbers exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed

from auditclf import distributed
from tests.conftest import cli

ROOT = Path(__file__).resolve().parents[1]

# the clean probe over every test image and corruptions on a subset: the two sharded probes
SHARDED_CONFIG = """\
seed: 0
threads: 1
data:
  dataset: digits
analyses:
  bootstrap: 50
robustness:
  enabled: false
explain:
  enabled: false
harden:
  method: none
corruptions:
  samples: 40
  names: [contrast, jpeg]
"""


def test_single_process_is_untouched():
    """Outside torchrun: rank 0 of 1, rows and results passed through as they are."""
    rows = np.arange(7)
    assert (distributed.rank(), distributed.world(), distributed.is_main()) == (0, 1, True)
    assert distributed.shard(rows) is rows
    part = {"pred": rows}
    assert distributed.gather_rows(part) is part
    with pytest.raises(SystemExit) as ended:
        distributed.exit_all(3)
    assert ended.value.code == 3


@pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)
def test_torchrun_two_processes_equal_one(tmp_path, digits_run):
    config = tmp_path / "sharded.yaml"
    config.write_text(SHARDED_CONFIG)
    common = ["run", "--config", str(config), "--checkpoint", str(digits_run / "model.safetensors")]
    one = tmp_path / "one"
    alone = cli(*common, "--out", one, "--quiet")
    assert alone.status == 0, alone

    two, logs = tmp_path / "two", tmp_path / "logs"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launch += ["--nproc-per-node", "2", "--log-dir", str(logs), "--redirects", "3"]
    done = subprocess.run(
        [*launch, "-m", "auditclf", *common, "--out", str(two)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]

    first, second = (json.loads((out / "report.json").read_text()) for out in (one, two))
    assert first["models"]["baseline"]["metrics"] == second["models"]["baseline"]["metrics"]
    assert any(k.startswith("corruption.") for k in first["models"]["baseline"]["metrics"])
    assert (one / "samples.csv").read_text() == (two / "samples.csv").read_text()
    assert first["run"]["distributed"] == {"world_size": 1, "backend": None}
    assert second["run"]["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())

    streams = {p.parent.name + "/" + p.name: p.read_text() for p in logs.rglob("std*.log")}
    assert len(streams) == 4, sorted(streams)  # stdout and stderr of ranks 0 and 1
    assert "report:" in streams["0/stdout.log"]
    assert streams["1/stdout.log"] == streams["1/stderr.log"] == ""
