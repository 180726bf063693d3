"""How many compute threads a run uses: the CPUs this process may use, or ``--threads``.

``torch`` starts one compute thread per core of the machine, whatever share of it the
process has. On a shared runner (a CPU affinity mask, a container's CPU quota, or other
jobs on the same cores) those threads spin against each other and against the other
processes, and an audit that takes 20 s alone takes many minutes. A run therefore uses
as many threads as the CPUs it may use (:func:`available_cpus`), one inter-op thread,
and idle OpenMP threads that spin only briefly before they sleep
(:func:`short_openmp_waits`, called by :mod:`auditclf.cli` before torch is imported).
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# libgomp's spins before an idle thread sleeps (its default: 300,000; 0 with
# OMP_WAIT_POLICY=PASSIVE). Measured with PGD, APGD and Square on two cores
# (benchmarks/bench_contention.py, the issue-13 note): 1,000 is within 7% of the default
# alone and 2× alone beside one CPU-bound process; PASSIVE is 1.5× slower alone; the
# default collapses beside competitors (the threads wait out each other's spins).
SPIN_COUNT = "1000"
INTEROP_THREADS = 1  # the inter-op pool runs only torch.jit forks; one thread is enough
# cgroup v1 mounts the cpu controller under one of these names
CGROUP_V1_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu", ".")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _ratio(quota: str, period: str) -> int | None:
    """CPUs granted by ``quota`` µs per ``period`` µs, rounded up; None when unlimited
    ("max" or a negative quota) or unreadable."""
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return max(1, math.ceil(quota_us / period_us))


def short_openmp_waits() -> None:
    """Set ``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` unless the user chose a wait policy or
    a spin count; only effective before torch (and its OpenMP runtime) is loaded."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)


def cgroup_cpu_quota(root: Path = CGROUP_ROOT) -> int | None:
    """The CPUs the cgroup quota allows, rounded up (v2 ``cpu.max``, else v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); None when there is no quota."""
    root = Path(root)
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        parts = v2.split()
        return _ratio(parts[0], parts[1]) if len(parts) == 2 else None
    for name in CGROUP_V1_DIRS:
        quota = _read(root / name / "cpu.cfs_quota_us")
        period = _read(root / name / "cpu.cfs_period_us")
        if quota is not None and period is not None:
            return _ratio(quota, period)
    return None


def available_cpus(root: Path = CGROUP_ROOT) -> tuple[int, str]:
    """``(count, source)``: the CPUs this process may use, at least 1.

    The CPUs of its affinity mask, capped by the cgroup CPU quota under ``root``;
    ``source`` names the bound that applied: ``"cpu affinity"`` or ``"cgroup quota"``
    (``"cpu count"`` where the platform has no affinity mask).
    """
    if hasattr(os, "sched_getaffinity"):
        cpus, source = len(os.sched_getaffinity(0)), "cpu affinity"
    else:
        cpus, source = os.cpu_count() or 1, "cpu count"
    quota = cgroup_cpu_quota(root)
    if quota is not None and quota < cpus:
        return quota, "cgroup quota"
    return max(1, cpus), source


def _local_processes() -> int:
    """The processes torchrun started on this machine (``LOCAL_WORLD_SIZE``; 1 outside)."""
    value = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    return int(value) if value.isdigit() else 1


def use_threads(requested: int | None) -> dict:
    """Set torch's compute threads to ``requested`` (``--threads``) or the available CPUs,
    and its inter-op threads to one where that is still allowed → what was set, for the
    run card: ``{"torch_threads", "threads_source", "interop_threads"}``."""
    import torch

    count, source = (requested, "--threads") if requested is not None else available_cpus()
    sharing = _local_processes()
    if requested is None and sharing > 1:  # torchrun: the machine's CPUs split between them
        count, source = max(1, count // sharing), f"{source} / {sharing} processes"
    torch.set_num_threads(count)
    # allowed once per process, before any inter-op work: a second run keeps what runs
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(INTEROP_THREADS)
    return {
        "torch_threads": torch.get_num_threads(),
        "threads_source": source,
        "interop_threads": torch.get_num_interop_threads(),
    }
