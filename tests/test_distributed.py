"""torchrun: the same audit in 2 CPU processes (gloo) gives the one-process numbers exactly."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed

from auditclf import distributed
from auditclf.config import load_config
from auditclf.errors import RankFailed, UsageError
from auditclf.io import check_out_folder
from auditclf.launch import _agreed_status, without_nproc
from auditclf.preflight import preflight
from tests.conftest import MINIMAL_CONFIG, cli

ROOT = Path(__file__).resolve().parents[1]

# every probe: the clean pass, the attacks (all of them, the bisection, the gallery), the
# explanations, the fairness analyses (digits' stroke groups) and the corruptions
SHARDED_CONFIG = """\
seed: 0
threads: 1
data:
  dataset: digits
analyses:
  bootstrap: 50
robustness:
  samples: 30
  square_samples: 10
  square_queries: 20
  min_eps_samples: 10
  min_eps_iterations: 3
  gallery_per_class: 1
explain:
  lime_samples: 20
  correct_per_class: 1
  errors_per_class: 0
harden:
  method: none
corruptions:
  samples: 30
  names: [contrast, jpeg]
"""

# a model that fails on the second process only, in the clean probe's passes (32 images,
# FixedChunks) and not in the model's check at loading, nor in training
FLAKY_MODEL = """\
import os

import torch.nn as nn


class Flaky(nn.Module):
    def __init__(self, in_channels, num_classes, input_size):
        super().__init__()
        size = in_channels * input_size[0] * input_size[1]
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(size, num_classes))

    def forward(self, x):
        if not self.training and os.environ.get("RANK") == "1" and len(x) == 32:
            raise RuntimeError("sensor fault on this process")
        return self.net(x)


def build(in_channels, num_classes, input_size):
    return Flaky(in_channels, num_classes, input_size)
"""

GLOO = pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available in this torch build",
)


def test_single_process_is_untouched():
    """Outside torchrun: rank 0 of 1, each step's work run directly on all the rows."""
    rows = np.arange(7)
    assert (distributed.rank(), distributed.world(), distributed.is_main()) == (0, 1, True)
    assert distributed.shard(rows) is rows
    part = {"pred": rows}
    assert distributed.map_rows(rows, lambda share: part if share is rows else None) is part
    assert distributed.main_only(lambda: 5) == distributed.together(lambda: 5) == 5
    with pytest.raises(SystemExit) as ended:
        distributed.exit_all(3)
    assert ended.value.code == 3


def test_nproc_hands_the_rest_of_the_command_line_on():
    argv = ["run", "--nproc", "2", "--quiet", "--nproc=3", "--out", "x"]
    assert without_nproc(argv) == ["run", "--quiet", "--out", "x"]


def test_a_process_killed_by_a_signal_is_one_line_and_exit_6():
    """The launcher's status: rank 0's own when it has one, else the first rank's; a run
    whose failed processes all died by a signal exits 6 saying which."""
    failure = namedtuple("failure", "exitcode")
    err = io.StringIO()
    assert _agreed_status({1: failure(4), 0: failure(-15)}, 2, err) == 4
    assert _agreed_status({1: failure(4), 0: failure(1)}, 2, err) == 1
    assert err.getvalue() == ""
    assert _agreed_status({1: failure(-9)}, 2, err) == 6
    assert err.getvalue() == (
        "auditclf: error: process 1 of 2 was killed by signal 9; no report was written\n"
    )


@GLOO
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
    metrics = first["models"]["baseline"]["metrics"]
    for section in ("robustness.", "explain.", "fairness.", "corruption."):
        assert any(key.startswith(section) for key in metrics), section
    assert (one / "samples.csv").read_text() == (two / "samples.csv").read_text()
    assert first["run"]["distributed"] == {"world_size": 1, "backend": None}
    spread = second["run"]["distributed"]
    assert (spread["world_size"], spread["backend"]) == (2, "gloo")
    assert spread["meetings"] > 10 and spread["meeting_seconds"] >= 0  # every probe's gathers
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())

    streams = {p.parent.name + "/" + p.name: p.read_text() for p in logs.rglob("std*.log")}
    assert len(streams) == 4, sorted(streams)  # stdout and stderr of ranks 0 and 1
    assert "report:" in streams["0/stdout.log"]
    assert streams["1/stdout.log"] == streams["1/stderr.log"] == ""


