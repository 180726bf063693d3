"""Every path, name and flag of a run, checked before any compute.

``auditclf run | train | harden`` call :func:`preflight` once the config is read,
before torch, captum, torchattacks, fairlearn, scikit-learn or matplotlib are
imported: a typo then costs a fraction of a second, not seconds of imports or
minutes of training. Every mistake is collected and reported at once, one line
each, as one :class:`~auditclf.errors.UsageError` (exit 2). Only ``--device cuda``
imports torch here, as it alone can say whether CUDA is usable.

The loaders keep their own checks (the Python API reaches them without this
module). The built-in dataset and zoo model names come from :mod:`auditclf.catalog`,
which imports nothing heavy (their registries live in modules that import NumPy
and torch).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

from auditclf import catalog, distributed
from auditclf.config import ONNX_MODEL_PREFIX, AuditConfig, DataConfig, ModelConfig
from auditclf.errors import UsageError
from auditclf.io import PROBE_PREFIX, check_out_folder

BUILTIN_DATASETS = catalog.names("dataset")
ZOO_MODELS = catalog.names("model")


def preflight(
    config: AuditConfig,
    *,
    command: str,
    out: Path,
    out_key: str = "out",
    flags: dict[str, str] | None = None,
) -> None:
    """Raise one UsageError listing every mistake a run of ``command`` would meet.

    out: the folder the command writes to (``out_key`` names it in messages);
    flags: the config keys set on the command line, each with its flag
    (``{"train.epochs": "--epochs"}``), so that a flag that would do nothing is
    refused instead of ignored.
    """
    mistakes = [
        *_command_mistakes(config, command),
        *_dataset_mistakes(config.data),
        *_model_mistakes(config.model),
        *_out_mistakes(Path(out), out_key, replaced_by_report=command == "run"),
        *(_run_mistakes(config) if command == "run" else []),
        *_idle_flags(config, command, flags or {}),
        *_device_mistakes(config.device),
    ]
    if mistakes:
        raise UsageError("\n".join(mistakes))


def _command_mistakes(config: AuditConfig, command: str) -> list[str]:
    if command == "train" and config.model.checkpoint is not None:
        return ["auditclf train builds a new model; remove model.checkpoint from the config"]
    if command == "harden" and config.harden.method == "none":
        return ["harden.method is none; choose --method pgd, fgsm-rs or augmix"]
    retrains = config.harden.method != "none" or bool(config.fairness.rebalance)
    retrains = retrains or bool(config.export.formats)  # exporting needs the torch network
    if config.model.name.startswith(ONNX_MODEL_PREFIX) and (
        command in ("train", "harden") or retrains
    ):
        return [
            f"model.name {config.model.name!r}: an ONNX file is audited as it is and cannot "
            "be trained, retrained or exported; use auditclf run with --harden none "
            "(harden.method), no fairness.rebalance and no export.formats"
        ]
    return []


def _dataset_mistakes(cfg: DataConfig, key: str = "data.dataset") -> list[str]:
    """The same verdicts as ``load_imageset`` and the torchvision loaders, without loading
    (``key``: the config key that names the set, for the messages)."""
    name = cfg.dataset
    if name in BUILTIN_DATASETS:
        if not name.startswith("torchvision-"):
            return []
        if cfg.root is None:
            return [f"data.root is required for {name} (a local folder; auditclf never downloads)"]
        if not Path(cfg.root).expanduser().is_dir():
            return [f"{cfg.root}: no such folder (data.root for {name})"]
        return []
    path = Path(name).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix.lower() == ".csv"):
        return []
    if path.exists():
        return [f"{name}: neither a folder nor a .csv manifest ({key})"]
    if path.suffix.lower() == ".csv" or "/" in name or os.sep in name:
        return [f"{name}: no such file or folder ({key})"]
    known = ", ".join(BUILTIN_DATASETS)
    return [f"unknown dataset {name!r}; known: {known}; or give a folder or a .csv manifest"]


def _model_mistakes(cfg: ModelConfig) -> list[str]:
    mistakes = []
    if cfg.checkpoint is not None and not Path(cfg.checkpoint).is_file():
        mistakes.append(f"{cfg.checkpoint}: no such checkpoint file (model.checkpoint)")
    if cfg.weights is not None and not Path(cfg.weights).is_file():
        mistakes.append(f"{cfg.weights}: no such weights file (model.weights)")
    name = cfg.name
    if name.startswith(ONNX_MODEL_PREFIX):
        onnx_file = Path(name[len(ONNX_MODEL_PREFIX) :])
        if not onnx_file.is_file():
            mistakes.append(f"{onnx_file}: no such ONNX file (model.name {name!r})")
        if cfg.checkpoint is not None or cfg.weights is not None:
            mistakes.append(f"model.name {name!r}: an ONNX file takes no checkpoint or weights")
        return mistakes
    if ":" not in name:
        if name not in ZOO_MODELS:
            mistakes.append(
                f"unknown model {name!r}; known: {', '.join(ZOO_MODELS)}; or "
                "package.module:factory or path/to/file.py:factory (model.name)"
            )
        return mistakes
    target, _, attribute = name.rpartition(":")
    if not attribute.isidentifier():
        mistakes.append(f"model.name {name!r}: {attribute!r} is not a function name")
    elif target.endswith(".py"):
        if not Path(target).is_file():
            mistakes.append(f"{target}: no such file (model.name {name!r})")
    elif not _importable(target):
        mistakes.append(f"model.name {name!r}: cannot import {target!r} (no such module)")
    return mistakes


def _importable(module: str) -> bool:
    """Whether the top-level package of ``module`` can be found; nothing is executed."""
    top = module.split(".")[0]
    return top.isidentifier() and importlib.util.find_spec(top) is not None


def _out_mistakes(out: Path, key: str, *, replaced_by_report: bool) -> list[str]:
    """Whether ``out`` is, or can become, a folder this process can write in, and (for a
    report, which replaces the folder's whole set) one that auditclf may take over.

    Nothing is created: the nearest existing folder on the way is probed with a
    temporary folder, removed at once (permission bits, ACLs and read-only mounts
    all show).
    """
    if not distributed.is_main():  # under torchrun rank 0 alone writes (and checks: the
        return []  # processes' probe folders would otherwise meet in the same --out)
    placement = _out_placement_mistakes(out, key)
    if placement or not replaced_by_report:
        return placement
    try:
        check_out_folder(out)
    except UsageError as exc:
        return [str(exc)]
    return []


def _out_placement_mistakes(out: Path, key: str) -> list[str]:
    target = out.absolute()
    for place in (target, *target.parents):
        if place.is_symlink() and not place.exists():
            where = "" if place == target else f"{place} "
            return [f"{out}: {where}is a symlink to a missing target ({key})"]
        if not place.exists():
            continue
        if not place.is_dir():
            if place == target:
                return [f"{out}: exists and is not a folder ({key})"]
            return [f"{out}: cannot be made, {place} is a file ({key})"]
        problem = _unwritable(place)
        return [f"{out}: cannot write in {place} ({problem}) ({key})"] if problem else []
    return []


def _unwritable(folder: Path) -> str | None:
    try:
        Path(tempfile.mkdtemp(prefix=PROBE_PREFIX, dir=folder)).rmdir()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _run_mistakes(config: AuditConfig) -> list[str]:
    """Paths and gates that only ``auditclf run`` reads."""
    from auditclf.compare import load_baseline
    from auditclf.gates import gates_from_config

    mistakes = []
    metadata, templates = config.fairness.metadata, config.report.templates
    if metadata is not None and not Path(metadata).is_file():
        mistakes.append(f"{metadata}: no such metadata file (fairness.metadata)")
    if templates is not None and not Path(templates).is_dir():
        mistakes.append(f"{templates}: no such templates folder (report.templates)")
    shift = config.shift
    if shift.dataset is not None:
        loading = config.data.model_copy(update={"dataset": shift.dataset})
        mistakes += _dataset_mistakes(loading, "shift.dataset")
    if shift.metadata is not None and not Path(shift.metadata).is_file():
        mistakes.append(f"{shift.metadata}: no such metadata file (shift.metadata)")
    regression = config.regression
    for check in (
        lambda: gates_from_config(config.gates),
        lambda: load_baseline(regression.baseline, regression.max_drop, regression.tolerances),
    ):
        try:
            check()
        except UsageError as exc:
            mistakes.extend(str(exc).splitlines())
    return mistakes


def _idle_flags(config: AuditConfig, command: str, flags: dict[str, str]) -> list[str]:
    """A flag given on the command line that this command would not act on."""
    checkpoint = config.model.checkpoint is not None
    builtin = config.data.dataset in BUILTIN_DATASETS
    acts = {
        "model.trust_checkpoint": (checkpoint, "it only acts with --checkpoint"),
        "data.image_size": (
            not builtin,
            "it resizes folder and manifest images; a built-in set keeps its own size",
        ),
    }
    if command == "run":
        retrains = config.fairness.rebalance is not None
        nothing_trained = (
            "--checkpoint is audited as it is and nothing is retrained "
            "(harden.epochs and harden.lr set the hardening)"
        )
        fairness_off = "fairness.enabled is false"
        acts |= {
            "train.epochs": (not checkpoint or retrains, nothing_trained),
            "train.lr": (not checkpoint or retrains, nothing_trained),
            "train.batch_size": (
                not checkpoint or retrains or config.harden.method != "none",
                "--checkpoint is audited as it is and nothing is retrained",
            ),
            "fairness.groups": (config.fairness.enabled, fairness_off),
            "fairness.intersect": (config.fairness.enabled, fairness_off),
            "fairness.min_group_size": (config.fairness.enabled, fairness_off),
            "regression.max_drop": (
                config.regression.baseline is not None,
                "it only acts with --baseline (or regression.baseline)",
            ),
        }
    return [
        f"{flag} does nothing here: {acts[key][1]}"
        for key, flag in flags.items()
        if key in acts and not acts[key][0]
    ]


def _device_mistakes(device: str) -> list[str]:
    if device != "cuda":
        return []
    import torch

    if torch.cuda.is_available():
        return []
    return ["--device cuda: no CUDA device is available (use auto or cpu)"]
