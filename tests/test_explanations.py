"""Attributions: Grad-CAM by hand, IG completeness, the sanity and faithfulness scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from auditclf.analyses import AnalysisContext
from auditclf.analyses.explanations import explanations
from auditclf.config import AnalysisConfig, ExplainConfig
from auditclf.probes.attributions import (
    curve_areas,
    gradcam_maps,
    ig_maps,
    lime_maps,
    stand_in_artifacts,
    superpixels,
)
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


def _context(maps: list[dict]) -> AnalysisContext:
    artifacts = stand_in_artifacts(ExplainConfig(methods=["gradcam"]))
    artifacts["maps"] = maps
    return AnalysisContext(
        ["a", "b"], AnalysisConfig(), 0, {}, artifacts={"explanations": artifacts}
    )


def test_a_method_that_returns_the_input_is_flagged_as_insensitive():
    rng = np.random.default_rng(0)
    maps = []
    for i in range(4):
        image = rng.random((1, 6, 6))
        # An edge-detector-like "explanation": the map is the image itself, so re-initialising
        # the model leaves it unchanged: rank correlation 1.
        maps.append(
            {
                "sample_id": f"x{i}",
                "method": "gradcam",
                "label": 0,
                "pred": 0,
                "deletion_auc": 0.4,
                "insertion_auc": 0.5,
                "random_deletion_auc": 0.45,
                "random_insertion_auc": 0.45,
                "randomization_correlation": 1.0,
                "convergence_delta": None,
                "map": image[0].tolist(),
                "image": image.tolist(),
            }
        )
    section = explanations(None, _context(maps))
    assert section.metrics["explain.gradcam.randomization_correlation"] == pytest.approx(1.0)
    assert any("barely change" in f.message for f in section.findings)


def test_explanations_in_a_real_run(tmp_path):
    config = tmp_path / "audit.yaml"
    config.write_text(
        "data: {dataset: digits}\ntrain: {epochs: 3}\nrobustness: {enabled: false}"
        "\nharden: {method: none}\nexplain: {enabled: true, correct_per_class: 1, "
        "errors_per_class: 0}\n"
    )
    result = cli(
        "run",
        "--config",
        config,
        "--gate",
        "explain.integrated_gradients.convergence_delta<0.05",
        "--out",
        tmp_path / "out",
        "--quiet",
    )
    assert result.status == 0, result
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Attribution maps per method" in html and "How this was computed" in html


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