@GLOO
def test_a_process_failing_on_its_share_fails_every_process_once(tmp_path, digits_run):
    """`run --nproc 2` where the second process's model raises in the clean probe: the
    failure reaches every process (exit 4, the model's), one line names the process, and
    the previous report in --out is untouched."""
    (tmp_path / "flaky.py").write_text(FLAKY_MODEL)
    config = tmp_path / "flaky.yaml"
    config.write_text(MINIMAL_CONFIG + "threads: 1\ndata:\n  dataset: digits\n")
    out = tmp_path / "out"
    shutil.copytree(digits_run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "auditclf", "run", "--config", str(config), "--nproc", "2"]
        + ["--model", f"{tmp_path / 'flaky.py'}:build", "--out", str(out), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 4, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("auditclf: error: process 1 of 2: model ")
    assert "sensor fault on this process" in lines[0]
    assert done.stdout == ""
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


class _Ended(Exception):
    """os._exit, caught: the status a process would have ended with."""


def _two_ranks(monkeypatch, rank: int) -> list[str]:
    """This process as rank ``rank`` of 2 with a running group whose collectives are only
    recorded (names, in order) and leave their arguments as they are; os._exit raises."""
    called: list[str] = []
    for state, value in (("_broken", False), ("_unshared", False), ("_stranded", None)):
        monkeypatch.setattr(distributed, state, value)  # restored after the test
    monkeypatch.setattr(distributed, "_met", [0, 0.0])
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed, "active", lambda: True)
    for name in ("broadcast_object_list", "all_gather_object", "destroy_process_group"):
        monkeypatch.setattr(torch.distributed, name, lambda *a, n=name, **k: called.append(n))

    def ended(status: int) -> None:
        raise _Ended(status)

    monkeypatch.setattr(os, "_exit", ended)
    return called


@pytest.mark.parametrize("rank", [0, 1])
def test_a_failure_the_others_did_not_hear_of_ends_its_process_at_once(monkeypatch, rank):
    """Rank 0 failing on its own (in DDP training, writing the outputs) must not wait at a
    broadcast the others, inside a collective of their own, would meet out of step."""
    called = _two_ranks(monkeypatch, rank)
    distributed.note_failure(ValueError("on this rank only"))
    assert distributed.unshared()
    with pytest.raises(_Ended) as ended:
        distributed.exit_all(3)
    assert ended.value.args == (3,) and called == []
    distributed.note_failure(RankFailed("process 1 of 2: heard by all", 3))
    assert not distributed.unshared()
    with pytest.raises(_Ended):
        distributed.exit_all(0)
    assert called == ["broadcast_object_list", "destroy_process_group"]


def _same_everywhere(parts: list, part) -> None:
    """all_gather_object where every rank sent what this one did."""
    parts[:] = [part] * len(parts)


def test_a_mistake_every_process_makes_is_shared_not_printed_by_each(monkeypatch, tmp_path):
    """A gate on no metric, or a checkpoint refused, fails every process alike: it reaches
    them as one failure of the run (RankFailed, which rank 0 alone prints), not as one
    error per process (each would print its own line)."""
    from auditclf.config import load_config
    from auditclf.pipeline import run_audit, train_model

    _two_ranks(monkeypatch, 1)
    monkeypatch.setattr(torch.distributed, "all_gather_object", _same_everywhere)
    digits = {"data": {"dataset": "digits"}, "threads": 1}
    gated = load_config(None, {**digits, "gates": ["performance.acuracy >= 0.5"]})
    with pytest.raises(RankFailed) as failed:
        run_audit(gated, progress=False)
    assert failed.value.status == 2 and "process 1 of 2: " in str(failed.value)
    (tmp_path / "model.safetensors").write_bytes(b"not a checkpoint")
    broken = load_config(None, {**digits, "model": {"checkpoint": tmp_path / "model.safetensors"}})
    with pytest.raises(RankFailed) as failed:
        train_model(broken, progress=False)
    assert failed.value.status == 4


