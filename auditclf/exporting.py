"""What ships: the audited model exported (``auditclf export DIR``, ``auditclf run --export``).

A finished run's folder is re-opened the way ``auditclf run --checkpoint`` opens a model:
its saved config (validated, as any config) and data, then the chosen model's
``.safetensors`` and checked sidecar. The files are written to ``DIR/export/``
(:data:`auditclf.io.EXPORT_FOLDER`) as one set, next to the report.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np

from auditclf.config import AuditConfig, ExportConfig, config_from_dict
from auditclf.data import PreparedData
from auditclf.errors import UsageError
from auditclf.io import EXPORT_FOLDER, StagedOutput
from auditclf.models import PreparedModel, prepare_model
from auditclf.models.export import export_model
from auditclf.results import AuditResult
from auditclf.runcontext import open_run

# the model of a run folder → its weights' file stem there
STEMS = {"baseline": "model", "hardened": "hardened", "rebalanced": "rebalanced"}


def unit_images(images, count: int) -> np.ndarray:
    """The first ``count`` images as (N, C, H, W) float32 in [0, 1] (the audit's pixels)."""
    return np.asarray(images[:count], dtype=np.float32) / np.float32(255.0)


def export_prepared(
    prepared: PreparedModel, data: PreparedData, export: ExportConfig, folder: Path
) -> dict[str, dict]:
    """``prepared``'s network in every format of ``export`` into ``folder`` → {format:
    record}. The int8 quantizer is calibrated on the first ``export.calibration_images``
    training images (their order is the seeded split's); the exporters trace two test
    images (one, repeated, when the test split has one)."""
    test = data.view("test")
    sample = unit_images(test.images, 2)
    if len(sample) == 1:
        sample = np.concatenate([sample, sample])
    wanted = "onnx-int8" in export.formats and export.calibration_images > 0
    calibration = (
        unit_images(data.view("train").images, export.calibration_images) if wanted else sample[:0]
    )
    return export_model(
        prepared.adapter,
        list(export.formats),
        folder,
        export.which,
        sample=sample,
        calibration=calibration,
    )


class ExportFolder:
    """A temporary folder for ``run --export``'s files until the report is saved; removed
    when this object goes (or at exit), with whatever it still holds."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="auditclf-export-"))
        weakref.finalize(self, shutil.rmtree, self.path, True)


def _run_config(folder: Path, which: str, export: ExportConfig) -> AuditConfig:
    """The saved run's config (report.json is untrusted: validated as any config) set to
    load ``which``'s weights from ``folder``, train nothing and export ``export``."""
    report = folder / "report.json"
    if not report.is_file():
        raise UsageError(f"{report}: no such file; give the folder of a finished `auditclf run`")
    saved = AuditResult.load(report)
    config = config_from_dict(saved.run["config"], source=str(report))
    checkpoint = folder / f"{STEMS[which]}.safetensors"
    if not checkpoint.is_file():
        raise UsageError(
            f"{checkpoint}: no such file; the run in {folder} did not save a {which} model "
            "(only models a run trains are saved: audit a checkpoint with `run --export`)"
        )
    model = config.model.model_copy(update={"checkpoint": checkpoint, "trust_checkpoint": False})
    return config.model_copy(
        update={
            "model": model,
            "export": export,
            "harden": config.harden.model_copy(update={"method": "none"}),
            "fairness": config.fairness.model_copy(update={"rebalance": None}),
        }
    )


def export_run_folder(folder: Path, export: ExportConfig) -> dict[str, dict]:
    """``auditclf export DIR``: the run's ``export.which`` model in ``export.formats``,
    written to ``DIR/export/`` (files of other models already there are kept) → records."""
    folder = Path(folder)
    config = _run_config(folder, export.which, export)
    run = open_run(config, trains=True)
    data = run.data
    prepared = prepare_model(
        config.model,
        classes=data.classes,
        input_shape=data.input_shape,
        train_images=data.view("train").images,
        data_hash=data.summary["hash"],
        seed=config.seed,
        forbid_unsafe=config.unsafe_load == "forbid",
    )
    with StagedOutput(folder, keep_others=True) as staged:
        target = staged.path(EXPORT_FOLDER)
        if (folder / EXPORT_FOLDER).is_dir():  # copies: the exporters overwrite in place
            shutil.copytree(folder / EXPORT_FOLDER, target)
        records = export_prepared(prepared, data, config.export, target)
    return records
