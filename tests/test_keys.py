"""The key families: every key a run writes belongs to exactly one, `auditclf metrics
--list-keys` prints them, and the README's key table names the same families."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from auditclf import keys
from auditclf.keys.families import FAMILIES, WORST_ACCURACY

from .conftest import cli

README = Path(__file__).resolve().parent.parent / "README.md"
# A value for each placeholder the README's key table uses.
EXAMPLES = {
    "class": "3",
    "attribute": "stroke",
    "value": "thin",
    "attack": "pgd_linf",
    "eps": "8/255",
    "k": "2",
    "method": "gradcam",
    "split": "test",
    "metric": "accuracy",
    "name": "below_clean",
    "corruption": "fog",
    "severity": "3",
    "format": "onnx-int8",
}


def _report_keys(folder: Path) -> set[str]:
    report = json.loads((folder / "report.json").read_text())
    return {
        keys.model_key(name, key)
        for name, model in report["models"].items()
        for key in model["metrics"]
    }


def test_every_key_of_the_fixture_runs_is_of_exactly_one_family(digits_run, gated_run):
    produced = _report_keys(digits_run) | _report_keys(gated_run)
    assert any(k.startswith("hardened.") for k in produced)
    for key in produced:
        parsed = keys.parse(key)
        assert parsed is not None, key
        assert keys.families_matching(parsed.metric) == [parsed.family], key
        if parsed.bound is not None:
            assert key.endswith(parsed.family.interval[parsed.bound == "high"])


def test_list_keys_prints_every_family_the_run_uses(digits_run):
    result = cli("metrics", "--list-keys")
    assert result.status == 0 and result.err == ""
    listed = {line.split()[0] for line in result.out.splitlines()}
    used = {keys.parse(k).family.pattern for k in _report_keys(digits_run)}
    assert used <= listed
    assert {f.pattern for f in FAMILIES} <= listed
    difference = next(
        line
        for line in result.out.splitlines()
        if line.startswith("fairness.<attribute>.accuracy.difference ")
    )
    assert "lower" in difference and "KEY_ci_low KEY_ci_high" in difference


def test_metrics_needs_a_report_or_list_keys():
    result = cli("metrics")
    assert result.status == 2
    assert len(result.err.strip().splitlines()) == 1 and "--list-keys" in result.err


def test_families_spell_and_read_back_their_keys():
    key = WORST_ACCURACY.key(eps="8/255")
    assert key == "robustness.worst@8/255.accuracy"
    assert WORST_ACCURACY.match(key) == {"eps": "8/255"}
    assert keys.parse(f"hardened.{key}.ci_low").family is WORST_ACCURACY
    assert keys.interval_keys("fairness.a.accuracy.difference") == (
        "fairness.a.accuracy.difference_ci_low",
        "fairness.a.accuracy.difference_ci_high",
    )
    assert keys.interval_keys("fairness.a.equalized_odds_difference")[0].endswith(
        "difference.ci_low"
    )
    assert keys.parse_adv_column(keys.adv_column("fgsm", "0.1", "pred")) == ("fgsm", "0.1", "pred")
    with pytest.raises(TypeError, match="give exactly eps"):
        WORST_ACCURACY.key(attack="fgsm", eps="0.1")


def _readme_table() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Metric keys") :]
    section = section[: section.index("\n## ", 1)]
    return [line for line in section.splitlines() if line.startswith("| `")]


def _readme_keys(rows: list[str]) -> list[str]:
    """The key column's keys, placeholders filled in; ``.x`` after a key is that key with
    its last part replaced (``.recall`` after ``performance.class.<class>.precision``)."""
    found = []
    for row in rows:
        full = None
        for item in re.findall(r"`([^`]+)`", row.split(" | ")[0]):
            if item.split(".")[0] in keys.SECTIONS:
                full = item
            elif item.startswith(".") and full and item not in (".ci_low", ".ci_high"):
                full = full.rsplit(".", 1)[0] + item
            else:
                continue
            found.append(re.sub(r"<([a-z]+)>", lambda m: EXAMPLES[m[1]], full))
    return found


def test_the_readme_key_table_names_the_families():
    rows = _readme_table()
    documented = _readme_keys(rows)
    assert len(documented) > 50
    for key in documented:
        parsed = keys.parse(key)
        assert parsed is not None, f"README key {key} is of no family"
    words = set(re.findall(r"[a-z][a-z0-9_]*", " ".join(re.findall(r"`([^`]+)`", "".join(rows)))))
    for family in FAMILIES:
        literal = re.sub(r"<[a-z]+>", "", family.pattern)
        missing = set(re.findall(r"[a-z][a-z0-9_]*", literal)) - words
        assert not missing, f"{family.pattern}: {missing} not in the README's key table"
