"""Tests of the generated shapes dataset (auditclf.data.shapes)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, binary_erosion
from skimage.measure import label as connected_components
from skimage.measure import regionprops

from auditclf.data.shapes import BACKGROUNDS, SHAPE_CLASSES, SPLITS, ShapesSet, generate_shapes

# Upper 0.1% points of the chi-square distribution; with fixed seeds the tests
# are deterministic, these only make the bounds principled rather than tuned.
CHI2_999 = {3: 16.27, 9: 27.88}


def _chi2_uniform(counts: np.ndarray) -> float:
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def _chi2_independence(table: np.ndarray) -> float:
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    return float(((table - expected) ** 2 / expected).sum())


@pytest.fixture(scope="module")
def small() -> ShapesSet:
    return generate_shapes(n_per_class=5, size=32, seed=0)


@pytest.fixture(scope="module")
def default64() -> ShapesSet:
    return generate_shapes(n_per_class=60, size=64, seed=7)


def test_shapes_and_dtypes(small: ShapesSet) -> None:
    n = 4 * 5
    assert small.images.shape == (n, 3, 32, 32) and small.images.dtype == np.uint8
    assert small.labels.shape == (n,) and small.labels.dtype == np.int64
    assert small.masks.shape == (n, 32, 32) and small.masks.dtype == np.bool_
    assert small.background.shape == (n,) and small.background.dtype == object
    assert small.split.shape == (n,) and small.split.dtype == object
    assert np.bincount(small.labels, minlength=4).tolist() == [5] * len(SHAPE_CLASSES)
    assert set(small.background) <= set(BACKGROUNDS)
    assert set(small.split) <= set(SPLITS)
    assert len(small) == n


def test_dataclass_is_frozen_and_subset_selects_one_split(default64: ShapesSet) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        default64.labels = default64.labels  # type: ignore[misc]
    test = default64.subset("test")
    assert set(test.split) == {"test"}
    assert len(test) == 4 * 6
    np.testing.assert_array_equal(test.images, default64.images[default64.split == "test"])
    with pytest.raises(ValueError, match="split"):
        default64.subset("holdout")


def test_default_size_is_64_and_300_per_class() -> None:
    # Shape of the default call only; checked at the default size because
    # callers rely on it, cheap enough (~0.5 s).
    s = generate_shapes()
    assert s.images.shape == (1200, 3, 64, 64)


def test_same_seed_is_byte_identical_and_other_seed_differs() -> None:
    kwargs = dict(n_per_class=8, size=24, background_correlation=0.5)
    a, b = generate_shapes(seed=3, **kwargs), generate_shapes(seed=3, **kwargs)
    for field in dataclasses.fields(ShapesSet):
        x, y = getattr(a, field.name), getattr(b, field.name)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    assert a.images.tobytes() == b.images.tobytes()
    c = generate_shapes(seed=4, **kwargs)
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.masks, c.masks)


@pytest.mark.parametrize(
    ("n_per_class", "fractions", "expected"),
    [
        (300, (0.7, 0.2, 0.1), (210, 60, 30)),
        (7, (0.7, 0.2, 0.1), (5, 1, 1)),  # 4.9/1.4/0.7: largest remainders win
        (3, (0.5, 0.5, 0.0), (2, 1, 0)),  # naive rounding would give 2+2 > 3
        (10, (1.0, 0.0, 0.0), (10, 0, 0)),
    ],
)
def test_split_counts_are_exact_per_class(
    n_per_class: int, fractions: tuple[float, float, float], expected: tuple[int, int, int]
) -> None:
    s = generate_shapes(n_per_class=n_per_class, size=16, split_fractions=fractions, seed=1)
    for cls in range(len(SHAPE_CLASSES)):
        in_cls = s.split[s.labels == cls]
        assert tuple(int((in_cls == name).sum()) for name in SPLITS) == expected


def test_order_is_shuffled_not_grouped(default64: ShapesSet) -> None:
    # Neither class nor split comes in blocks (a consumer taking the first k
    # images should not get one class).
    assert len(set(default64.labels[:20].tolist())) > 1
    assert (np.diff(default64.labels) != 0).sum() > 50


def test_masks_are_one_nonempty_object_inside_the_image(default64: ShapesSet) -> None:
    masks = default64.masks
    areas = masks.sum(axis=(1, 2))
    assert (areas > 0).all()
    # Centre placement keeps a 1-pixel margin, so no object touches the border.
    border = (
        masks[:, 0].any(1) | masks[:, -1].any(1) | masks[:, :, 0].any(1) | masks[:, :, -1].any(1)
    )
    assert not border.any()
    for m in masks:
        assert connected_components(m).max() == 1
    # Objects span roughly 30-55% of the side: area between a small triangle's
    # and a large square's (rotated squares can be bigger than their side).
    side = masks.shape[-1]
    assert areas.min() > 0.3 * (0.3 * side) ** 2
    assert areas.max() < (0.55 * side) ** 2 * 1.2


def test_object_is_brighter_than_its_background(default64: ShapesSet) -> None:
    brightness = default64.images.astype(np.float64).mean(axis=1)  # (N, H, W)
    m = default64.masks
    obj = (brightness * m).sum((1, 2)) / m.sum((1, 2))
    bg = (brightness * ~m).sum((1, 2)) / (~m).sum((1, 2))
    # Fill channels are >= 180; the brightest background (gray) averages ~110.
    assert (obj > bg + 50).all()
    # The mask is the object: away from the anti-aliased edge, every object
    # pixel is brighter than every background pixel of the same image.
    for img, mask in zip(brightness, m, strict=True):
        inner = binary_erosion(mask)
        far = ~binary_dilation(mask, iterations=2)
        assert inner.any()
        assert img[inner].min() > img[far].max()


def test_backgrounds_look_like_their_names(default64: ShapesSet) -> None:
    imgs = default64.images.astype(np.float64)
    off = ~default64.masks
    for name in BACKGROUNDS:
        idx = np.flatnonzero(default64.background == name)
        assert idx.size > 0
        rgb = np.array([imgs[idx, c][off[idx]].mean() for c in range(3)])
        if name == "gray":
            assert rgb.max() - rgb.min() < 20
        else:
            assert int(np.argmax(rgb)) == {"red": 0, "green": 1, "blue": 2}[name]
            assert rgb.max() - np.sort(rgb)[1] > 50
        # Not flat: noise and gradient give visible per-pixel variation.
        per_image_std = [imgs[i].mean(0)[off[i]].std() for i in idx[:10]]
        assert min(per_image_std) > 2.0


def test_full_correlation_in_train_val_uniform_in_test() -> None:
    s = generate_shapes(
        n_per_class=500,
        size=16,
        background_correlation=1.0,
        test_background_correlation=0.0,
        seed=11,
    )
    home = np.array(BACKGROUNDS, dtype=object)[s.labels]
    trainval = s.split != "test"
    assert (s.background[trainval] == home[trainval]).all()
    test_bg = s.background[~trainval]  # 4 * 50 images
    counts = np.array([(test_bg == name).sum() for name in BACKGROUNDS])
    assert _chi2_uniform(counts) < CHI2_999[3]
    # Only ~1/4 of test images land on their home background by chance.
    assert 0.15 < (test_bg == home[~trainval]).mean() < 0.35


def test_zero_correlation_background_independent_of_class() -> None:
    s = generate_shapes(n_per_class=400, size=16, seed=12)
    train = s.split == "train"
    table = np.array(
        [
            [((s.labels == c) & (s.background == b) & train).sum() for b in BACKGROUNDS]
            for c in range(len(SHAPE_CLASSES))
        ]
    )
    assert table.sum() == 4 * 280
    assert _chi2_independence(table) < CHI2_999[9]
    assert 0.2 < (table.diagonal().sum() / table.sum()) < 0.3


def test_partial_correlation_sets_home_rate() -> None:
    # P(home) = rho + (1 - rho) * 1/4 with uniform background_probs.
    s = generate_shapes(n_per_class=500, size=16, background_correlation=0.5, seed=13)
    trainval = s.split != "test"
    home = np.array(BACKGROUNDS, dtype=object)[s.labels]
    assert abs((s.background[trainval] == home[trainval]).mean() - 0.625) < 0.05


def test_background_probs_make_gray_rare() -> None:
    s = generate_shapes(
        n_per_class=500, size=16, background_probs=[0.32, 0.32, 0.32, 0.04], seed=14
    )
    n_gray = int((s.background == "gray").sum())
    assert 0 < n_gray < 0.07 * len(s)  # expected 4% of 2000 = 80
    for name in BACKGROUNDS[:3]:
        assert 0.27 < (s.background == name).mean() < 0.37


def _shape_features(mask: np.ndarray) -> tuple[float, float]:
    """(solidity, area / area of the circle through the farthest pixel); rotation-invariant."""
    ys, xs = np.nonzero(mask)
    r = np.hypot(ys - ys.mean(), xs - xs.mean()).max() + 0.5
    solidity = regionprops(mask.astype(np.uint8))[0].solidity
    return float(solidity), float(mask.sum() / (np.pi * r * r))


def test_shapes_are_separable_by_simple_mask_features(default64: ShapesSet) -> None:
    # A hand-set rule on two rotation-invariant features recovers the class,
    # so the classes are learnable and the masks have the intended geometry:
    # the cross is the only non-convex shape (solidity 7/9-ish vs ~1); among
    # the rest, area / circumscribed-circle area is 1 (circle), 2/pi (square),
    # 0.41 (triangle).
    pred = []
    for m in default64.masks:
        solidity, compact = _shape_features(m)
        if solidity < 0.85:
            pred.append(SHAPE_CLASSES.index("cross"))
        elif compact > 0.78:
            pred.append(SHAPE_CLASSES.index("circle"))
        elif compact > 0.54:
            pred.append(SHAPE_CLASSES.index("square"))
        else:
            pred.append(SHAPE_CLASSES.index("triangle"))
    accuracy = (np.array(pred) == default64.labels).mean()
    assert accuracy >= 0.97


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_per_class": 2}, "n_per_class"),
        ({"n_per_class": 3.0}, "n_per_class"),
        ({"size": 15}, "size"),
        ({"split_fractions": (0.5, 0.5, 0.5)}, "split_fractions"),
        ({"split_fractions": (0.7, 0.3)}, "split_fractions"),
        ({"split_fractions": (1.2, -0.1, -0.1)}, "split_fractions"),
        ({"background_correlation": -0.1}, "background_correlation"),
        ({"background_correlation": 1.5}, "background_correlation"),
        ({"background_correlation": float("nan")}, "background_correlation"),
        ({"test_background_correlation": 2.0}, "test_background_correlation"),
        ({"background_probs": [0.5, 0.5, 0.0]}, "background_probs"),
        ({"background_probs": [0.3, 0.3, 0.3, 0.0]}, "background_probs"),
        ({"background_probs": [0.6, 0.6, -0.1, -0.1]}, "background_probs"),
        ({"background_probs": "abcd"}, "background_probs"),
        ({"seed": "zero"}, "seed"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} ") as info:
        generate_shapes(**kwargs)
    assert "\n" not in str(info.value)


def test_background_probs_within_tolerance_accepted() -> None:
    s = generate_shapes(n_per_class=3, size=16, background_probs=[0.25, 0.25, 0.25, 0.2500005])
    assert len(s) == 12
