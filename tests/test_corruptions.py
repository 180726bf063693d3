"""Known-answer and invariance tests of auditclf.corruptions (issue 14, item 1)."""

from itertools import pairwise

import pytest
import torch
import torchvision.transforms.v2.functional as F

from auditclf.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    _blur_matrix,
    _elastic_warp,
    _perspective_coefficients,
    _perspective_warp,
    _unit_field,
    corrupt,
    corrupt_severities,
    severity_table,
)

RANDOM = ("gaussian_noise", "shot_noise", "impulse_noise", "motion_blur", "fog", "rotate",
          "perspective", "occlusion", "elastic")


def _batch(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _smooth_scene_with_grain(n=32):
    """A fixed (1, 1, n, n) image: a low-frequency pattern plus Gaussian grain of std 0.1."""
    rows, cols = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    scene = 0.5 + 0.3 * torch.sin(cols / 4.0) * torch.cos(rows / 5.0)
    grain = 0.1 * torch.randn(n, n, generator=torch.Generator().manual_seed(3))
    return (scene + grain).clamp(0, 1)[None, None]


def _high_frequency_energy(x):
    """Mean squared 4-neighbour Laplacian: the energy a low-pass operation removes."""
    lap = (4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1]
           - x[..., 1:-1, :-2] - x[..., 1:-1, 2:])
    return lap.pow(2).mean().item()


def test_table_lists_every_corruption_in_order():
    table = severity_table()
    assert [row["name"] for row in table] == list(CORRUPTIONS)
    assert len(CORRUPTIONS) == 15
    assert all(len(row["values"]) == len(SEVERITIES) for row in table)
    rows = {row["name"]: row for row in table}
    assert rows["pixelate"]["pixels_at_side"][8] == (5, 2)
    assert rows["gaussian_blur"]["pixels_at_side"][28] == (0.7, 2.8)
    assert rows["gaussian_noise"]["in_words"][5] == "0.38 std in [0,1] units"


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_severity_zero_is_identity_and_every_severity_is_a_valid_image(name):
    for shape in ((4, 1, 8, 8), (3, 3, 16, 16)):
        x = _batch(shape)
        assert torch.equal(corrupt(x, name, 0, range(shape[0])), x)
        for severity in SEVERITIES:
            y = corrupt(x, name, severity, list(range(shape[0])))
            assert y.shape == x.shape and y.dtype == x.dtype
            assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
            assert not torch.equal(y, x), (name, severity, shape)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_batch_equals_one_at_a_time_and_same_seeds_repeat(name):
    """Each image gets the same at every severity in a batch of 37, in two splits of it and
    alone: grouped convolutions, batched matrix products and fused multiply-adds split
    between threads round differently with the batch, so this catches one left in a
    corruption (it caught motion blur's and contrast's)."""
    x = _batch((37, 3, 20, 20), seed=1)
    seeds = list(range(11, 48))
    batch = corrupt_severities(x, name, SEVERITIES, seeds)
    for cut in (5, 16):
        head = corrupt_severities(x[:cut], name, SEVERITIES, seeds[:cut])
        tail = corrupt_severities(x[cut:], name, SEVERITIES, seeds[cut:])
        for i, whole in enumerate(batch):
            assert torch.equal(torch.cat([head[i], tail[i]]), whole), (cut, i + 1)
    for i in (0, 20):
        alone = corrupt_severities(x[i:i + 1], name, SEVERITIES, seeds[i:i + 1])
        for one, whole in zip(alone, batch, strict=True):
            assert torch.equal(one, whole[i:i + 1]), i
    assert torch.equal(corrupt(x, name, 3, seeds), batch[2])
    shuffled = corrupt(x[[4, 0, 2]], name, 3, [15, 11, 13])
    assert torch.equal(shuffled, batch[2][[4, 0, 2]])


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_all_severities_at_once_equal_one_at_a_time(name):
    """One draw shared by the severities gives each exactly what ``corrupt`` gives alone,
    whatever other severities are asked for with it, in whatever order."""
    x = _batch((3, 3, 10, 12), seed=5)
    seeds = [7, 8, 9]
    together = corrupt_severities(x, name, SEVERITIES, seeds)
    for severity, out in zip(SEVERITIES, together, strict=True):
        assert torch.equal(out, corrupt(x, name, severity, seeds)), severity
    mixed = corrupt_severities(x, name, (4, 0, 2), seeds)
    assert torch.equal(mixed[0], together[3]) and torch.equal(mixed[2], together[1])
    assert torch.equal(mixed[1], x)


