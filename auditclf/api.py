"""The Python API: ``from auditclf import audit``.

``auditclf run`` is a thin layer over :func:`audit`: the same config, the same
pipeline, the same writers. Torch and the engines are imported when
:func:`audit` is called, not when ``auditclf`` is imported.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from auditclf.config import AuditConfig, _merge, load_config
from auditclf.errors import UsageError
from auditclf.results import AuditResult


def _nested(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"train.epochs": 2, "seed": 1}`` → ``{"train": {"epochs": 2}, "seed": 1}``."""
    nested: dict[str, Any] = {}
    for name, value in overrides.items():
        *sections, key = name.split(".")
        node = {key: value}
        for section in reversed(sections):
            node = {section: node}
        nested = _merge(nested, node)
    return nested


def resolve_config(
    config: AuditConfig | dict | str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
) -> AuditConfig:
    """A config from defaults, a dict, a YAML path or an ``AuditConfig``, plus overrides."""
    extra = _nested(overrides or {})
    if isinstance(config, AuditConfig):
        return load_config(None, _merge(config.model_dump(mode="json"), extra))
    if isinstance(config, (str, os.PathLike)):
        return load_config(Path(config), extra)
    if config is None or isinstance(config, dict):
        return load_config(None, _merge(config or {}, extra))
    raise UsageError(
        f"config must be None, a dict, a YAML path or an AuditConfig, not {type(config).__name__}"
    )


def audit(
    model: Any = None,
    dataset: str | os.PathLike | None = None,
    config: AuditConfig | dict | str | os.PathLike | None = None,
    *,
    progress: bool = False,
    debug: bool = False,
    **overrides: Any,
) -> AuditResult:
    """Audit an image classifier; return its :class:`~auditclf.results.AuditResult`.

    Nothing is written: ``result.save(dir)`` writes what ``auditclf run``
    writes (report.html, report.json, artifacts.npz, samples.csv, junit.xml,
    summary.md and trained weights), ``result.to_html()`` / ``result.to_json()`` give the
    page and the JSON as strings, ``result.metrics`` the baseline model's
    flat metrics, and a notebook shows a compact summary.

    model: None to train ``model.name`` of the config (default the tutorial
        CNN); a checkpoint path (``.safetensors`` or a ``.pt``/``.pth`` state
        dict; a ``model.json`` beside it rebuilds the architecture); or an
        ``nn.Module`` that takes (N, C, H, W) float32 images in [0, 1] and
        returns logits (it is copied, not changed; give
        ``**{"model.mean": [...], "model.std": [...]}`` when it expects
        normalised inputs).
    dataset: a built-in name (``mnist5k``, ``digits``, ``shapes``), an image
        folder or a CSV manifest; None keeps the config's (default ``mnist5k``).
    config: None (defaults), a dict or YAML path in the config file's shape,
        or an ``AuditConfig``.
    overrides: config keys on top of ``config``: sections as dicts
        (``train={"epochs": 2}``), top-level keys (``seed=1``), or dotted
        names (``**{"harden.method": "none"}``).
    progress: per-epoch lines and progress bars on stderr.

    Raises the errors of :mod:`auditclf.errors` (``UsageError``, ``DataError``,
    ``ModelRefused``, ``UnreliableEvaluation``), which the CLI maps to exit codes.
    """
    import torch

    extra = dict(overrides)
    module = None
    if isinstance(model, torch.nn.Module):
        module = model
    elif isinstance(model, (str, os.PathLike)):
        extra["model.checkpoint"] = str(model)
    elif model is not None:
        raise UsageError(
            f"model must be None, a checkpoint path or a torch.nn.Module, not "
            f"{type(model).__name__}"
        )
    if dataset is not None:
        extra["data.dataset"] = str(dataset)
    resolved = resolve_config(config, extra)
    if module is not None and resolved.model.checkpoint is not None:
        raise UsageError("give the model either as an nn.Module or as model.checkpoint, not both")
    return run(resolved, progress=progress, debug=debug, module=module)


def run(
    config: AuditConfig, *, progress: bool = False, debug: bool = False, module: Any = None
) -> AuditResult:
    """Run the pipeline for a resolved config; the result keeps what ``save`` writes."""
    from auditclf.pipeline import run_audit

    outcome = run_audit(config, progress=progress, debug=debug, module=module)
    outcome.result.attach_outputs(outcome.samples, outcome.models)
    return outcome.result
