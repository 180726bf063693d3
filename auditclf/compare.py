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

A regression is a change that exceeds its tolerance *and* sampling error: the key
got worse by more than its tolerance and, where both reports give the key an
interval, the interval of the difference B − A excludes 0 on the worse side.
That interval is built from the two reports' own intervals by MOVER (Newcombe
1998, method 10; Zou & Donner 2008): for d = b − a, [d − √((b − l_b)² + (u_a − a)²),
d + √((u_b − b)² + (a − l_a)²)]. It treats the two audits as independent samples,
which is conservative when they share test images. A key without an interval on
either side is held to its tolerance alone. :func:`settings_differences` lists
the audit settings the two runs did not share (attacked images, eps, steps,
seeds, bootstrap draws, data), which :func:`compare_reports` puts first.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from auditclf.errors import UsageError
from auditclf.gates import gate_metrics
from auditclf.keys import HIGHER, LOWER, NEUTRAL, direction, interval, is_bound, is_headline
from auditclf.results import AuditResult, GateOutcome

SAME = 1e-12  # deltas below this are float noise, not a change
REGRESSION_RULE = (
    "A metric counts as a regression when it got worse by more than its tolerance and, "
    "where both reports give it an interval, the interval of the difference B − A "
    "(MOVER, Newcombe's method 10, from the two reports' own intervals) excludes 0: a "
    "change that sampling error explains is listed as within noise, not as a regression. "
    "A metric without an interval is held to its tolerance alone; a number that became "
    "null is a regression when both audits used the same settings, and is listed as not "
    "measured in B (with B's reason) when they did not: then the settings, not the model, "
    "took it away (fewer attacked images leave a group too small, say)."
)
# config sections that do not change what the audit measures: where it is written, how
# it is judged, displayed or threaded, and the model under comparison itself
NOT_SETTINGS = ("out", "gates", "regression", "report", "card", "threads", "model", "train")


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


def difference_interval(
    a: float, b: float, ci_a: list | None, ci_b: list | None
) -> list[float] | None:
    """The interval of ``b − a`` from each side's own interval (MOVER; Newcombe 1998,
    method 10); None when either side has none."""
    if ci_a is None or ci_b is None:
        return None
    (low_a, high_a), (low_b, high_b) = ci_a, ci_b
    delta = b - a
    return [
        delta - math.hypot(b - low_b, high_a - a),
        delta + math.hypot(high_b - b, a - low_a),
    ]


def _beyond_noise(way: int, difference_ci: list[float] | None) -> bool:
    """Whether the difference interval excludes 0 on the worse side (no interval: True)."""
    if difference_ci is None:
        return True
    return difference_ci[1] < 0 if way == HIGHER else difference_ci[0] > 0