def test_batched_perspective_equals_torchvision_per_image():
    h, w = 12, 20
    x = _batch((4, 3, h, w), seed=6)
    start = [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]
    shifts = torch.rand(4, 4, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    ends = torch.tensor(start, dtype=torch.float64) + (shifts - 0.5) * 6
    ours = _perspective_warp(x, _perspective_coefficients(torch.tensor(start).double(), ends))
    for i in range(4):
        theirs = F.perspective(x[i], start, ends[i].tolist(),
                               interpolation=F.InterpolationMode.BILINEAR)
        assert torch.allclose(ours[i], theirs, atol=1e-5, rtol=0), i


def test_batched_elastic_equals_torchvision_per_image():
    x = _batch((4, 3, 12, 20), seed=7)
    displacement = (_batch((4, 12, 20, 2), seed=8) - 0.5) * 0.4
    ours = _elastic_warp(x, displacement)
    for i in range(4):
        theirs = F.elastic(x[i], displacement[i:i + 1],
                           interpolation=F.InterpolationMode.BILINEAR)
        assert torch.allclose(ours[i], theirs, atol=1e-5, rtol=0), i


def test_elastic_field_is_torchvision_blur_of_unit_rms():
    noise = _batch((3, 2, 12, 20), seed=9).double() * 2 - 1
    blurred = _blur_matrix(12, 9, 1.7) @ noise @ _blur_matrix(20, 9, 1.7).T
    assert torch.allclose(blurred, F.gaussian_blur(noise, [9, 9], [1.7, 1.7]), atol=1e-12)
    unit = _unit_field(torch.Generator().manual_seed(0), 12, 20)
    assert unit.shape == (12, 20, 2)
    assert unit.pow(2).mean().item() == pytest.approx(1.0)


def test_random_corruptions_depend_on_the_seed():
    """Equal seeds give equal images; among eight other seeds some differ (rotate's sign is a
    coin flip, so one other seed could agree by chance)."""
    x = _batch((1, 1, 16, 16), seed=2).repeat(8, 1, 1, 1)
    for name in RANDOM:
        same = corrupt(x[:2], name, 4, [1, 1])
        others = corrupt(x, name, 4, list(range(2, 10)))
        assert torch.equal(same[0], same[1]), name
        assert any(not torch.equal(other, same[0]) for other in others), name


def test_brightness_darkness_contrast_pixelate_known_answers():
    x = torch.tensor([[[[0.0, 0.2], [0.6, 1.0]]]])
    # brightness severity 1: x + 0.1 (1 - x); darkness severity 3: x * (1 - 0.5).
    expected = torch.tensor([[[[0.1, 0.28], [0.64, 1.0]]]])
    assert torch.allclose(corrupt(x, "brightness", 1, [0]), expected, atol=1e-6)
    assert torch.allclose(corrupt(x, "darkness", 3, [0]), x * 0.5, atol=1e-6)
    # contrast severity 1: 0.4 x + 0.6 mean, mean = 0.45.
    assert torch.allclose(corrupt(x, "contrast", 1, [0]), 0.4 * x + 0.6 * 0.45, atol=1e-6)
    # pixelate severity 2 halves a 4x4 image: each 2x2 block becomes its mean.
    img = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4) / 15
    blocks = torch.tensor([[2.5, 4.5], [10.5, 12.5]]) / 15
    expected = blocks.repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.allclose(corrupt(img, "pixelate", 2, [0])[0, 0], expected, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
def test_contrast_is_torchvision_adjust_contrast(channels):
    x = _batch((4, channels, 9, 11), seed=10)
    factors = next(row["values"] for row in severity_table() if row["name"] == "contrast")
    ours = corrupt_severities(x, "contrast", SEVERITIES, [0, 1, 2, 3])
    for factor, out in zip(factors, ours, strict=True):
        assert torch.allclose(out, F.adjust_contrast(x, factor), atol=1e-6, rtol=0), factor


def test_contrast_on_rgb_blends_with_the_grey_mean():
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = 1.0  # pure red: grey = 0.2989
    out = corrupt(x, "contrast", 5, [0])
    grey = 0.2989
    assert torch.allclose(out[0, 0], torch.full((2, 2), 0.05 + 0.95 * grey), atol=1e-3)
    assert torch.allclose(out[0, 1], torch.full((2, 2), 0.95 * grey), atol=1e-3)


@pytest.mark.parametrize("name", ["gaussian_blur", "jpeg"])
def test_low_pass_corruptions_remove_high_frequency_energy_monotonically(name):
    """On a smooth scene with grain (JPEG at low quality adds block edges to white noise, so a
    pure-noise image is not a fair probe of it)."""
    x = _smooth_scene_with_grain()
    energies = [_high_frequency_energy(corrupt(x, name, s, [0])) for s in (0, *SEVERITIES)]
    assert all(a > b for a, b in pairwise(energies)), energies


def test_gaussian_noise_strength_rises_with_severity():
    grey = torch.full((2, 1, 32, 32), 0.5)
    stds = [(corrupt(grey, "gaussian_noise", s, [0, 1]) - grey).std().item() for s in SEVERITIES]
    assert all(a < b for a, b in pairwise(stds)), stds
    assert stds[0] == pytest.approx(0.08, rel=0.1)


def test_occlusion_box_has_the_stated_side():
    x = torch.zeros(3, 1, 10, 10)
    out = corrupt(x, "occlusion", 5, [0, 1, 2])
    assert ((out == 0.5).sum(dim=(1, 2, 3)) == 36).all()


def test_bad_arguments_are_refused():
    x = torch.rand(2, 1, 8, 8)
    for args in (("blur", 1, [0, 1]), ("fog", 6, [0, 1]), ("fog", 1, [0])):
        with pytest.raises(ValueError):
            corrupt(x, *args)
    with pytest.raises(ValueError):
        corrupt_severities(x, "fog", (1, 6), [0, 1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_cpu_and_cuda_agree(name):
    x = _batch((4, 3, 16, 20), seed=4)
    cpu = corrupt_severities(x, name, SEVERITIES, [1, 2, 3, 4])
    cuda = corrupt_severities(x.cuda(), name, SEVERITIES, [1, 2, 3, 4])
    for severity, on_cpu, on_cuda in zip(SEVERITIES, cpu, cuda, strict=True):
        assert on_cuda.device.type == "cuda"
        assert torch.allclose(on_cpu, on_cuda.cpu(), atol=1e-4, rtol=0), severity
