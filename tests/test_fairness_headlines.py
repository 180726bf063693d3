"""What the fairness section puts in its headlines: a parity difference that rests on too-small
class × group cells reads "insufficient data" (its number kept in report.json with a note),
and groups tied at the lowest accuracy are named together, never one of them as the lowest."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from auditclf.analyses import AnalysisContext
from auditclf.analyses.base import Section
from auditclf.analyses.corruption import _per_group
from auditclf.analyses.fairness import fairness
from auditclf.config import AnalysisConfig, FairnessConfig

CLASSES = ["a", "b"]
EQ_ODDS = "fairness.site.equalized_odds_difference"


def _rows(group: str, label: int, n: int, wrong: int) -> dict:
    """``n`` images of class ``label`` in ``group``, the first ``wrong`` of them misread."""
    pred = [1 - label] * wrong + [label] * (n - wrong)
    return {"label": [label] * n, "pred": pred, "attr.site": [group] * n}


def _section(*cells: tuple[str, int, int, int]):
    parts = [pd.DataFrame(_rows(*cell)) for cell in cells]
    table = pd.concat(parts, ignore_index=True)
    table["confidence"] = 0.9
    settings = FairnessConfig(n_boot=20).model_dump(mode="json")
    return fairness(table, AnalysisContext(CLASSES, AnalysisConfig(), 0, {}, fairness=settings))


def _summary_row(section, attribute: str = "site") -> dict:
    summary = section.tables["summary"]
    row = next(r for r in summary.rows if r[0] == attribute)
    return dict(zip(summary.columns, row, strict=True))


def test_parity_on_cells_of_enough_images_stands_as_a_number():
    section = _section(
        ("north", 0, 40, 4), ("north", 1, 40, 8), ("south", 0, 40, 2), ("south", 1, 40, 12)
    )
    assert section.metrics[EQ_ODDS] is not None and EQ_ODDS not in section.notes
    row = _summary_row(section)
    assert row["equalized-odds difference"] == section.metrics[EQ_ODDS]
    assert (
        row["demographic-parity difference"]
        == section.metrics["fairness.site.demographic_parity_difference"]
    )


def test_parity_on_a_small_class_cell_reads_insufficient_data_and_keeps_its_number():
    # north has 45 images (enough), but only 5 of class b: TPR_b and FPR_a rest on 5 images.
    section = _section(
        ("north", 0, 40, 4), ("north", 1, 5, 3), ("south", 0, 40, 2), ("south", 1, 40, 12)
    )
    value = section.metrics[EQ_ODDS]
    assert value is not None and section.metrics[f"{EQ_ODDS}.ci_low"] is not None
    note = section.notes[EQ_ODDS]
    assert note.startswith("insufficient data: computed on 2 class × group cells with fewer ")
    assert "north, images of class b (TPR): 5" in note
    assert "north, images not of class a (FPR): 5" in note
    row = _summary_row(section)
    assert row["equalized-odds difference"] == "insufficient data"
    # Selection rates rest on whole groups, which are large enough: that parity stands.
    assert isinstance(row["demographic-parity difference"], float)
    assert "reads insufficient data" in section.tables["summary"].caption
    gaps = section.tables["site.gaps"]
    odds = next(r for r in gaps.rows if r[0].startswith("equalized odds"))
    assert odds[3:5] == ["insufficient data", None]  # no interval shown beside it either
    assert "reads insufficient data in the tables" in section.method
    # per class: class b's TPR and class a's FPR rest on north's 5 images; the rest stand
    classes = section.tables["site.classes"]
    rows = {row[0]: dict(zip(classes.columns, row, strict=False)) for row in classes.rows}
    assert rows["b"]["TPR difference"] == rows["a"]["FPR difference"] == "insufficient data"
    assert isinstance(rows["a"]["TPR difference"], float)
    assert isinstance(rows["b"]["selection-rate difference"], float)
    assert "reads insufficient data" in classes.caption


def test_groups_tied_at_the_lowest_accuracy_are_named_together():
    section = _section(
        ("x", 0, 20, 10), ("x", 1, 20, 10),  # accuracy 0.5
        ("y", 0, 20, 10), ("y", 1, 20, 10),  # accuracy 0.5: tied with x
        ("z", 0, 20, 2), ("z", 1, 20, 2),  # accuracy 0.9
    )  # fmt: skip
    row = _summary_row(section)
    assert row["lowest-accuracy group"] == "tie: x, y"
    block = section.attributes[0]
    assert block["headline"].startswith("site = x and site = y tie for the lowest accuracy, 0.500")
    assert section.figures["site"]["worst"] == [0, 1]  # both drawn as the lowest
    assert "has the lowest accuracy" not in section.headline
    assert "(tie: x, y 0.500 against z 0.900; 0.633 overall)" in section.headline
    assert np.isclose(section.metrics["fairness.site.accuracy.difference"], 0.4)


def test_groups_tied_under_the_worst_corruption_are_named_together():
    rows = pd.DataFrame({"attr.site": ["x", "x", "y", "y", "z", "z"]})
    accuracy = np.array([[0.0], [1.0], [1.0], [0.0], [1.0], [1.0]])  # x and y at 50%
    out = SimpleNamespace(names=["blur"], per_image=accuracy, clean_correct=np.ones(6, bool))
    section = Section("corruption", "Corruptions")
    _per_group(section, rows, out, {"blur": 0.67})
    assert section.findings[-1].message == (
        "worst group under the most damaging corruption (blur): tie at 50.0% between "
        "site = x (2 images), site = y (2 images)"
    )
