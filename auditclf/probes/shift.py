"""The shift set's rows: the clean probe over every image of the shift set (``shift.dataset``).

The same pass as the test split's (:func:`auditclf.probes.clean.clean_probe`: batched on
the model's device, passes of a fixed size, eval mode), so the shift set's predictions
are as deterministic as the test split's. No attack or explanation runs on the shift
set; its rows are empty in those columns.
"""

from __future__ import annotations

import pandas as pd

from auditclf.data.shift import ShiftData
from auditclf.probes.base import ProbeContext
from auditclf.probes.clean import clean_probe


def shift_probe(ctx: ProbeContext, shift: ShiftData, rows: pd.DataFrame) -> pd.DataFrame:
    """The clean probe's columns over ``rows``, the fixed columns of the shift set's rows of
    the model ``ctx.label`` (their ``set`` is ``shift.<name>``; the pipeline makes them, as
    it makes the test rows)."""
    over_shift = ProbeContext(
        model=ctx.model,
        test=shift.view,
        classes=ctx.classes,
        device=ctx.device,
        seed=ctx.seed,
        batch_size=ctx.batch_size,
        chunk=ctx.chunk,
        progress=ctx.progress,
        label=f"{ctx.label} on the shift set {shift.name}",
    )
    return clean_probe(over_shift, rows)
