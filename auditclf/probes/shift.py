"""The shift set's rows: the clean probe over every image of the shift set (``shift.dataset``).

The same pass as the test split's (:func:`auditclf.probes.clean.clean_probe`: batched on
the model's device, passes of a fixed size, eval mode), so the shift set's predictions
are as deterministic as the test split's. No attack or explanation runs on the shift
set; its rows are empty in those columns.
"""

from __future__ import annotations

import pandas as pd

from auditclf.data.shift import ShiftData
from auditclf.evidence import new_table
from auditclf.keys import shift_set
from auditclf.probes.base import ProbeContext
from auditclf.probes.clean import clean_probe


def with_shift_rows(
    ctx: ProbeContext, shift: ShiftData | None, table: pd.DataFrame
) -> pd.DataFrame:
    """``table`` (the test rows of the model ``ctx.label``) followed by its rows of the shift
    set, whose ``set`` is ``shift.<name>``; ``table`` as it is without a shift set."""
    if shift is None:
        return table
    view = shift.view
    rows = new_table(
        ctx.label,
        view.ids,
        view.labels,
        ctx.classes,
        view.attributes,
        images=shift_set(shift.name),
    )
    over_shift = ProbeContext(
        model=ctx.model,
        test=view,
        classes=ctx.classes,
        device=ctx.device,
        seed=ctx.seed,
        batch_size=ctx.batch_size,
        chunk=ctx.chunk,
        progress=ctx.progress,
        label=f"{ctx.label} on the shift set {shift.name}",
    )
    return pd.concat([table, clean_probe(over_shift, rows)], ignore_index=True)
