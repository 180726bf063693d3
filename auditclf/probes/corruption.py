"""The corruption probe: the model's predictions under common corruptions at each severity.

A class-stratified subset of the test split (``corruptions.samples``) is moved to the device
one block at a time (``corruptions.batch_size`` images); each block is corrupted by every
configured corruption at every configured severity on the device
(:func:`auditclf.corruptions.corrupt_severities`) and passed through the model in passes of
a fixed size (:class:`FixedChunks`), so no number depends on the block size. An image's
random draws (noise, warp field, occluder position) come from a generator seeded by (run
seed, ``corruption``, sample id), the same for every model audited and at every severity.

Columns: ``corrupted`` (1 on the subset), ``cor.<name>@<severity>.pred`` and
``.confidence`` (the top softmax probability), and the sanity measurements
``cor.check.*`` (see :data:`CHECK_COLUMNS`). The gallery (one image per corruption at
severities 1, 3 and 5) goes to the artifact file.

Under torchrun the subset is chosen from the whole split as in one process, each rank
corrupts its shard of it, and every rank gets all the answers; the batch-size check and the
gallery then run identically on every rank.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from auditclf import distributed
from auditclf.config import CorruptionConfig
from auditclf.corruptions import corrupt, corrupt_severities, severity_table
from auditclf.data.splits import stratified_subsample
from auditclf.keys import CORRUPTION_GALLERY, corruption_check_column, corruption_column
from auditclf.probes.base import PROBES, FixedChunks, PassSizes, ProbeContext, in_blocks
from auditclf.seeding import derive_seed
from auditclf.train.standard import to_unit_float

GALLERY_SEVERITIES = (1, 3, 5)
REPEAT_IMAGES = 16  # images re-run in other blocks for the batch-size check
REPEAT_BLOCK = 5  # a block size that no default divides into: every pass is padded
CHECK_COLUMNS = {
    "severity0_pred": "the prediction of severity 0 (an exact copy), run like the "
    "corrupted images; must equal the clean probe's",
    "out_of_range": "corrupted versions of the image (corruption × severity) that are not "
    "finite or fall outside [0, 1]",
    "batch_confidence_diff": "largest change of the confidence at the highest severity when "
    "the image is corrupted and passed in blocks of 5 instead",
    "batch_pred_changed": "corruptions whose highest-severity prediction changes in blocks of 5",
}


def image_seeds(seed: int, ids: np.ndarray) -> list[int]:
    """Each image's corruption seed, from (run seed, ``corruption``, sample id)."""
    return [derive_seed(seed, "corruption", sample_id) for sample_id in ids]


def corruption_subset(cfg: CorruptionConfig, labels: np.ndarray, seed: int, classes) -> np.ndarray:
    """Test rows corrupted: all, or a class-stratified subset of ``cfg.samples`` (sorted)."""
    n = len(labels)
    if cfg.samples == "all" or cfg.samples >= n:
        return np.arange(n)
    return stratified_subsample(
        labels, cfg.samples, seed=derive_seed(seed, "corruption"), classes=classes
    )


