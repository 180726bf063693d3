"""AuditResult: everything a run found, and its JSON form (``report.json``).

NaN is never written as a number: a metric that cannot be computed is
``null`` and its reason is in the model's ``notes``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from auditclf.errors import UsageError

SCHEMA_VERSION = 1
READABLE_VERSIONS = (1,)
VERDICTS = ("pass", "fail", "unreliable", "error")


def _finite(value: Any) -> Any:
    """Replace NaN/inf floats by None, recursively, so the JSON is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _finite(value.item())
    return value


@dataclass
class ModelResult:
    """One audited model (``baseline``, later ``hardened``)."""

    card: dict
    metrics: dict[str, float | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    findings: list[dict] = field(default_factory=list)
    sections: list[dict] = field(default_factory=list)
    training: dict | None = None
    artifacts: dict = field(default_factory=dict)
    # images and maps (name → array): written to artifacts.npz, never into report.json
    arrays: dict = field(default_factory=dict, repr=False)


@dataclass
class AuditResult:
    verdict: str
    run: dict
    data: dict
    models: dict[str, ModelResult]
    gates: list[dict] = field(default_factory=list)
    limitations: list[dict] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    # the array file written beside report.json: {"file": "artifacts.npz", "sha256": ...}
    artifacts: dict | None = None

    # The sample table and trained models of the run that produced this result (set by
    # auditclf.audit), so that save() writes samples.csv and weights too; not serialised.
    _run_outputs = None

    @property
    def metrics(self) -> dict[str, float | None]:
        """The baseline model's flat metrics."""
        return self.models["baseline"].metrics

    def attach_outputs(self, samples: Any, models: dict) -> None:
        """Keep the run's sample table and prepared models for :meth:`save`."""
        self._run_outputs = (samples, models)

    def to_html(self, *, templates: Path | None = None, title: str | None = None) -> str:
        """The self-contained report page (templates and title default to the run's config;
        templates only for a result this process's audit made, never one read from disk)."""
        from auditclf.report import render_html, run_templates

        title = title or self.run.get("config", {}).get("report", {}).get("title")
        return render_html(self, templates=templates or run_templates(self), title=title)

    def save(self, out_dir: str | Path) -> list[Path]:
        """Write the report files into ``out_dir`` as ``auditclf run`` does (atomically).

        A result from :func:`auditclf.audit` writes everything, samples.csv and
        trained weights included; one loaded from report.json writes the reports
        (report.html, report.json, junit.xml, summary.md), and artifacts.npz when its
        arrays were read back (``auditclf.report.artifacts.read_artifacts``).
        """
        from auditclf.report import save_result

        return save_result(self, Path(out_dir))

    def _repr_html_(self) -> str:
        from auditclf.report.notebook import render_summary_html

        return render_summary_html(self)

    def to_dict(self) -> dict:
        """The JSON form; the models' arrays are left out (they go to artifacts.npz)."""
        raw = {f.name: getattr(self, f.name) for f in fields(self)}
        raw["models"] = {
            name: {f.name: getattr(model, f.name) for f in fields(model) if f.name != "arrays"}
            for name, model in self.models.items()
        }
        return _finite(raw)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, raw: dict, *, source: str = "report.json") -> AuditResult:
        version = raw.get("schema_version") if isinstance(raw, dict) else None
        if version not in READABLE_VERSIONS:
            readable = ", ".join(map(str, READABLE_VERSIONS))
            raise UsageError(
                f"{source}: schema_version {version!r} is not one this auditclf reads ({readable})"
            )
        try:
            models = {
                name: ModelResult(**{k: v for k, v in body.items() if k != "arrays"})
                for name, body in raw["models"].items()
            }
            return cls(
                verdict=raw["verdict"],
                run=raw["run"],
                data=raw["data"],
                models=models,
                gates=raw.get("gates", []),
                limitations=raw.get("limitations", []),
                schema_version=version,
                artifacts=raw.get("artifacts"),
            )
        except (KeyError, TypeError) as exc:
            raise UsageError(f"{source}: not an auditclf report ({exc})") from None

    @classmethod
    def load(cls, path: Path) -> AuditResult:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(raw, source=str(path))
