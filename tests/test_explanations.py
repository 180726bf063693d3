"""Attributions: Grad-CAM by hand, IG completeness, sanity, stability, localisation, shortcuts."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
from captum.attr import Lime

from auditclf.analyses import AnalysisContext
from auditclf.analyses.explanations import explanations
from auditclf.config import AnalysisConfig, ExplainConfig
from auditclf.data import SplitView
from auditclf.evidence import new_table
from auditclf.keys import explain_column
from auditclf.models.adapter import ModelAdapter
from auditclf.probes import PROBES, ProbeContext, attributions
from auditclf.probes.attributions import (
    curve_areas,
    gradcam_maps,
    ig_maps,
    lime_maps,
    localisation,
    rank_agreement,
    region_swap_flips,
    shortcut_region,
    superpixels,
)
from auditclf.progress import Progress
from auditclf.seeding import derive_seed
from tests.conftest import cli


class OneConv(nn.Module):
    """1×1 conv (2 channels, no bias) → ReLU → global average pool → linear (no bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1, bias=False)
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
            self.head.weight.copy_(torch.tensor([[1.0, 3.0], [-1.0, 1.0]]))

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def test_gradcam_of_a_one_conv_net_matches_the_hand_computation():
    x = torch.tensor([[[[0.5, 0.0], [1.0, 0.25]]]])
    model = OneConv()
    cam = gradcam_maps(model, model.conv, x, torch.tensor([0]))
    # captum hooks the conv output A (before the ReLU): A_0 = 2x, A_1 = -x.
    # dy_0/dA_k at a pixel = v_0k / 4 where ReLU passes (A_k > 0), else 0, with v_0 = (1, 3).
    # alpha_0 = mean over the 4 pixels = (1/4)·(3 pixels with x > 0)·(1/4) = 3/16;
    # alpha_1 = 0 (A_1 <= 0 everywhere). Grad-CAM = ReLU(alpha_0·A_0 + alpha_1·A_1).
    expected = torch.relu(3 / 16 * 2 * x[0, 0])
    assert torch.allclose(cam[0], expected, atol=1e-6)


def test_integrated_gradients_is_complete_on_the_test_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    ).eval()
    x = torch.rand(5, 1, 6, 6)
    target = model(x).argmax(1)
    _, delta = ig_maps(model, x, target, steps=32)
    assert delta.max().item() < 0.05


def test_deletion_in_the_true_order_beats_a_random_order():
    # A linear model whose class-1 logit is 5 × the sum of four pixels.
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2, bias=False))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[1, torch.tensor([0, 1, 4, 5])] = 5.0
    x = torch.ones(1, 1, 4, 4)
    target = torch.tensor([1])
    informed = torch.tensor([[0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]])
    backwards = informed.flip(1)
    good_del, good_ins = curve_areas(model, x, target, informed, steps=16)
    bad_del, bad_ins = curve_areas(model, x, target, backwards, steps=16)
    assert good_del[0] < bad_del[0] and good_ins[0] > bad_ins[0]


def _probe_context(model: nn.Module, n: int = 12, classes: int = 2, **explain) -> ProbeContext:
    """A ProbeContext over ``n`` random 8×8 gray images with alternating labels."""
    rng = np.random.default_rng(0)
    images = (rng.random((n, 1, 8, 8)) * 255).astype(np.uint8)
    labels = np.arange(n) % classes
    test = SplitView(images, labels, np.array([f"img{i}" for i in range(n)]), pd.DataFrame(), None)
    return ProbeContext(
        model=ModelAdapter(model, [0.0], [1.0]).eval(),
        test=test,
        classes=[str(c) for c in range(classes)],
        device=torch.device("cpu"),
        seed=0,
        batch_size=64,
        explain=ExplainConfig(enabled=True, **explain),
    )


def _probe_table(ctx: ProbeContext) -> pd.DataFrame:
    table = new_table("baseline", ctx.test.ids, ctx.test.labels, ctx.classes, ctx.test.attributes)
    return PROBES.get("clean")(ctx, table)


def _analyse(ctx: ProbeContext, table: pd.DataFrame):
    analysis = AnalysisContext(ctx.classes, AnalysisConfig(), 0, {}, artifacts=ctx.artifacts)
    return explanations(table, analysis)


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 8),
        nn.ReLU(),
        nn.Linear(8, 2),
    )


def test_a_method_that_returns_the_input_is_flagged_as_insensitive(monkeypatch):
    # An edge-detector-like "explanation": whatever the model, the map is the image itself,
    # so re-initialising the model's top layers leaves it unchanged.
    monkeypatch.setattr(
        attributions.GradCam, "maps", lambda self, model, x, *rest: (x.sum(1).detach(), None)
    )
    ctx = _probe_context(_small_cnn(), methods=["gradcam"])
    table = _probe_table(ctx)
    table = attributions.attribution_probe(ctx, table)
    section = _analyse(ctx, table)
    assert section.metrics["explain.gradcam.randomization_correlation"] == pytest.approx(1.0)
    assert any("barely change" in f.message for f in section.findings)


