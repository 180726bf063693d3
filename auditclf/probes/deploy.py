"""The deploy probe: each exported file run by its own runtime over the same test images.

ONNX and int8 ONNX run in onnxruntime's CPU provider (:class:`OnnxModule`), TorchScript in
the TorchScript interpreter (:func:`load_own_torchscript`, the run's own file only). Each
sees the test images as the audit does ([0, 1] float32, (N, C, H, W)) in batches of
:data:`BATCH` on the CPU; the PyTorch model's logits are the clean probe's pass again, so
both sides are computed the same way.

Columns, per format: ``deploy.<format>.pred``, ``.confidence`` (top softmax probability),
``.logit_diff`` and ``.proba_diff`` (the image's largest |exported − PyTorch| logit and
probability over the classes), and with the attack probe ``.transfer_pred``: the exported
model's class for the PyTorch model's PGD-L∞ image at the reference eps (attacked subset;
empty elsewhere), and ``.square_pred``: the exported model's class after black-box Square
queried it through its runtime at that eps (the attack probe's Square images; empty
elsewhere); with the corruption probe ``.corruption_accuracy`` and
``.corruption_agreement``: per corrupted image, the exported model's accuracy over every
corruption × severity of it, and its agreement with the PyTorch model's predictions there.
``artifacts["deploy"]`` holds each file's record (file, size, opset, how it was made) and
its timings: latency at batch 1 (p50/p95 of ``latency_repeats`` passes after
:data:`WARM_UP`) and throughput at batch :data:`BATCH`, on the CPU. Timings vary from run
to run (they are measurements of this machine now): they stay out of the sample table, and
the determinism the design promises covers the other keys.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from auditclf.config import RobustnessConfig
from auditclf.data.lazy import image_blocks, row_blocks
from auditclf.keys import corruption_column, deploy_column
from auditclf.models.adapter import ModelAdapter
from auditclf.models.runtime import OnnxModule, load_own_torchscript
from auditclf.probes.attacks import AttackRunner, adversarial_versions, reference_eps
from auditclf.probes.base import ProbeContext
from auditclf.probes.clean import predict_logits
from auditclf.probes.corruption import Corrupter

BATCH = 64  # images per pass of an exported model, and the throughput's batch
WARM_UP = 3  # untimed passes before the timed ones
THROUGHPUT_PASSES = 3


def load_runtime(fmt: str, path: Path) -> nn.Module:
    """The exported file in its own runtime: onnxruntime for ONNX, TorchScript's for ``.pt``."""
    return load_own_torchscript(path) if fmt == "torchscript" else OnnxModule(path)


def _unit(block: torch.Tensor) -> torch.Tensor:
    return block.float().div_(255.0)


@torch.no_grad()
def exported_logits(module: nn.Module, images) -> np.ndarray:
    """(N, K) float64 logits of ``module`` over ``images`` (uint8), batches of BATCH, CPU."""
    blocks = image_blocks(images, row_blocks(len(images), BATCH))
    return torch.cat([module(_unit(block)).double() for block in blocks]).numpy()


@torch.no_grad()
def _predictions(module: nn.Module, pixels: torch.Tensor) -> np.ndarray:
    """Top-1 classes of ``module`` over ``pixels`` ([0, 1] float, CPU), batches of BATCH."""
    batches = torch.split(pixels, BATCH)
    return torch.cat([module(batch).argmax(1) for batch in batches]).numpy()


def transfer_images(ctx: ProbeContext, table: pd.DataFrame) -> tuple | None:
    """The PyTorch model's PGD-L∞ adversarial images at the robustness reference eps, for
    the attacked subset (the attack probe's per-image seeds: the very images it made, first
    restart) → (their rows, the images on the CPU, the eps as keys spell it); None without
    the attack probe."""
    if "attacked" not in table.columns:
        return None
    rows = np.flatnonzero(table["attacked"].to_numpy() == 1)
    made = adversarial_versions(ctx, rows)
    if made is None:
        return None
    adversarial, eps_text = made
    return rows, adversarial.to("cpu"), eps_text


