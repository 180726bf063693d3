"""The clean probe: one batched eval-mode pass over the test split.

It is the only place clean logits are computed; later probes reuse its columns.
``analyses.batch_size`` images are read (decoded, for a folder) and moved to the
device at a time; the model sees them in passes of a fixed size
(:class:`FixedChunks`), so the logits, to the last bit, do not depend on it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from auditclf.data.lazy import image_blocks, row_blocks
from auditclf.errors import UnreliableEvaluation
from auditclf.evidence import PROBA_PREFIX
from auditclf.probes.base import PROBES, FixedChunks, ProbeContext
from auditclf.train.standard import to_unit_float


@torch.no_grad()
def predict_logits(ctx: ProbeContext) -> np.ndarray:
    """(N, K) float64 logits of the test images, batched on the model's device."""
    model = FixedChunks(ctx.model.eval())
    blocks = row_blocks(len(ctx.test.labels), ctx.batch_size)
    chunks = [
        model(to_unit_float(pixels, ctx.device)).double()
        for pixels in image_blocks(ctx.test.images, blocks, device=ctx.device)
    ]
    return torch.cat(chunks).cpu().numpy()


@PROBES.register("clean")
def clean_probe(ctx: ProbeContext, table: pd.DataFrame) -> pd.DataFrame:
    logits = predict_logits(ctx)
    bad = ~np.isfinite(logits).all(axis=1)
    if bad.any():
        first = ctx.test.ids[np.flatnonzero(bad)[0]]
        raise UnreliableEvaluation(
            f"the model returned NaN or infinite logits for "
            f"{int(bad.sum())} of {len(bad)} test images "
            f"(first: {first})"
        )
    shifted = logits - logits.max(axis=1, keepdims=True)
    proba = np.exp(shifted)
    proba /= proba.sum(axis=1, keepdims=True)
    pred = proba.argmax(axis=1)
    labels = table["label"].to_numpy()
    true_logit = logits[np.arange(len(labels)), labels]
    others = logits.copy()
    others[np.arange(len(labels)), labels] = -np.inf
    columns = {
        "pred": pred,
        "pred_name": np.asarray(ctx.classes, dtype=object)[pred],
        "correct": (pred == labels).astype(np.int64),
        "confidence": proba.max(axis=1),
        "margin": true_logit - others.max(axis=1),
    }
    columns.update({f"{PROBA_PREFIX}{k}": proba[:, k] for k in range(proba.shape[1])})
    return table.assign(**columns)