def test_real_maps_of_a_trained_method_are_not_flagged_insensitive():
    ctx = _probe_context(_small_cnn(), methods=["integrated_gradients"])
    table = _probe_table(ctx)
    table = attributions.attribution_probe(ctx, table)
    section = _analyse(ctx, table)
    assert section.metrics["explain.integrated_gradients.randomization_correlation"] < 0.5
    assert not any("barely change" in f.message for f in section.findings)


def test_a_model_without_conv_layers_skips_gradcam_with_the_reason_and_runs_the_rest():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 2))
    ctx = _probe_context(mlp, methods=["gradcam", "integrated_gradients"])
    table = _probe_table(ctx)
    table = attributions.attribution_probe(ctx, table)
    run = ctx.artifacts["explanations"]
    assert run["methods"] == ["integrated_gradients"]
    section = _analyse(ctx, table)
    assert "explain.integrated_gradients.deletion_auc" in section.metrics
    assert not any(k.startswith("explain.gradcam") for k in section.metrics)
    assert any(
        "Grad-CAM" in f.message and "no convolutional layer" in f.message for f in section.findings
    )


def test_rank_agreement_of_equal_reversed_and_flat_maps():
    a = np.arange(100, dtype=float)
    assert rank_agreement(a, a, 0.1) == (pytest.approx(1.0), 1.0)
    correlation, overlap = rank_agreement(a, -a, 0.1)
    assert correlation == pytest.approx(-1.0) and overlap == 0.0
    correlation, _ = rank_agreement(a, np.zeros(100), 0.1)
    assert np.isnan(correlation)


def test_localisation_mass_and_pointing_game_against_a_mask():
    mask = np.zeros((32, 32), dtype=bool)
    mask[8:16, 8:16] = True
    heat = np.zeros((32, 32))
    heat[8:16, 8:16] = 3.0  # three quarters of |attribution| on the object
    heat[20:28, 20:28] = -1.0
    inside, hit = localisation(heat, mask)
    assert inside == pytest.approx(0.75) and hit
    off = np.zeros((32, 32))
    off[30, 30] = 1.0  # the maximum 14 px from the object: beyond the 2-px tolerance at 32 px
    assert localisation(off, mask) == (0.0, False)
    near = np.zeros((32, 32))
    near[17, 12] = 1.0  # 2 px below the object: within the tolerance
    assert localisation(near, mask)[1]


class _MeanOf(nn.Module):
    """Class 1 when the mean of the selected pixels is bright, else class 0."""

    def __init__(self, region: torch.Tensor) -> None:
        super().__init__()
        self.region = region

    def forward(self, x):
        brightness = (x[:, 0] * self.region).sum((1, 2)) / self.region.sum()
        return torch.stack([0.5 - brightness, brightness - 0.5], 1) * 10


def test_region_swap_flips_a_model_that_reads_the_border_and_not_one_that_reads_the_centre():
    region, text = shortcut_region(None, 8, 8, 1)
    assert text == "on the outer 1-pixel border" and region[0].sum() == 28
    border = torch.as_tensor(region[0], dtype=torch.float32)
    x = torch.zeros(1, 1, 8, 8)  # dark border and centre: class 0 for both models
    donors = torch.ones(1, 3, 1, 8, 8)  # bright donors
    donor_regions = np.broadcast_to(region[0], (1, 3, 8, 8))
    pred = torch.tensor([0])
    reads_border = region_swap_flips(_MeanOf(border), x, pred, region, donors, donor_regions)
    reads_centre = region_swap_flips(_MeanOf(1 - border), x, pred, region, donors, donor_regions)
    assert reads_border[0] == 1.0 and reads_centre[0] == 0.0


def test_explanations_in_a_real_run(digits_run):
    """The digits run explained every class; its report passes a gate on Integrated
    Gradients' completeness (judged by `auditclf gate`, no second audit) and its explanations
    section shows the galleries, the shortcut check and the method."""
    gated = cli("gate", digits_run, "--gate", "explain.integrated_gradients.convergence_delta<0.05")
    assert gated.status == 0, gated
    html = (digits_run / "report.html").read_text()
    section = html.split('<section id="explanations">')[1].split("</section>")[0]
    assert "Class 0: attribution maps with their scores" in section
    assert section.count('class="attr-row"') >= 10  # one explained image per class at least
    assert "no shortcut found" in section and "How this was computed" in section


def test_superpixels_are_a_grid_for_tiny_images_and_slic_for_larger_ones():
    tiny = superpixels(np.zeros((1, 8, 8)))
    assert tiny.shape == (8, 8) and len(np.unique(tiny)) == 64  # 8 // 7 = 1-pixel cells
    mnist = superpixels(np.zeros((1, 28, 28)))
    assert len(np.unique(mnist)) == 49  # 4×4-pixel cells, 7 per side
    rng = np.random.default_rng(0)
    picture = np.zeros((3, 32, 32))
    picture[:, 8:24, 8:24] = 1.0
    picture += rng.normal(0, 0.02, picture.shape)
    segments = superpixels(np.clip(picture, 0, 1))
    assert segments.shape == (32, 32) and 4 <= len(np.unique(segments)) <= 80


