"""The README's default audit: basic-cnn trained on the bundled MNIST-5k digits, attacked,
hardened with PGD adversarial training, and attacked again."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import cli

# The default audit written out, with the gates a user of it would set.
DEFAULT_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mnist5k.yaml"


def test_default_run_reaches_97_percent_and_shows_every_section(tmp_path):
    out = tmp_path / "audit-report"
    result = cli("run", "--out", out, "--quiet")
    assert result.status == 0, result
    report = json.loads((out / "report.json").read_text())
    metrics = report["models"]["baseline"]["metrics"]
    assert metrics["performance.accuracy"] >= 0.97
    assert report["data"]["dataset"] == "mnist5k"
    assert report["data"]["split_counts"] == {"train": 3500, "val": 1000, "test": 500}
    html = (out / "report.html").read_text()
    per_class = next(
        s for s in report["models"]["baseline"]["sections"] if s["name"] == "performance"
    )["tables"]["per_class"]["rows"]
    assert [row[0] for row in per_class] == [str(d) for d in range(10)]
    for text in (
        "Confusion matrix",
        "Reliability diagram",
        "Confidence histogram",
        "Images per class and split",
        "test images also in train (leakage)",
    ):
        assert text in html, text
    hardened = report["models"]["hardened"]["metrics"]
    # PGD-AT at eps 0.1 buys robustness at little clean cost, and both evaluations are sound.
    assert hardened["robustness.pgd_linf@0.1.accuracy"] > 0.80
    assert hardened["performance.accuracy"] > 0.95
    assert metrics["robustness.reliable"] == 1.0 and hardened["robustness.reliable"] == 1.0
    # both models ran channels-last (the fast kernels), and every curve is monotone in eps
    assert {m["artifacts"]["layout"] for m in report["models"].values()} == {"channels-last"}
    for model in (metrics, hardened):
        curve = [model[f"robustness.worst@{e}.accuracy"] for e in ("0.05", "0.1", "0.2", "0.3")]
        assert curve == sorted(curve, reverse=True)
    assert (
        metrics["robustness.pgd_linf@0.1.accuracy"] < hardened["robustness.pgd_linf@0.1.accuracy"]
    )
    for text in ("Baseline vs hardened", "Gallery", "Reliable."):
        assert text in html, text
    # Fairness over the built-in digit attributes, with the tertile cut points explained.
    fairness = next(
        s for s in report["models"]["baseline"]["sections"] if s["name"] == "fairness"
    )
    assert [block["name"] for block in fairness["attributes"]] == ["stroke", "slant"]
    assert metrics["fairness.stroke.accuracy.difference"] is not None
    for text in ("Accuracy per group of stroke", "tertiles on the training split", "slant ="):
        assert text in html, text
    # Explanations on by default: three methods scored, galleries per class, no shortcut
    # on MNIST's empty border, and IG complete.
    for method in ("gradcam", "integrated_gradients", "lime"):
        assert metrics[f"explain.{method}.deletion_gain"] > 0, method
        assert metrics[f"explain.{method}.adversarial_rank_correlation"] is not None
    assert metrics["explain.integrated_gradients.convergence_delta"] < 0.05
    assert metrics["explain.shortcut.flagged_classes"] == 0
    assert html.count('class="gallery-class"') == 10
    # Numbers in report.json, pixels in artifacts.npz (issue 12: report.json at most 1 MB).
    assert (out / "report.json").stat().st_size <= 1_000_000
    assert (out / "artifacts.npz").is_file() and "data:image" not in json.dumps(report)
    # examples/mnist5k.yaml is this audit written out (tests/test_examples.py checks so): its
    # gates pass on this report, as the example documents.
    gated = cli("gate", out, "--config", DEFAULT_EXAMPLE)
    assert gated.status == 0, gated