class Corrupter:
    """Corrupts blocks of the subset on the device and records the model's answers."""

    def __init__(self, ctx: ProbeContext, subset: np.ndarray) -> None:
        self.ctx, self.cfg = ctx, ctx.corruptions
        self.sizes = PassSizes(block=self.cfg.batch_size, chunk=ctx.chunk)
        self.model = FixedChunks(ctx.model.eval(), self.sizes)
        self.images = torch.from_numpy(np.asarray(ctx.test.images[subset]))
        self.seeds = image_seeds(ctx.seed, ctx.test.ids[subset])

    def _pixels(self, block: np.ndarray) -> torch.Tensor:
        return to_unit_float(self.images[block], self.ctx.device)

    def _answers(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prediction, top softmax probability) of each image, on the device."""
        proba = self.model(x).double().softmax(dim=1)
        confidence, pred = proba.max(dim=1)
        return pred, confidence

    @torch.no_grad()
    def run_block(self, block: np.ndarray) -> dict[str, np.ndarray]:
        """Every corruption × severity of the block's images → numpy arrays (one copy).

        A corruption's severities go through the model together (one batch of severities ×
        block images: fewer padded passes); the first corruption's batch also carries
        severity 0, the clean images run through the same path."""
        x = self._pixels(block)
        n, seeds = len(block), [self.seeds[i] for i in block]
        severities = self.cfg.severities
        pred, confidence, bad = [], [], torch.zeros(n, dtype=torch.long, device=x.device)
        for c, name in enumerate(self.cfg.names):
            versions = torch.cat(corrupt_severities(x, name, severities, seeds))
            low, high = versions.flatten(1).aminmax(dim=1)  # NaN fails both, ±inf one
            bad += (~((low >= 0) & (high <= 1))).long().view(len(severities), n).sum(dim=0)
            if c == 0:
                versions = torch.cat([corrupt(x, name, 0, seeds), versions])
            answers = self._answers(versions)
            if c == 0:
                same, answers = answers[0][:n], (answers[0][n:], answers[1][n:])
            pred.append(answers[0].view(len(severities), n).T)
            confidence.append(answers[1].view(len(severities), n).T)
        return {
            "pred": torch.stack(pred, dim=1).cpu().numpy(),  # (n, corruptions, severities)
            "confidence": torch.stack(confidence, dim=1).cpu().numpy(),
            "out_of_range": bad.cpu().numpy(),
            "severity0_pred": same.cpu().numpy(),
        }

    def run(self) -> dict[str, np.ndarray]:
        """:meth:`run_block` over the whole subset, blocks halving on a GPU OOM. Under
        torchrun each rank runs its :func:`~auditclf.distributed.shard` of the subset and
        every rank gets the whole subset's answers back."""
        return distributed.map_rows(np.arange(len(self.images)), self._run_rows)

    def _run_rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        parts = in_blocks(rows, self.sizes, self.run_block, "corruption probe")
        if not parts:  # no image in the subset
            return self._no_rows()
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    def _no_rows(self) -> dict[str, np.ndarray]:
        """:meth:`run_block`'s arrays for no image."""
        grid = (0, len(self.cfg.names), len(self.cfg.severities))
        return {
            "pred": np.zeros(grid, dtype=np.int64),
            "confidence": np.zeros(grid),
            "out_of_range": np.zeros(0, dtype=np.int64),
            "severity0_pred": np.zeros(0, dtype=np.int64),
        }

    @torch.no_grad()
    def repeat_in_small_blocks(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pred, confidence) at the highest severity of ``rows``, corrupted in blocks of
        :data:`REPEAT_BLOCK` images: the batch-size determinism check (the model sees them
        all in one batch: its passes are batch-invariant already, the corruption is tested)."""
        severity = self.cfg.severities[-1]
        corrupted = []
        for start in range(0, len(rows), REPEAT_BLOCK):
            block = rows[start : start + REPEAT_BLOCK]
            x, seeds = self._pixels(block), [self.seeds[i] for i in block]
            corrupted.append(torch.stack([corrupt(x, n, severity, seeds) for n in self.cfg.names]))
        pred, confidence = self._answers(torch.cat(corrupted, dim=1).flatten(0, 1))
        shape = (len(self.cfg.names), len(rows))
        return pred.view(shape).T.cpu().numpy(), confidence.view(shape).T.cpu().numpy()

    @torch.no_grad()
    def gallery(self, row: int) -> np.ndarray:
        """(corruptions, clean + gallery severities, C, H, W) float32 versions of one image."""
        x = self._pixels(np.array([row]))
        severities = [s for s in GALLERY_SEVERITIES if s in self.cfg.severities]
        versions = [
            torch.cat([x, *corrupt_severities(x, name, severities, [self.seeds[row]])])
            for name in self.cfg.names
        ]
        return torch.stack(versions).float().cpu().numpy()


@PROBES.register("corruptions")
def corruption_probe(ctx: ProbeContext, table: pd.DataFrame) -> pd.DataFrame:
    cfg = ctx.corruptions
    if cfg is None or not cfg.enabled:
        return table
    labels = ctx.test.labels
    subset = corruption_subset(cfg, labels, ctx.seed, ctx.classes)
    runner = Corrupter(ctx, subset)
    what = f"corruptions of {ctx.label}" if ctx.label else "corruptions"
    with ctx.progress.task(what, total=3) as task:
        task.advance(
            0,
            f"{len(cfg.names)} corruptions × {len(cfg.severities)} severities, "
            f"{len(subset)} images",
        )
        out = runner.run()
        task.advance(1, "sanity check: the same images in blocks of 5")
        repeat = np.arange(min(REPEAT_IMAGES, len(subset)))
        pred_small, confidence_small = runner.repeat_in_small_blocks(repeat)
        task.advance(1, "gallery")
        columns = _columns(cfg, len(labels), subset, out)
        at_top = (slice(None), slice(None), -1)
        diff = np.abs(confidence_small - out["confidence"][repeat][at_top]).max(axis=1)
        changed = (pred_small != out["pred"][repeat][at_top]).sum(axis=1)
        columns[corruption_check_column("batch_confidence_diff")][subset[repeat]] = diff
        columns[corruption_check_column("batch_pred_changed")][subset[repeat]] = changed
        if cfg.gallery:
            _gallery(ctx, runner, subset, table["correct"].to_numpy()[subset], out)
        ctx.artifacts["corruption"] = {
            "names": list(cfg.names),
            "severities": list(cfg.severities),
            "samples": int(len(subset)),
            "repeated": int(len(repeat)),
            "passes": runner.sizes.record(),
        }
        if ctx.label in ("", "baseline"):  # the same for every model: stated once
            ctx.artifacts["corruption"]["table"] = severity_table()
        task.advance()
    # joined in one step: inserting ~150 columns one by one fragments the frame
    return pd.concat([table, pd.DataFrame(columns, index=table.index)], axis=1)


def _columns(
    cfg: CorruptionConfig, n: int, subset: np.ndarray, out: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The probe's columns over all ``n`` test rows (NaN off the subset)."""
    columns = {"corrupted": np.zeros(n)}
    columns["corrupted"][subset] = 1

    def column(values: np.ndarray) -> np.ndarray:
        full = np.full(n, np.nan)
        full[subset] = values
        return full

    for c, name in enumerate(cfg.names):
        for s, severity in enumerate(cfg.severities):
            columns[corruption_column(name, severity, "pred")] = column(out["pred"][:, c, s])
            columns[corruption_column(name, severity, "confidence")] = column(
                out["confidence"][:, c, s]
            )
    columns[corruption_check_column("severity0_pred")] = column(out["severity0_pred"])
    columns[corruption_check_column("out_of_range")] = column(out["out_of_range"])
    for name in ("batch_confidence_diff", "batch_pred_changed"):
        columns[corruption_check_column(name)] = np.full(n, np.nan)
    return columns