def test_lime_is_seeded_per_image():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    x = torch.rand(2, 1, 8, 8)
    target = torch.tensor([0, 1])
    first = lime_maps(model, x, target, 60, ["a", "b"], seed=0)
    again = lime_maps(model, x[[1, 0]], target[[1, 0]], 60, ["b", "a"], seed=0)
    other = lime_maps(model, x, target, 60, ["a", "b"], seed=1)
    assert torch.equal(first, again[[1, 0]])  # independent of batch order
    assert not torch.equal(first, other)


SHORTCUT_RUN = (
    "data: {{dataset: shapes, shapes: {{n_per_class: {n}, size: 16, "
    "background_correlation: {correlation}, test_background_correlation: 0.0}}}}\n"
    "train: {{epochs: {epochs}}}\nrobustness: {{enabled: false}}\nharden: {{method: none}}\n"
    "corruptions: {{enabled: false}}\n"
    "explain: {{enabled: true, methods: [integrated_gradients, lime], lime_samples: 100, "
    "correct_per_class: 2, errors_per_class: 1}}\n"
)


@pytest.mark.parametrize(
    ("correlation", "n", "epochs", "flagged"),
    [(1.0, 300, 4, True), (0.0, 400, 10, False)],
    ids=["background-gives-the-class-away", "background-uncorrelated"],
)
def test_shapes_shortcut_is_flagged_only_when_the_background_gives_the_class_away(
    tmp_path, correlation, n, epochs, flagged
):
    config = tmp_path / "audit.yaml"
    config.write_text(SHORTCUT_RUN.format(n=n, correlation=correlation, epochs=epochs))
    result = cli("run", "--config", config, "--out", tmp_path / "out", "--quiet")
    assert result.status == 0, result
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    metrics = report["models"]["baseline"]["metrics"]
    messages = [f["message"] for f in report["models"]["baseline"]["findings"]]
    shortcut = [m for m in messages if m.startswith("Likely shortcut")]
    html = (tmp_path / "out" / "report.html").read_text()
    if flagged:
        # Trained where the background named the class, tested where it does not: the model
        # follows the background, and swapping it changes most predictions.
        assert metrics["explain.shortcut.flagged_classes"] >= 3
        assert metrics["explain.shortcut.swap_flip_rate"] >= 0.5
        assert shortcut and "outside the object" in shortcut[0]
        assert "Likely shortcut for class" in html
    else:
        assert metrics["explain.shortcut.flagged_classes"] == 0
        assert metrics["explain.shortcut.swap_flip_rate"] < 0.2
        assert not shortcut and "no shortcut found" in html
    # Localisation against the shapes' object masks is reported either way.
    assert 0 <= metrics["explain.integrated_gradients.mask_mass"] <= 1


def test_lime_equals_captums_lime_called_directly():
    torch.manual_seed(0)
    model = _small_cnn().eval()
    x = torch.rand(1, 1, 8, 8)
    target = model(x).argmax(1)
    ours = lime_maps(model, x, target, 80, ["img"], seed=0)
    mask = torch.as_tensor(superpixels(x[0].numpy())).long()
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(0, "lime", "img"))
        direct = Lime(model).attribute(
            x,
            baselines=0.0,
            target=target,
            feature_mask=mask.expand_as(x),
            n_samples=80,
            perturbations_per_eval=80,
        )
    assert torch.allclose(ours[0], direct[0].sum(0), atol=1e-5), (
        (ours[0] - direct[0].sum(0)).abs().max()
    )


def test_an_unknown_target_layer_exits_2_listing_the_conv_layers(tmp_path):
    config = tmp_path / "audit.yaml"
    config.write_text("data: {dataset: digits}\nmodel: {target_layer: features.99}\n")
    result = cli("run", "--config", config, "--out", tmp_path / "out", "--quiet")
    assert result.status == 2, result
    assert "features.99" in result.err and "conv layers found" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_the_probe_reports_each_method_as_it_runs():
    stream = io.StringIO()
    ctx = _probe_context(_small_cnn(), methods=["gradcam", "integrated_gradients"])
    table = _probe_table(ctx)
    ctx.progress, ctx.label = Progress("lines", stream, every=0), "baseline"
    attributions.attribution_probe(ctx, table)
    lines = stream.getvalue().splitlines()
    n = len(ctx.arrays[explain_column("image")])
    assert lines[0] == f"explanations of baseline: started ({2 * n} steps)"
    assert any(line.endswith(f"gradcam, {n} images") for line in lines)
    assert any(line.endswith(f"integrated_gradients, {n} images") for line in lines)
    assert lines[-1].startswith("explanations of baseline: done in ")