@torch.no_grad()
def timings(module: nn.Module, images, repeats: int) -> dict[str, float]:
    """Latency p50/p95 (ms, batch 1) over ``repeats`` passes after WARM_UP, and throughput
    (images/s) at batch BATCH, on the CPU."""
    count = min(len(images), BATCH)
    batch = _unit(torch.from_numpy(np.asarray(images[:count])))
    singles = [batch[i % count : i % count + 1] for i in range(repeats)]
    for x in singles[:WARM_UP]:
        module(x)
    elapsed = []
    for x in singles:
        start = time.perf_counter()
        module(x)
        elapsed.append(time.perf_counter() - start)
    module(batch)
    start = time.perf_counter()
    for _ in range(THROUGHPUT_PASSES):
        module(batch)
    per_pass = (time.perf_counter() - start) / THROUGHPUT_PASSES
    p50, p95 = np.percentile(np.asarray(elapsed) * 1000.0, [50, 95])
    throughput = count / per_pass
    return {"latency_p50_ms": float(p50), "latency_p95_ms": float(p95), "throughput": throughput}


def _exported_context(ctx: ProbeContext, module: nn.Module, **sections) -> ProbeContext:
    """A probe context over ``module`` (an exported file in its runtime, the normalisation
    inside it, no gradients) on the CPU where it runs, with the run's seed and test split."""
    channels = ctx.test.images.shape[1]
    exported = ModelAdapter(module, [0.0] * channels, [1.0] * channels, gradients=False)
    return ProbeContext(
        model=exported,
        test=ctx.test,
        classes=ctx.classes,
        device=torch.device("cpu"),
        seed=ctx.seed,
        batch_size=ctx.batch_size,
        **sections,
    )


