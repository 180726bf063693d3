"""Compute threads: the CPUs this process may use (affinity, cgroup quota) or --threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from auditclf.threads import available_cpus, use_threads
from tests.conftest import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def four_cpus(monkeypatch):
    """An affinity mask of four CPUs, whatever the machine running the test has."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, (4, "cpu affinity")),
        ({"cpu.max": "max 100000\n"}, (4, "cpu affinity")),
        ({"cpu.max": "150000 100000\n"}, (2, "cgroup quota")),  # 1.5 CPUs: rounded up
        ({"cpu.max": "10000 100000\n"}, (1, "cgroup quota")),  # at least one
        ({"cpu.max": "800000 100000\n"}, (4, "cpu affinity")),  # the quota exceeds the mask
        ({"cpu.max": "garbage\n"}, (4, "cpu affinity")),
        (
            {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},
            (4, "cpu affinity"),
        ),
        (
            {
                "cpu,cpuacct/cpu.cfs_quota_us": "300000\n",
                "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            },
            (3, "cgroup quota"),
        ),
    ],
)
def test_available_cpus_reads_the_cgroup_quota(tmp_path, four_cpus, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert available_cpus(tmp_path) == expected


def test_use_threads_sets_torch_and_says_why():
    before = torch.get_num_threads()
    try:
        assert use_threads(1) | {"interop_threads": 0} == {
            "torch_threads": 1,
            "threads_source": "--threads",
            "interop_threads": 0,
        }
        assert torch.get_num_threads() == 1
        detected = use_threads(None)
        assert (detected["torch_threads"], detected["threads_source"]) == available_cpus()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("command", ["run", "train", "harden"])
def test_threads_below_one_is_a_usage_error(command):
    result = cli(command, "--threads", "0")
    assert result.status == 2
    assert result.err.count("\n") == 1 and "--threads" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ({}, "1000 unset"),
        ({"OMP_WAIT_POLICY": "ACTIVE"}, "unset ACTIVE"),
        ({"GOMP_SPINCOUNT": "7"}, "7 unset"),
    ],
)
def test_the_cli_shortens_idle_spinning_before_torch_loads(given, kept):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(given)
    code = (
        "import os, sys, auditclf.cli; g = os.environ.get; "
        "print(g('GOMP_SPINCOUNT', 'unset'), g('OMP_WAIT_POLICY', 'unset'), 'torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == [*kept.split(), "False"]


def test_the_run_card_and_report_say_how_many_threads_and_why(digits_run):
    device = json.loads((digits_run / "report.json").read_text())["run"]["device"]
    assert (device["torch_threads"], device["threads_source"]) == available_cpus()
    assert device["interop_threads"] >= 1
    html = (digits_run / "report.html").read_text()
    assert f"{device['torch_threads']} CPU thread(s) (set by {device['threads_source']})" in html