def test_the_passes_reported_are_the_smallest_any_process_ran(monkeypatch):
    """A GPU out of memory on rank 1 halves its passes: the report (rank 0's) says so."""
    from auditclf.probes.base import PassSizes

    _two_ranks(monkeypatch, 0)
    monkeypatch.setattr(
        torch.distributed,
        "all_gather_object",
        lambda parts, part: parts.__setitem__(slice(None), [part, (32, 8, 2)]),
    )
    ran = PassSizes(block=128, chunk=16).record()
    assert ran == {"batch_size": 32, "forward_chunk": 8, "halvings": 2}


class _Store:
    """The process group's store, in memory (what torchrun's TCPStore does with keys)."""

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}

    def set(self, key: str, value: str) -> None:
        self.keys[key] = value.encode()

    def get(self, key: str) -> bytes:
        return self.keys[key]

    def check(self, keys: list[str]) -> bool:
        return all(key in self.keys for key in keys)

    def compare_set(self, key: str, expected: str, desired: str) -> bytes:
        if self.keys.get(key, b"").decode() == expected:
            self.keys[key] = desired.encode()
        return self.keys[key]


def test_a_failure_inside_data_parallel_training_is_told_once_and_at_once(monkeypatch):
    """Rank 1's batch fails while rank 0 is inside DDP's all-reduce: rank 1 must not wait
    at the next meeting (rank 0 would wait out the timeout, and the error be lost); it
    prints its error and ends with its status, and rank 0, whose collective then breaks,
    ends with the same status and prints nothing."""
    from auditclf.errors import DataError

    store = _Store()
    monkeypatch.setattr(distributed, "_store", lambda: store)
    _two_ranks(monkeypatch, 1)

    def batch_fails() -> None:
        with distributed.failing_alone():
            raise DataError("images/7.png: not an image")

    with pytest.raises(DataError) as failed:
        distributed.together(batch_fails)  # not shared at together's meeting
    distributed.note_failure(failed.value)
    assert distributed.unshared()

    monkeypatch.setenv("RANK", "0")
    with pytest.raises(RankFailed) as broke, distributed.failing_alone():
        raise RuntimeError("Connection closed by peer")
    assert broke.value.told and broke.value.status == 3
    assert str(broke.value) == "process 1 of 2: images/7.png: not an image"

    def peer_gone(tensor) -> None:
        raise RuntimeError("Connection closed by peer")

    monkeypatch.setattr(torch.distributed, "all_reduce", peer_gone)
    with pytest.raises(RankFailed) as broke:  # or the meeting it was waiting at breaks
        distributed.sum_all(torch.zeros(2))
    assert broke.value.told and broke.value.status == 3


def test_a_failure_told_where_it_happened_is_not_printed_again(monkeypatch):
    from auditclf import cli as cli_module

    def told(args, out) -> int:
        raise RankFailed("process 1 of 2: images/7.png: not an image", 3, told=True)

    monkeypatch.setitem(cli_module.COMMANDS, "list", told)
    err = io.StringIO()
    assert cli_module.run(["list"], stdout=io.StringIO(), stderr=err) == 3
    assert err.getvalue() == ""


def test_work_on_no_rows_anywhere_fails_as_one(monkeypatch):
    """No process has a row: each runs the work on none, and a failure there (every
    process alike) is shared, printed by rank 0 alone, not by each."""
    _two_ranks(monkeypatch, 1)
    monkeypatch.setattr(torch.distributed, "all_gather_object", _same_everywhere)

    def no_rows(rows: np.ndarray) -> np.ndarray:
        raise ValueError(f"nothing to concatenate in {len(rows)} rows")

    with pytest.raises(RankFailed) as failed:
        distributed.map_rows(np.arange(0), no_rows)
    assert str(failed.value) == (
        "process 1 of 2: internal error: ValueError: nothing to concatenate in 0 rows"
    )
    assert distributed.map_rows(np.arange(0), lambda rows: rows * 2).shape == (0,)