def square_answers(
    ctx: ProbeContext, table: pd.DataFrame, module: nn.Module
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Black-box Square on the exported model at the robustness reference eps, on the images
    the attack probe's Square attacked (the same stratified rows, the same per-image seeds),
    querying the file through its runtime → (those rows, its predictions, the eps as keys
    spell it); None when the attack probe or Square did not run."""
    cfg = ctx.robustness
    if cfg is None or not cfg.enabled or "square" not in cfg.attacks:
        return None
    if "attacked" not in table.columns:
        return None
    attacked = np.flatnonzero(table["attacked"].to_numpy() == 1)
    runner = AttackRunner(_exported_context(ctx, module, robustness=cfg), attacked)
    rows = runner.stratified_rows(cfg.square_samples)
    eps_text = reference_eps(cfg, ctx.test.images.shape[1])
    return attacked[rows], runner.run("square", eps_text, rows=rows)["pred"], eps_text


def corrupted_answers(
    ctx: ProbeContext, table: pd.DataFrame, module: nn.Module
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The exported model on the corruption probe's images (the corrupted subset, the same
    per-image seeds, every corruption × severity, made on the CPU where the file runs) →
    (those rows, its per-image accuracy, its per-image agreement with the PyTorch model's
    predictions under the same corruptions); None without the corruption probe."""
    cfg = ctx.corruptions
    if cfg is None or not cfg.enabled or "corrupted" not in table.columns:
        return None
    rows = np.flatnonzero(table["corrupted"].to_numpy() == 1)
    over = _exported_context(ctx, module, corruptions=cfg)
    pred = Corrupter(over, rows).run()["pred"]  # (rows, corruptions, severities)
    ours = np.stack(
        [
            np.stack(
                [table[corruption_column(n, s, "pred")].to_numpy()[rows] for s in cfg.severities],
                axis=1,
            )
            for n in cfg.names
        ],
        axis=1,
    )
    labels = table["label"].to_numpy()[rows]
    accuracy = (pred == labels[:, None, None]).mean(axis=(1, 2))
    return rows, accuracy, (pred == ours).mean(axis=(1, 2))


def _square_eps(cfg: RobustnessConfig | None, channels: int) -> str | None:
    """The eps Square attacks the exported files at (the reference eps), None without it."""
    if cfg is None or not cfg.enabled or "square" not in cfg.attacks:
        return None
    return reference_eps(cfg, channels)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def deploy_probe(
    ctx: ProbeContext,
    table: pd.DataFrame,
    files: dict[str, dict],
    *,
    folder: Path,
    repeats: int,
    reference: nn.Module,
) -> pd.DataFrame:
    """Add each exported format's columns to ``table`` (the test rows, in order) and its
    record and timings to ``ctx.artifacts["deploy"]``. ``files``: {format: export record,
    its ``file`` in ``folder``}; ``reference``: the PyTorch model as a CPU module, timed
    the same way as the exported ones for the ledger."""
    ours = predict_logits(ctx)
    ours_proba = _softmax(ours)
    images = ctx.test.images
    columns: dict[str, np.ndarray] = {}
    records = {"pytorch": timings(reference, images, repeats)}
    transfer = transfer_images(ctx, table)
    for fmt, record in files.items():
        with ctx.progress.task(f"deploy audit of {fmt}"):
            module = load_runtime(fmt, folder / record["file"])
            logits = exported_logits(module, images)
            proba = _softmax(logits)
            columns[deploy_column(fmt, "pred")] = proba.argmax(axis=1)
            columns[deploy_column(fmt, "confidence")] = proba.max(axis=1)
            columns[deploy_column(fmt, "logit_diff")] = np.abs(logits - ours).max(axis=1)
            columns[deploy_column(fmt, "proba_diff")] = np.abs(proba - ours_proba).max(axis=1)
            if transfer is not None:
                rows, adversarial, _ = transfer
                column = columns[deploy_column(fmt, "transfer_pred")] = np.full(len(table), np.nan)
                column[rows] = _predictions(module, adversarial)
            square = square_answers(ctx, table, module)
            if square is not None:
                rows, pred, _ = square
                column = columns[deploy_column(fmt, "square_pred")] = np.full(len(table), np.nan)
                column[rows] = pred
            corrupted = corrupted_answers(ctx, table, module)
            if corrupted is not None:
                rows, accuracy, agreement = corrupted
                for what, values in (
                    ("corruption_accuracy", accuracy),
                    ("corruption_agreement", agreement),
                ):
                    column = columns[deploy_column(fmt, what)] = np.full(len(table), np.nan)
                    column[rows] = values
            records[fmt] = {**record, **timings(module, images, repeats)}
    ctx.artifacts["deploy"] = {
        "formats": list(files),
        "records": records,
        "transfer_eps": None if transfer is None else transfer[2],
        "square_eps": _square_eps(ctx.robustness, ctx.test.images.shape[1]),
    }
    return table.assign(**columns)


def stand_in_columns(
    formats: list[str],
    labels: np.ndarray,
    robustness: RobustnessConfig,
    channels: int,
    *,
    corruptions: bool = False,
) -> tuple[dict, dict]:
    """Columns and artifacts shaped like the probe's (every image agreeing), for dry runs
    that list metric keys; → (columns, artifacts)."""
    n = len(labels)
    transfer_eps = reference_eps(robustness, channels) if robustness.enabled else None
    columns = {}
    records = {"pytorch": {"latency_p50_ms": 1.0, "latency_p95_ms": 1.0, "throughput": 1.0}}
    for fmt in formats:
        columns[deploy_column(fmt, "pred")] = labels.astype(np.int64)
        columns[deploy_column(fmt, "confidence")] = np.ones(n)
        columns[deploy_column(fmt, "logit_diff")] = np.zeros(n)
        columns[deploy_column(fmt, "proba_diff")] = np.zeros(n)
        if transfer_eps is not None:
            columns[deploy_column(fmt, "transfer_pred")] = labels.astype(np.float64)
        if _square_eps(robustness, channels) is not None:
            columns[deploy_column(fmt, "square_pred")] = labels.astype(np.float64)
        if corruptions:
            columns[deploy_column(fmt, "corruption_accuracy")] = np.ones(n)
            columns[deploy_column(fmt, "corruption_agreement")] = np.ones(n)
        records[fmt] = {"file": fmt, "size_mb": 1.0, **records["pytorch"]}
    artifacts = {
        "formats": list(formats),
        "records": records,
        "transfer_eps": transfer_eps,
        "square_eps": _square_eps(robustness, channels),
    }
    return columns, artifacts
