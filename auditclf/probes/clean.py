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

from auditclf import distributed
from auditclf.data.lazy import image_blocks, row_blocks
from auditclf.errors import UnreliableEvaluation
from auditclf.keys import PROBA_PREFIX
from auditclf.probes.base import PROBES, FixedChunks, PassSizes, ProbeContext, in_blocks
from auditclf.train.standard import to_unit_float


@torch.no_grad()
def predict_logits(ctx: ProbeContext) -> np.ndarray:
    """(N, K) float64 logits of the test images, batched on the model's device (a batch
    halves on a GPU out-of-memory error; the sizes that ran go to ``artifacts["passes"]``).

    Under torchrun each rank computes its :func:`~auditclf.distributed.shard` of the rows
    and every rank gets all N rows back."""
    sizes = PassSizes(block=ctx.batch_size, chunk=ctx.chunk)
    model = FixedChunks(ctx.model.eval(), sizes)

    def logits_of(rows: np.ndarray) -> np.ndarray:
        chunks = []
        blocks = image_blocks(
            ctx.test.images,
            [rows[block] for block in row_blocks(len(rows), ctx.batch_size)],
            device=ctx.device,
        )
        with ctx.progress.task(_what(ctx), total=len(rows)) as task:
            for pixels in blocks:

                def work(block: np.ndarray, pixels=pixels) -> torch.Tensor:
                    x = to_unit_float(pixels[block[0] : block[-1] + 1], ctx.device)
                    return model(x).double()

                chunks += in_blocks(np.arange(len(pixels)), sizes, work, "clean probe")
                task.advance(len(pixels))
        return torch.cat(chunks).cpu().numpy() if chunks else np.zeros((0, len(ctx.classes)))

    logits = distributed.map_rows(np.arange(len(ctx.test.labels)), logits_of)
    ctx.artifacts["passes"] = sizes.record()
    return logits


def _what(ctx: ProbeContext) -> str:
    return f"clean pass of {ctx.label}" if ctx.label else "clean pass"


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
