"""The Python API: ``from auditclf import audit``, and saving a run's outputs.

``auditclf run`` is a thin layer over :func:`audit`: the same config, the same
pipeline, the same writers. Torch and the engines are imported when
:func:`audit` is called, not when ``auditclf`` is imported.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditclf.config import AuditConfig, _merge, load_config
from auditclf.errors import UsageError
from auditclf.results import AuditResult

if TYPE_CHECKING:
    import pandas as pd

    from auditclf.models import PreparedModel


@dataclass(eq=False)  # a table and live models: compared by identity
class Audit:
    """What :func:`audit` returns: the :class:`~auditclf.results.AuditResult` and the
    run's outputs beside it, which :meth:`save` writes too.

    The result's data and JSON read through: ``audit(...).metrics``, ``.verdict``,
    ``.models``, ``.gates``, ``.to_json()``. ``samples`` is the sample table and
    ``trained`` the models the run trained or retrained (None and empty for a
    report read from disk); ``templates`` is the caller's own config's
    ``report.templates``, never a saved report's; ``exports`` the exported model files
    (``export.formats``), None without.
    """

    result: AuditResult
    samples: pd.DataFrame | None = None
    trained: dict[str, PreparedModel] = field(default_factory=dict)
    templates: Path | None = None
    exports: Any = None  # run --export's files (an ExportFolder), written to OUT/export/

    @classmethod
    def load(cls, path: str | os.PathLike) -> Audit:
        """A saved report.json, to render or save again (its templates are never used)."""
        return cls(AuditResult.load(Path(path)))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # copy/pickle probe dunders before ``result`` is set
            raise AttributeError(name)
        return getattr(self.result, name)

    def to_html(self, *, templates: Path | None = None, title: str | None = None) -> str:
        """The self-contained report page (templates and title default to the run's config)."""
        from auditclf.report import render_html, report_title

        return render_html(
            self.result,
            templates=templates or self.templates,
            title=title or report_title(self.result),
        )

    def save(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write into ``out_dir`` what ``auditclf run`` writes (atomically): the reports
        and, for a run of this process, samples.csv and the trained weights."""
        if self.samples is None:
            from auditclf.report import save_result

            return save_result(self.result, Path(out_dir))
        return write_outputs(self, Path(out_dir))

    def _repr_html_(self) -> str:
        """The compact summary a notebook shows: verdict, gates, key numbers."""
        from auditclf.report import render_summary_html

        return render_summary_html(self.result)


def write_outputs(run: Audit, out_dir: Path) -> list[Path]:
    """Write a run's whole output set into ``out_dir`` as one set; return the files written:
    samples.csv, the weights of every model the run trained, and the report files."""
    from auditclf.evidence import save_samples
    from auditclf.io import EXPORT_FOLDER, StagedOutput
    from auditclf.models import save_model
    from auditclf.report import report_title, write_reports

    staged = StagedOutput(out_dir)
    try:
        save_samples(run.samples, staged.path("samples.csv"))
        for name, prepared in run.trained.items():
            if prepared.needs_training:
                stem = "model" if name == "baseline" else name
                save_model(prepared.adapter.net, prepared.spec, staged.path(f"{stem}.safetensors"))
        if run.exports is not None:  # copied: save() may be called again
            shutil.copytree(run.exports.path, staged.path(EXPORT_FOLDER))
        for path in _audited_checkpoint_inside(run.result, out_dir):
            staged.carry(path)
        write_reports(staged, run.result, templates=run.templates, title=report_title(run.result))
    except BaseException:
        staged.abort()
        raise
    return staged.commit()


def _audited_checkpoint_inside(result: AuditResult, out_dir: Path) -> list[Path]:
    """The checkpoint a run audited (and its sidecar) when it lies in ``out_dir``: the new
    set replaces the folder's whole content, and must not drop the very model it audited
    (``auditclf run --checkpoint audit-report/model.safetensors`` re-audits in place)."""
    checkpoint = result.run.get("config", {}).get("model", {}).get("checkpoint")
    if not checkpoint or Path(checkpoint).resolve().parent != Path(out_dir).resolve():
        return []
    found = [Path(checkpoint), Path(checkpoint).with_suffix(".json")]
    return [path for path in found if path.is_file()]


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
) -> Audit:
    """Audit an image classifier; return the :class:`Audit` (its ``result`` is the
    :class:`~auditclf.results.AuditResult`, whose data reads through).

    Nothing is written: ``run.save(dir)`` writes what ``auditclf run``
    writes (report.html, report.json, artifacts.npz, samples.csv, junit.xml, summary.md and
    trained weights), ``run.to_html()`` / ``run.to_json()`` give the
    page and the JSON as strings, ``run.metrics`` the baseline model's
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
) -> Audit:
    """Run the pipeline for a resolved config; the :class:`Audit` keeps what ``save`` writes."""
    from auditclf.pipeline import run_audit

    outcome = run_audit(config, progress=progress, debug=debug, module=module)
    return Audit(
        outcome.result, outcome.samples, outcome.models, config.report.templates, outcome.exports
    )