def _gallery(
    ctx: ProbeContext,
    runner: Corrupter,
    subset: np.ndarray,
    correct: np.ndarray,
    out: dict[str, np.ndarray],
) -> None:
    """One image (the first the model gets right when clean) under every corruption at
    severities 1, 3, 5: its pixels to the artifact file, the answers to the artifacts."""
    row = int(np.flatnonzero(correct == 1)[0]) if correct.any() else 0
    cfg = runner.cfg
    shown = [s for s in GALLERY_SEVERITIES if s in cfg.severities]
    ctx.arrays[CORRUPTION_GALLERY] = runner.gallery(row)
    ctx.artifacts["corruption_gallery"] = {
        "names": list(cfg.names),
        "sample_id": str(ctx.test.ids[subset[row]]),
        "label": int(ctx.test.labels[subset[row]]),
        "clean_pred": int(out["severity0_pred"][row]),
        "severities": shown,
        "pred": [
            [int(out["pred"][row, c, cfg.severities.index(s)]) for s in shown]
            for c in range(len(cfg.names))
        ],
        "confidence": [
            [float(out["confidence"][row, c, cfg.severities.index(s)]) for s in shown]
            for c in range(len(cfg.names))
        ],
    }


def stand_in_columns(cfg: CorruptionConfig, labels: np.ndarray) -> tuple[dict, dict]:
    """Columns shaped like the probe's (every image right, no check failing), for dry runs
    that list metric keys; → (columns, artifacts)."""
    n = len(labels)
    columns = {"corrupted": np.ones(n)}
    for name in cfg.names:
        for severity in cfg.severities:
            columns[corruption_column(name, severity, "pred")] = labels.astype(np.float64)
            columns[corruption_column(name, severity, "confidence")] = np.ones(n)
    columns[corruption_check_column("severity0_pred")] = labels.astype(np.float64)
    for name in ("out_of_range", "batch_confidence_diff", "batch_pred_changed"):
        columns[corruption_check_column(name)] = np.zeros(n)
    artifacts = {
        "names": list(cfg.names),
        "severities": list(cfg.severities),
        "samples": n,
        "repeated": n,
    }
    return columns, artifacts