def compare_metrics(
    old: dict[str, float | None],
    new: dict[str, float | None],
    tolerances: Tolerances,
    *,
    new_notes: dict[str, str] | None = None,
    same_settings: bool = True,
) -> list[dict]:
    """One row per key of ``old`` or ``new`` (CI bounds folded into their metric's row).

    A row: key, a (old), b (new), delta (b − a), direction ("higher"/"lower"/None),
    change ("better"/"worse"/"same"/None), ci_a, ci_b, difference_ci (of b − a, see
    :func:`difference_interval`), tolerance (None: not compared), regression (worse by
    more than the tolerance and beyond sampling error, or a number that became null
    under the ``same_settings``), lost (a number that became null when the settings
    differ: not measured in B, ``why`` giving B's reason), within_noise (worse by more
    than the tolerance, but within sampling error) and, for a regression, a one-line
    ``why``.
    """
    notes = new_notes or {}
    rows = []
    for key in list(old) + [k for k in new if k not in old]:
        if is_bound(key):
            continue
        a, b = old.get(key), new.get(key)
        ci_a, ci_b = interval(old, key), interval(new, key)
        way = direction(key)
        delta = None if a is None or b is None else b - a
        difference_ci = None if delta is None else difference_interval(a, b, ci_a, ci_b)
        change = None
        if delta is not None and way != NEUTRAL:
            change = "same" if abs(delta) <= SAME else ("better" if delta * way > 0 else "worse")
        tolerance = tolerances.for_key(key) if key in old and key in new else None
        why, within_noise, lost = None, False, False
        if tolerance is not None and a is not None:
            if b is None:
                why = f"{key} became null: {notes.get(key, 'undefined')} (was {_fmt(a)})"
                lost = not same_settings
            elif change == "worse" and abs(delta) > tolerance + SAME:
                if _beyond_noise(way, difference_ci):
                    moved = "dropped" if way == HIGHER else "rose"
                    why = f"{key} {moved} {abs(delta):.3g} > {tolerance:g}"
                else:
                    within_noise = True
        rows.append(
            {
                "key": key,
                "a": a,
                "b": b,
                "delta": delta,
                "direction": {HIGHER: "higher", LOWER: "lower"}.get(way),
                "change": change,
                "ci_a": ci_a,
                "ci_b": ci_b,
                "difference_ci": difference_ci,
                "in_a": key in old,
                "in_b": key in new,
                "tolerance": tolerance,
                "regression": why is not None and not lost,
                "lost": lost,
                "within_noise": within_noise,
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
    settings: dict[str, object] = field(default_factory=dict)  # the old run's audit settings

    def warn_on_settings(self, result: AuditResult) -> None:
        """Add a warning finding to ``result``'s baseline model when the old run was audited
        with other settings (attacked images, eps, seeds, data...): its numbers are then not
        like for like, and a change may come from the settings, not the model."""
        new = _audit_settings(result)
        differ = [
            f"{key} {_shown(self.settings.get(key))} → {_shown(new.get(key))}"
            for key in list(self.settings) + [k for k in new if k not in self.settings]
            if self.settings.get(key) != new.get(key)
        ]
        message = (
            f"the baseline {self.path} was audited with other settings, so a change may "
            f"come from them and not from the model: {'; '.join(differ)}"
        )
        findings = result.models["baseline"].findings
        if differ and all(f["message"] != message for f in findings):  # once, if re-judged
            finding = {"severity": "warning", "message": message, "section": "regression"}
            findings.insert(0, {**finding, "metric": None})

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
            f"than its tolerance and sampling error ({compared} compared)",
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
        f"tolerance {row['tolerance']:g}{_difference_text(row['difference_ci'])}",
    )


def _difference_text(difference_ci: list[float] | None) -> str:
    if difference_ci is None:
        return "; no interval, held to the tolerance alone"
    low, high = difference_ci
    return f"; difference interval [{low:.4g}, {high:.4g}] excludes 0"


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
    old = AuditResult.load(path)
    metrics, _ = gate_metrics(old.models)
    return BaselineCheck(path, metrics, Tolerances(max_drop, dict(per_key)), _audit_settings(old))


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    """{"robustness": {"samples": 60}} → {"robustness.samples": 60}."""
    flat: dict[str, object] = {}
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{key}."))
        else:
            flat[key] = value
    return flat


def _audit_settings(result: AuditResult) -> dict[str, object]:
    """What decides a run's numbers besides its model: its config (less NOT_SETTINGS),
    the data it audited and the auditclf that audited it."""
    config = {
        key: value
        for key, value in _flat(result.run.get("config", {})).items()
        if key.partition(".")[0] not in NOT_SETTINGS
    }
    return {
        **config,
        "data (SHA-256)": result.run.get("data_hash"),
        "data (test images)": result.data.get("split_counts", {}).get("test"),
        "auditclf version": result.run.get("versions", {}).get("auditclf"),
    }


def _shown(value: object) -> str:
    """A setting's value in one line: JSON, so lists and null read as written."""
    return json.dumps(value, ensure_ascii=False)


def settings_differences(result_a: AuditResult, result_b: AuditResult) -> list[dict]:
    """The audit settings the two runs did not share, as {setting, a, b} (None: unset)."""
    a, b = _audit_settings(result_a), _audit_settings(result_b)
    return [
        {"setting": key, "a": a.get(key), "b": b.get(key)}
        for key in list(a) + [k for k in b if k not in a]
        if a.get(key) != b.get(key)
    ]


def _side(result: AuditResult, path: Path, model: str) -> dict:
    from auditclf.report.verdict import verdict_banner  # the words every format uses

    card = result.models[model].card
    return {
        "report": str(path),
        "model": model,
        "verdict": result.verdict.value,
        "verdict_label": verdict_banner(result).label,
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
    ``same_data``, ``settings`` (the audit settings that differ, see
    :func:`settings_differences`), ``rule`` (when a change is a regression),
    ``max_drop``, ``tolerances``, ``counts``, ``regressions``, ``within_noise`` (worse
    beyond the tolerance but within sampling error), ``lost`` (null in B, whose settings
    differ)
    (in the reports' key order), ``improvements`` (compared keys that got better, largest
    first) and ``rows`` (every key, as :func:`compare_metrics` gives them).
    """
    path_a, path_b = report_path(path_a), report_path(path_b)
    result_a, result_b = AuditResult.load(path_a), AuditResult.load(path_b)
    metrics_a, _ = model_metrics(result_a, path_a, model_a)
    metrics_b, notes_b = model_metrics(result_b, path_b, model_b)
    tolerances.check(set(metrics_a) & set(metrics_b))
    settings = settings_differences(result_a, result_b)
    rows = compare_metrics(
        metrics_a, metrics_b, tolerances, new_notes=notes_b, same_settings=not settings
    )
    compared = [r for r in rows if r["tolerance"] is not None]
    regressions = [r for r in compared if r["regression"]]
    lost = [r for r in compared if r["lost"]]
    within_noise = [r for r in compared if r["within_noise"]]
    improvements = sorted(
        (r for r in compared if r["change"] == "better"), key=lambda r: -abs(r["delta"])
    )
    side_a, side_b = _side(result_a, path_a, model_a), _side(result_b, path_b, model_b)
    return {
        "a": side_a,
        "b": side_b,
        "same_data": side_a["data_hash"] == side_b["data_hash"],
        "settings": settings,
        "rule": REGRESSION_RULE,
        "max_drop": tolerances.default,
        "tolerances": dict(tolerances.per_key),
        "counts": {
            "compared": len(compared),
            "better": sum(r["change"] == "better" for r in compared),
            "worse": sum(r["change"] == "worse" for r in compared),
            "same": sum(r["change"] == "same" for r in compared),
            # null on a side, or a key with no better direction: neither better nor worse
            "other": sum(r["change"] is None for r in compared),
            "regressions": len(regressions),
            "within_noise": len(within_noise),
            "lost": len(lost),
            "only_a": sum(not r["in_b"] for r in rows),
            "only_b": sum(not r["in_a"] for r in rows),
        },
        "regressions": regressions,
        "within_noise": within_noise,
        "lost": lost,
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
