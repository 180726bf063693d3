"""Comparing audits: what got worse by how much.

Serves ``auditclf compare A B`` and the baseline regression check of
``run/gate --baseline OLD/report.json --max-drop X``. Which way each key is
better, whether it is a headline and how its interval is spelt come from its
family in :mod:`auditclf.keys`, as for the ledgers and gates.

Which keys are compared by default (the *headline* families): every
``performance.*`` key that is not per class; robust accuracy per attack and
eps (``robustness.<attack>@<eps>.accuracy``, ``worst@<eps>``),
``robustness.clean_accuracy``, ``robustness.min_eps.median`` and
``robustness.reliable``; every fairness ``difference`` that is not per class
or per group; ``explain.<method>.deletion_auc`` / ``insertion_auc``; the same
keys of every retrained model (``hardened.``, ``rebalanced.``). Never by
default: CI bounds, counts (support, size, samples), keys without a better
direction (mean confidence, selection rates, ``data.*``) and per-class and
per-group keys, whose few images make them move by whole images. A key or
fnmatch pattern given its own tolerance is compared whatever the default.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from pathlib import Path

from auditclf.errors import UsageError
from auditclf.gates import gate_metrics
from auditclf.keys import HIGHER, LOWER, NEUTRAL, direction, interval, is_bound, is_headline
from auditclf.results import AuditResult, GateOutcome

SAME = 1e-12  # deltas below this are float noise, not a change


def parse_max_drop(text: str) -> tuple[str | None, float]:
    """``0.01`` → (None, 0.01); ``performance.accuracy=0.005`` → (key, 0.005)."""
    key, sep, number = text.rpartition("=")
    key = key.strip() if sep else None
    try:
        value = float(number)
    except ValueError:
        value = float("nan")
    if not value >= 0 or (sep and not key):
        raise UsageError(
            f"--max-drop {text!r}: give a tolerance >= 0 (0.01) or KEY=TOLERANCE "
            "(performance.accuracy=0.005)"
        )
    return key, value


def parse_max_drops(texts: list[str] | None) -> tuple[float | None, dict[str, float]]:
    """Every ``--max-drop`` given → (the default tolerance, None when none was given;
    {key or pattern: tolerance}); a later value for the same key wins."""
    default, per_key = None, {}
    for text in texts or []:
        key, tolerance = parse_max_drop(text)
        if key is None:
            default = tolerance
        else:
            per_key[key] = tolerance
    return default, per_key


@dataclass
class Tolerances:
    """How much each key may get worse: per key or pattern, else ``default`` for headlines."""

    default: float
    per_key: dict[str, float] = field(default_factory=dict)

    def for_key(self, key: str) -> float | None:
        """The tolerance of ``key``, or None when it is not compared."""
        if key in self.per_key:
            return self.per_key[key]
        if is_bound(key) or direction(key) == NEUTRAL:
            return None
        for pattern, tolerance in self.per_key.items():
            if fnmatch.fnmatchcase(key, pattern):
                return tolerance
        return self.default if is_headline(key) else None

    def check(self, keys: set[str] | dict) -> None:
        """Refuse a per-key tolerance naming no key, or a key with no better direction."""
        for name in self.per_key:
            if any(ch in name for ch in "*?["):
                if not any(fnmatch.fnmatchcase(k, name) for k in keys):
                    raise UsageError(f"--max-drop {name}=…: the pattern matches no metric key")
            elif name not in keys:
                raise UsageError(f"--max-drop {name}=…: no metric {name!r} in the reports")
            elif is_bound(name) or direction(name) == NEUTRAL:
                raise UsageError(
                    f"--max-drop {name}=…: {name!r} has no better direction "
                    "(a count, a CI bound or a descriptive number); it cannot regress"
                )


def _fmt(value: float | None) -> str:
    return "null" if value is None else f"{value:.4g}"


def compare_metrics(
    old: dict[str, float | None],
    new: dict[str, float | None],
    tolerances: Tolerances,
    *,
    new_notes: dict[str, str] | None = None,
) -> list[dict]:
    """One row per key of ``old`` or ``new`` (CI bounds folded into their metric's row).

    A row: key, a (old), b (new), delta (b − a), direction ("higher"/"lower"/None),
    change ("better"/"worse"/"same"/None), ci_a, ci_b, tolerance (None: not
    compared), regression (worse by more than the tolerance, or a number that
    became null) and, for a regression, a one-line ``why``.
    """
    notes = new_notes or {}
    rows = []
    for key in list(old) + [k for k in new if k not in old]:
        if is_bound(key):
            continue
        a, b = old.get(key), new.get(key)
        way = direction(key)
        delta = None if a is None or b is None else b - a
        change = None
        if delta is not None and way != NEUTRAL:
            change = "same" if abs(delta) <= SAME else ("better" if delta * way > 0 else "worse")
        tolerance = tolerances.for_key(key) if key in old and key in new else None
        why = None
        if tolerance is not None and a is not None:
            if b is None:
                why = f"{key} became null: {notes.get(key, 'undefined')} (was {_fmt(a)})"
            elif change == "worse" and abs(delta) > tolerance + SAME:
                moved = "dropped" if way == HIGHER else "rose"
                why = f"{key} {moved} {abs(delta):.3g} > {tolerance:g}"
        rows.append(
            {
                "key": key,
                "a": a,
                "b": b,
                "delta": delta,
                "direction": {HIGHER: "higher", LOWER: "lower"}.get(way),
                "change": change,
                "ci_a": interval(old, key),
                "ci_b": interval(new, key),
                "in_a": key in old,
                "in_b": key in new,
                "tolerance": tolerance,
                "regression": why is not None,
                "why": why,
            }
        )
    return rows


@dataclass
class BaselineCheck:
    """``--baseline OLD/report.json``: the old metrics and how much each may worsen."""

    path: Path
    metrics: dict[str, float | None]
    tolerances: Tolerances

    def evaluate(self, metrics: dict, notes: dict) -> list[GateOutcome]:
        """Gate-like outcomes: one failing entry per regression, else one passing entry."""
        self.tolerances.check(set(self.metrics) & set(metrics))
        rows = compare_metrics(self.metrics, metrics, self.tolerances, new_notes=notes)
        compared = [r for r in rows if r["tolerance"] is not None]
        outcomes = [_regression_outcome(row, self.path) for row in compared if row["regression"]]
        return outcomes or [self._no_regression(len(compared))]

    def _no_regression(self, compared: int) -> GateOutcome:
        """The one passing entry: nothing got worse beyond its tolerance."""
        return GateOutcome(
            kind="baseline",
            metric="baseline",
            key=None,
            op="baseline",
            threshold=self.tolerances.default,
            severity="fail",
            on="value",
            missing="fail",
            expression=f"baseline: no metric got worse than in {self.path.name} by more "
            f"than its tolerance ({compared} compared)",
            value=None,
            ci=None,
            passed=True,
            status="pass",
            reason=f"compared with {self.path}; default tolerance {self.tolerances.default:g}",
        )


def _regression_outcome(row: dict, path: Path) -> GateOutcome:
    better = "higher" if row["direction"] == "higher" else "lower"
    return GateOutcome(
        kind="baseline",
        metric=row["key"],
        key=row["key"],
        op="baseline",
        threshold=row["tolerance"],
        severity="fail",
        on="value",
        missing="fail",
        expression=f"baseline: {row['why']}",
        value=row["b"],
        baseline_value=row["a"],
        ci=row["ci_b"],
        passed=False,
        status="fail",
        reason=f"{_fmt(row['a'])} in {path}, {_fmt(row['b'])} now ({better} is better); "
        f"tolerance {row['tolerance']:g}",
    )


def model_metrics(result: AuditResult, source: str | Path, model: str = "baseline") -> tuple:
    """(metrics, notes) of one audited model of a report; a usage error naming the choices."""
    if model not in result.models:
        raise UsageError(f"{source}: no model {model!r}; it has {', '.join(result.models)}")
    chosen = result.models[model]
    return chosen.metrics, chosen.notes


def report_path(path: Path) -> Path:
    """A report.json, or the run folder holding one."""
    path = Path(path)
    return path / "report.json" if path.is_dir() else path


def load_baseline(
    path: Path | None, max_drop: float, per_key: dict[str, float]
) -> BaselineCheck | None:
    """Read ``--baseline`` (a usage error if unreadable or of another schema version)."""
    if path is None:
        return None
    path = report_path(path)
    metrics, _ = gate_metrics(AuditResult.load(path).models)
    return BaselineCheck(path, metrics, Tolerances(max_drop, dict(per_key)))


def _side(result: AuditResult, path: Path, model: str) -> dict:
    card = result.models[model].card
    return {
        "report": str(path),
        "model": model,
        "verdict": result.verdict.value,
        "architecture": card.get("architecture"),
        "source": card.get("source"),
        "weights_sha256": card.get("weights_sha256"),
        "dataset": result.data.get("dataset"),
        "test_images": result.data.get("split_counts", {}).get("test"),
        "data_hash": result.run.get("data_hash"),
        "seed": result.run.get("seed"),
        "started_at": result.run.get("started_at"),
        "auditclf": result.run.get("versions", {}).get("auditclf"),
    }


def compare_reports(
    path_a: Path,
    path_b: Path,
    tolerances: Tolerances,
    *,
    model_a: str = "baseline",
    model_b: str = "baseline",
) -> dict:
    """B against A: every metric side by side, the regressions beyond tolerance first.

    Returns the content of compare.json: ``a`` and ``b`` (what was audited),
    ``same_data``, ``max_drop``, ``tolerances``, ``counts``, ``regressions``
    (in the reports' key order), ``improvements`` (compared keys that got better, largest
    first) and ``rows`` (every key, as :func:`compare_metrics` gives them).
    """
    path_a, path_b = report_path(path_a), report_path(path_b)
    result_a, result_b = AuditResult.load(path_a), AuditResult.load(path_b)
    metrics_a, _ = model_metrics(result_a, path_a, model_a)
    metrics_b, notes_b = model_metrics(result_b, path_b, model_b)
    tolerances.check(set(metrics_a) & set(metrics_b))
    rows = compare_metrics(metrics_a, metrics_b, tolerances, new_notes=notes_b)
    compared = [r for r in rows if r["tolerance"] is not None]
    regressions = [r for r in compared if r["regression"]]
    improvements = sorted(
        (r for r in compared if r["change"] == "better"), key=lambda r: -abs(r["delta"])
    )
    side_a, side_b = _side(result_a, path_a, model_a), _side(result_b, path_b, model_b)
    return {
        "a": side_a,
        "b": side_b,
        "same_data": side_a["data_hash"] == side_b["data_hash"],
        "max_drop": tolerances.default,
        "tolerances": dict(tolerances.per_key),
        "counts": {
            "compared": len(compared),
            "better": sum(r["change"] == "better" for r in compared),
            "worse": sum(r["change"] == "worse" for r in compared),
            "same": sum(r["change"] == "same" for r in compared),
            "regressions": len(regressions),
            "only_a": sum(not r["in_b"] for r in rows),
            "only_b": sum(not r["in_a"] for r in rows),
        },
        "regressions": regressions,
        "improvements": improvements,
        "rows": rows,
    }


def write_comparison(
    comparison: dict, out_dir: Path, *, templates: Path | None = None
) -> list[Path]:
    """compare.html and compare.json into ``out_dir``, both or neither; any other files
    there (e.g. the run's report, when ``out_dir`` is a run's folder) stay."""
    from auditclf.io import StagedOutput
    from auditclf.report.comparison import render_comparison

    with StagedOutput(out_dir, keep_others=True) as staged:
        staged.write_text("compare.html", render_comparison(comparison, templates=templates))
        staged.write_text(
            "compare.json",
            json.dumps(comparison, indent=2, allow_nan=False, ensure_ascii=False) + "\n",
        )
    return [Path(out_dir) / "compare.html", Path(out_dir) / "compare.json"]
