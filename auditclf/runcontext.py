"""A run's context: its opening (seed, device, the counts the device chose, the data and its
group attributes checked), the timer of its phases, and its card in ``report.json`` (when,
on what device, with which versions, how long each phase took, and the hashes that tie the
report to its data and model).

``auditclf run``, ``train`` and ``harden`` open a run the same way (:func:`open_run`).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata

import torch

from auditclf import __version__, distributed
from auditclf.config import ONNX_MODEL_PREFIX, AuditConfig
from auditclf.data import PreparedData, prepare_data
from auditclf.data.attributes import check_attributes
from auditclf.data.shift import prepare_shift
from auditclf.device_defaults import for_device
from auditclf.errors import UsageError
from auditclf.seeding import seed_everything
from auditclf.threads import use_threads

ENGINES = (
    "torch",
    "torchvision",
    "torchattacks",
    "captum",
    "fairlearn",
    "scikit-learn",
    "numpy",
    "pandas",
    "jinja2",
    "matplotlib",
    "pillow",
)


@dataclass
class PhaseTimer:
    """Wall-clock seconds per named phase of the run, and when the run started."""

    durations: dict[str, float] = field(default_factory=dict)
    started_at: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.durations[name] = self.durations.get(name, 0.0) + time.perf_counter() - started


def resolve_device(name: str) -> torch.device:
    """``auto``, ``cpu`` or ``cuda`` → the device (under torchrun, CUDA is this process's
    ``LOCAL_RANK`` GPU); ``cuda`` without one is a usage error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use auto or cpu)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name, distributed.device_index(name))


def versions() -> dict[str, str]:
    """auditclf's, Python's and every engine's version ("not installed" when absent)."""
    found = {"auditclf": __version__, "python": platform.python_version()}
    for name in ENGINES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def device_info(device: torch.device, threads: dict) -> dict:
    """The device type, CPU threads (how many, and what chose them: ``threads``, as
    :func:`auditclf.threads.use_threads` set them) and platform (and the GPU's name on CUDA)."""
    info = {
        "type": device.type,
        **threads,
        "platform": platform.platform(),
        "processor": platform.machine(),
    }
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
    return info


@dataclass
class RunContext:
    """A run after its opening: the config resolved for the device, the device, the counts
    the device chose, the prepared data, the phase timer (already timing ``data``) and the
    CPU threads it runs (:func:`auditclf.threads.use_threads`)."""

    config: AuditConfig
    device: torch.device
    device_counts: dict[str, int]
    data: PreparedData
    timer: PhaseTimer
    threads: dict


def open_run(config: AuditConfig, *, trains: bool = True, audits: bool = False) -> RunContext:
    """Seed, CPU threads, device and its default counts, the data (with
    ``fairness.metadata``) and the group attributes the run needs, checked before any
    training. ``trains``: see :func:`auditclf.data.prepare_data`; ``audits``: the run audits
    (``auditclf run``), so the shift set (``shift.dataset``) is loaded too."""
    timer = PhaseTimer()
    threads = use_threads(config.threads)  # before any work: inter-op threads are set once
    seed_everything(config.seed)
    device = resolve_device(config.device)
    config, device_counts = for_device(config, device.type)
    with timer.phase("data"):
        data = prepare_data(
            config.data, seed=config.seed, metadata=config.fairness.metadata, trains=trains
        )
        if audits and config.shift.dataset is not None:
            data.shift = prepare_shift(
                config.shift, config.data, data.classes, data.input_shape, seed=config.seed
            )
            data.summary["shift"] = data.shift.summary
    if config.fairness.enabled or config.fairness.rebalance:
        check_attributes(config.fairness, data.summary)
    return RunContext(config, device, device_counts, data, timer, threads)


def trains(config: AuditConfig, module: torch.nn.Module | None = None) -> bool:
    """Whether the run trains anything: a model (no checkpoint, no module given), or a
    hardened or rebalanced copy; a run that trains nothing needs no train split."""
    given = (
        config.model.checkpoint is not None
        or module is not None
        or config.model.name.startswith(ONNX_MODEL_PREFIX)
    )
    return not given or config.harden.method != "none" or bool(config.fairness.rebalance)


def run_card(run: RunContext, *, model_hash: str, unsafe_load: bool) -> dict:
    """``report.json``'s ``run``: config (as resolved for the device), seed, device,
    versions, durations, the counts the device chose, the data and model hashes, and the
    processes the audit was spread over (torchrun's world size and backend)."""
    return {
        "started_at": run.timer.started_at,
        "seed": run.config.seed,
        "device": device_info(run.device, run.threads),
        "versions": versions(),
        "durations": run.timer.durations,
        "config": run.config.model_dump(mode="json"),
        "device_defaults": run.device_counts,
        "data_hash": run.data.summary["hash"],
        "model_hash": model_hash,
        "unsafe_load": unsafe_load,
        "distributed": distributed.card(),
    }
