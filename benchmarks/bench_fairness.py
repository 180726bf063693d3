"""The fairness analysis on a large synthetic sample table.

    python benchmarks/bench_fairness.py [--rows 1000000] [--attacks 0] [--n-boot 200] [--peer]

The table has 10 classes, three attributes of four values each and, with
``--attacks N``, N attack columns (every other row attacked). Prints the
seconds of the whole fairness analysis: per attribute, every group metric
through fairlearn's MetricFrame (over cell counts), min/max/difference/ratio,
equalized odds and demographic parity, and ``--n-boot`` bootstrap draws for
every difference. ``--peer`` also times fairlearn's MetricFrame over the rows
for accuracy alone, without bootstrap, for the same three attributes: the
row-level cost the cell counts avoid.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame
from sklearn.metrics import accuracy_score

from auditclf.analyses import AnalysisContext
from auditclf.analyses.fairness import fairness
from auditclf.config import AnalysisConfig, FairnessConfig

CLASSES = [str(d) for d in range(10)]
ATTRIBUTES = {"site": 4, "device": 4, "age_band": 4}


def synthetic_table(rows: int, attacks: int, seed: int = 0) -> pd.DataFrame:
    """``rows`` predictions of a ~90%-accurate 10-class model with three attributes."""
    rng = np.random.default_rng(seed)
    k = len(CLASSES)
    labels = rng.integers(0, k, rows)
    logits = rng.normal(size=(rows, k)).astype(np.float64)
    logits[np.arange(rows), labels] += 3.0
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    pred = proba.argmax(axis=1)
    table = pd.DataFrame(
        {
            "model": "baseline",
            "sample_id": np.arange(rows).astype(str),
            "label": labels,
            "pred": pred,
            "correct": (pred == labels).astype(np.int64),
            "confidence": proba.max(axis=1),
        }
    )
    for c in range(k):
        table[f"proba.{c}"] = proba[:, c]
    for name, values in ATTRIBUTES.items():
        table[f"attr.{name}"] = np.array([f"{name}{v}" for v in range(values)])[
            rng.integers(0, values, rows)
        ]
    if attacks:
        table["attacked"] = (np.arange(rows) % 2 == 0).astype(float)
        for i in range(attacks):
            fooled = rng.random(rows) < 0.2 + 0.1 * i
            adv = np.where(fooled, (labels + 1) % k, pred).astype(float)
            table[f"adv.pgd_linf@{0.05 * (i + 1):g}.pred"] = np.where(
                table["attacked"] == 1, adv, np.nan
            )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--attacks", type=int, default=0, help="attack columns in the table")
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--peer", action="store_true", help="also time row-level MetricFrame")
    args = parser.parse_args()

    started = time.perf_counter()
    table = synthetic_table(args.rows, args.attacks)
    print(f"table: {len(table):,} rows, {len(table.columns)} columns, "
          f"built in {time.perf_counter() - started:.1f} s")
    settings = FairnessConfig(n_boot=args.n_boot).model_dump(mode="json")
    ctx = AnalysisContext(CLASSES, AnalysisConfig(), 0, {}, fairness=settings)
    started = time.perf_counter()
    section = fairness(table, ctx)
    seconds = time.perf_counter() - started
    print(
        f"fairness analysis: {seconds:.1f} s for {len(ATTRIBUTES)} attributes × 4 groups, "
        f"{len(section.metrics):,} metrics, {args.n_boot} bootstrap draws"
    )
    print(section.headline)
    if args.peer:
        started = time.perf_counter()
        for name in ATTRIBUTES:
            MetricFrame(
                metrics={"accuracy": accuracy_score},
                y_true=table["label"],
                y_pred=table["pred"],
                sensitive_features=table[f"attr.{name}"],
            )
        peer = time.perf_counter() - started
        print(f"row-level MetricFrame, accuracy only, no bootstrap: {peer:.1f} s")


if __name__ == "__main__":
    main()