def test_ctrl_c_under_nproc_is_one_line_and_exit_130(monkeypatch):
    """`run --nproc`: the launcher stopped by Ctrl-C (torch raises its SignalException)
    says "interrupted" once, exit 130; the processes it started say nothing."""
    import signal

    import torch.distributed.launcher.api as launcher
    from torch.distributed.elastic.multiprocessing.api import SignalException

    from auditclf import cli as cli_module
    from auditclf.launch import LAUNCHED, launch

    seen = []

    def stopped(config, entrypoint):
        def start(*argv):
            seen.append(os.environ.get(LAUNCHED))
            raise SignalException("got signal: 2", signal.SIGINT)

        return start

    monkeypatch.delenv(LAUNCHED, raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(launcher, "elastic_launch", stopped)
    with pytest.raises(KeyboardInterrupt):
        launch(2, ["run"], io.StringIO())
    assert seen == ["1"] and LAUNCHED not in os.environ

    def interrupted(args, out) -> int:
        raise KeyboardInterrupt

    monkeypatch.setitem(cli_module.COMMANDS, "list", interrupted)
    err = io.StringIO()
    assert cli_module.run(["list"], stdout=io.StringIO(), stderr=err) == 130
    assert err.getvalue() == "auditclf: interrupted; no report was written\n"
    monkeypatch.setenv(LAUNCHED, "1")  # a process `run --nproc` started
    assert cli_module.run(["list"], stdout=io.StringIO(), stderr=err) == 130
    assert err.getvalue() == "auditclf: interrupted; no report was written\n"


# a model whose third training step fails on the second process only (its batch, say)
FAILS_IN_TRAINING = FLAKY_MODEL.replace(
    'not self.training and os.environ.get("RANK") == "1" and len(x) == 32',
    'self.training and os.environ.get("RANK") == "1" and next(self.steps) == 2',
).replace(
    "        super().__init__()\n", "        super().__init__()\n        self.steps = count()\n"
)
FAILS_IN_TRAINING = "from itertools import count\n" + FAILS_IN_TRAINING


@GLOO
def test_a_process_failing_in_data_parallel_training_ends_every_process_at_once(tmp_path):
    """`run --nproc 2` training a model whose step fails on the second process while the
    first is in DDP's all-reduce: its error, once, with its status, at once (not after
    distributed.timeout, the error lost)."""
    assert "count()" in FAILS_IN_TRAINING and "self.training and" in FAILS_IN_TRAINING
    (tmp_path / "flaky.py").write_text(FAILS_IN_TRAINING)
    config = tmp_path / "flaky.yaml"
    config.write_text(
        MINIMAL_CONFIG + "threads: 1\ndata:\n  dataset: digits\ndistributed:\n  timeout: 300\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "auditclf", "run", "--config", str(config), "--nproc", "2"]
        + ["--model", f"{tmp_path / 'flaky.py'}:build", "--out", str(tmp_path / "out"), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,  # far below distributed.timeout: no process waited it out
    )
    assert done.returncode == 4, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "sensor fault on this process" in lines[0], done.stderr
    assert not (tmp_path / "out").exists()


def test_rank_0_alone_checks_the_out_folder(monkeypatch, tmp_path, digits_run):
    """Every process runs the preflight, rank 0 alone writes: only it checks --out, and
    another process's writability probe inside --out is no stranger's file."""
    out = tmp_path / "out"
    shutil.copytree(digits_run, out)
    (out / ".auditclf-probe-k2x8q0ab").mkdir()  # another process's probe, caught mid-way
    check_out_folder(out)
    (out / "notes").mkdir()  # a folder auditclf did not write: refused, on rank 0
    config = load_config(None, {"data": {"dataset": "digits"}})
    with pytest.raises(UsageError, match="notes"):
        preflight(config, command="run", out=out)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    preflight(config, command="run", out=out)


def test_a_command_that_is_not_sharded_runs_on_rank_0_alone(monkeypatch, tmp_path):
    """`torchrun ... -m auditclf init` (or report, compare...): the other processes do
    nothing, rank 0 writes the file once."""
    target = tmp_path / "audit.yaml"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert cli("init", "--out", target).status == 0 and not target.exists()
    monkeypatch.setenv("RANK", "0")
    assert cli("init", "--out", target).status == 0 and target.exists()
