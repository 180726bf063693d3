"""A generated dataset of RGB shape images with known object masks.

Each image shows one filled light-coloured shape (circle, square, triangle or
cross) on a darker, coloured, slightly noisy background.  Because the object's
pixels are known exactly (``masks``), explanations can be scored against ground
truth; because the background colour's correlation with the class is a
parameter, the set can plant a shortcut (train/val) and then remove it (test),
or make one background value rare, for shortcut and subgroup-fairness audits.

Everything is drawn from one ``np.random.default_rng(seed)``: the same
arguments give byte-identical arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
"""Class names; ``labels`` index into this tuple."""

BACKGROUNDS: tuple[str, ...] = ("blue", "green", "red", "gray")
"""Background names; class ``i``'s "home" background is ``BACKGROUNDS[i]``."""

SPLITS: tuple[str, ...] = ("train", "val", "test")

# Base RGB of each background, in BACKGROUNDS order.  All are dark enough
# (max channel 170, mean <= 110) that a fill with every channel >= 180 stands
# out against any of them, whatever the jitter, gradient and noise below.
_BG_RGB = np.array([[40, 70, 170], [40, 140, 60], [170, 50, 45], [110, 110, 110]], dtype=np.float32)
_BG_JITTER = 12.0  # per-image, per-channel uniform shift of the base colour, +-
_GRADIENT_MAX = 20.0  # peak-to-peak brightness change of the gradient across the image
_NOISE_STD = 5.0  # per-pixel Gaussian noise, in uint8 units
_FILL_LOW, _FILL_HIGH = 180, 255  # object fill colour, per channel, inclusive
_SCALE_RANGE = (0.30, 0.55)  # object size as a fraction of the image side
_SUPERSAMPLE = 4  # shapes are drawn at 4x and box-downsampled, for anti-aliasing
_CROSS_BAR = 1.0 / 3.0  # bar width of the cross relative to its arm-to-arm size
_CHUNK = 64  # images composited at once: keeps float32 temporaries cache-sized (~3 MB)


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no truthy ``==``; keep identity hash
class ShapesSet:
    """A generated shapes dataset; all arrays share the first axis ``N``.

    Attributes:
        images: ``(N, 3, size, size)`` uint8, RGB, channels first.
        labels: ``(N,)`` int64, index into :data:`SHAPE_CLASSES`.
        masks: ``(N, size, size)`` bool, True exactly on the object's pixels
            (anti-aliased coverage >= 0.5).
        background: ``(N,)`` object array of names from :data:`BACKGROUNDS`.
        split: ``(N,)`` object array of ``"train"`` / ``"val"`` / ``"test"``.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    background: np.ndarray
    split: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, split: str) -> ShapesSet:
        """Return the images of one split (``"train"``, ``"val"`` or ``"test"``), in order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        keep = self.split == split
        return ShapesSet(
            images=self.images[keep],
            labels=self.labels[keep],
            masks=self.masks[keep],
            background=self.background[keep],
            split=self.split[keep],
        )


def generate_shapes(
    *,
    n_per_class: int = 300,
    size: int = 64,
    split_fractions: tuple[float, float, float] = (0.7, 0.2, 0.1),
    background_correlation: float = 0.0,
    test_background_correlation: float = 0.0,
    background_probs: Sequence[float] | None = None,
    seed: int = 0,
) -> ShapesSet:
    """Generate ``4 * n_per_class`` shape images, stratified into train/val/test.

    Args:
        n_per_class: images per class (>= 3). Default 300.
        size: image side in pixels (>= 16). Default 64.
        split_fractions: fractions of each class going to (train, val, test);
            each in [0, 1], summing to 1. Per class the counts are exact
            (largest-remainder rounding of ``n_per_class * fraction``), so every
            split has the same class balance. Default (0.7, 0.2, 0.1).
        background_correlation: probability, in [0, 1], that a train or val
            image gets its class's home background (class ``i`` ->
            ``BACKGROUNDS[i]``); otherwise its background is drawn from
            ``background_probs``. 0 = background independent of class,
            1 = background determined by class. Default 0.
        test_background_correlation: the same probability for test images.
            Default 0.
        background_probs: probabilities of the four :data:`BACKGROUNDS` for
            the non-home draws; 4 values in [0, 1] summing to 1 (within 1e-6).
            None (default) means uniform.
        seed: seed of the single ``np.random.default_rng`` all randomness
            comes from. Default 0.

    Returns:
        A :class:`ShapesSet`. Images come in a shuffled (seed-determined)
        order, not grouped by class or split.

    Raises:
        ValueError: an argument is out of range; the message names it.
    """
    _check_int("n_per_class", n_per_class, 3)
    _check_int("size", size, 16)
    fractions = _check_probs("split_fractions", split_fractions, 3)
    _check_prob("background_correlation", background_correlation)
    _check_prob("test_background_correlation", test_background_correlation)
    probs = (
        np.full(len(BACKGROUNDS), 1.0 / len(BACKGROUNDS))
        if background_probs is None
        else _check_probs("background_probs", background_probs, len(BACKGROUNDS))
    )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")

    rng = np.random.default_rng(seed)
    n_classes = len(SHAPE_CLASSES)
    n = n_classes * n_per_class

    # Stratified split: every class gets the same exact per-split counts, in a
    # per-class shuffled order, then the whole set is shuffled so consumers
    # that batch in order do not see one class at a time.
    counts = _split_counts(n_per_class, fractions)
    per_class = np.repeat(np.arange(len(SPLITS)), counts)
    split_idx = np.concatenate([rng.permutation(per_class) for _ in range(n_classes)])
    labels = np.repeat(np.arange(n_classes, dtype=np.int64), n_per_class)
    order = rng.permutation(n)
    labels, split_idx = labels[order], split_idx[order]

    # Background: home colour with probability rho (by split), else a draw
    # from ``probs``. Both draws are made for every image so the random stream,
    # and hence the images, do not depend on which branch each image takes.
    rho = np.where(
        split_idx == SPLITS.index("test"), test_background_correlation, background_correlation
    )
    home = rng.random(n) < rho
    drawn = rng.choice(len(BACKGROUNDS), size=n, p=probs)
    bg_idx = np.where(home, labels, drawn)

    alpha, masks = _draw_shapes(rng, labels, size)
    fill = rng.integers(_FILL_LOW, _FILL_HIGH + 1, size=(n, 3)).astype(np.float32)
    jitter = rng.uniform(-_BG_JITTER, _BG_JITTER, size=(n, 3)).astype(np.float32)
    grad_angle = rng.uniform(0.0, 2.0 * math.pi, size=n)
    grad_amp = rng.uniform(0.3, 1.0, size=n) * _GRADIENT_MAX

    images = np.empty((n, 3, size, size), dtype=np.uint8)
    # Pixel-centre coordinates in [-0.5, 0.5], so the gradient's peak-to-peak
    # size does not depend on the image size.
    coord = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    for lo in range(0, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        cos = np.cos(grad_angle[lo:hi]).astype(np.float32)[:, None, None]
        sin = np.sin(grad_angle[lo:hi]).astype(np.float32)[:, None, None]
        ramp = grad_amp[lo:hi].astype(np.float32)[:, None, None] * (
            cos * coord[None, None, :] + sin * coord[None, :, None]
        )  # (m, size, size): y varies along axis 1, x along axis 2
        base = _BG_RGB[bg_idx[lo:hi]] + jitter[lo:hi]  # (m, 3)
        img = base[:, :, None, None] + ramp[:, None]  # (m, 3, size, size) background
        # Alpha-blend towards the fill: bg + a * (fill - bg), a = coverage in [0, 1].
        a = alpha[lo:hi, None]
        img += a * (fill[lo:hi, :, None, None] - img)
        # Noise over the whole image (object included) so "flat vs textured"
        # is not a cue that separates object from background.
        noise = rng.standard_normal(img.shape, dtype=np.float32)
        noise *= _NOISE_STD
        img += noise
        np.rint(img, out=img)
        np.clip(img, 0, 255, out=img)
        images[lo:hi] = img  # float -> uint8 cast of integral values in [0, 255]

    return ShapesSet(
        images=images,
        labels=labels,
        masks=masks,
        background=np.array(BACKGROUNDS, dtype=object)[bg_idx],
        split=np.array(SPLITS, dtype=object)[split_idx],
    )


def _draw_shapes(
    rng: np.random.Generator, labels: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw each label's shape; return coverage ``(N, size, size)`` float32 and mask bool."""
    n = labels.shape[0]
    extent = rng.uniform(*_SCALE_RANGE, size=n) * size  # shape size in pixels
    # Circles ignore rotation; the others use the range that covers their symmetry.
    rotation = rng.uniform(0.0, 1.0, size=n)
    centre_u = rng.random((n, 2))
    ss = _SUPERSAMPLE
    big = size * ss
    alpha = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        verts = _shape_vertices(int(labels[i]), float(extent[i]), float(rotation[i]))
        # Place the centre uniformly among positions that keep the whole shape
        # at least one pixel inside the border, so masks never touch the edge.
        lo = 1.0 - verts.min(axis=0)
        hi = size - 1.0 - verts.max(axis=0)
        centre = lo + centre_u[i] * np.maximum(hi - lo, 0.0)
        canvas = Image.new("L", (big, big), 0)
        draw = ImageDraw.Draw(canvas)
        # Continuous coordinates (pixel k spans [k, k+1)) scaled to the canvas;
        # Pillow puts integer coordinates on pixel centres, hence the -0.5.
        if labels[i] == SHAPE_CLASSES.index("circle"):
            r = extent[i] / 2.0
            cx, cy = centre
            box = [
                (cx - r) * ss - 0.5,
                (cy - r) * ss - 0.5,
                (cx + r) * ss - 0.5,
                (cy + r) * ss - 0.5,
            ]
            draw.ellipse(box, fill=255)
        else:
            pts = (verts + centre) * ss - 0.5
            draw.polygon([tuple(p) for p in pts.tolist()], fill=255)
        small = canvas.reduce(ss)  # box average of each ss x ss block
        alpha[i] = np.asarray(small, dtype=np.float32) / 255.0
    return alpha, alpha >= 0.5


def _shape_vertices(label: int, extent: float, rotation: float) -> np.ndarray:
    """Vertices ``(k, 2)`` as (x, y) pixels around the origin.

    ``extent`` is the shape's size (circle diameter, square side, triangle
    side, cross arm-to-arm length); ``rotation`` in [0, 1) is a fraction of
    the shape's rotational symmetry period. For the circle the vertices are
    its bounding square, used only for placement.
    """
    h = extent / 2.0
    name = SHAPE_CLASSES[label]
    if name == "circle":
        return np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    if name == "square":
        pts, period = np.array([[-h, -h], [h, -h], [h, h], [-h, h]]), math.pi / 2
    elif name == "triangle":
        # Equilateral, side ``extent``, centred on its centroid (circumradius s/sqrt3).
        r = extent / math.sqrt(3.0)
        ang = -math.pi / 2 + np.arange(3) * 2 * math.pi / 3
        pts, period = np.stack([r * np.cos(ang), r * np.sin(ang)], axis=1), 2 * math.pi / 3
    else:  # cross: plus sign, two bars of width extent * _CROSS_BAR
        w = h * _CROSS_BAR
        # One arm's three outer corners, repeated at 90-degree turns: 12 vertices.
        quarter = np.array([[-w, -h], [w, -h], [w, -w]])
        turn = np.array([[0.0, -1.0], [1.0, 0.0]])  # (x, y) -> (-y, x)
        pts = np.concatenate([quarter @ np.linalg.matrix_power(turn, k).T for k in range(4)])
        period = math.pi / 2
    t = rotation * period
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return pts @ rot.T


def _split_counts(n: int, fractions: np.ndarray) -> np.ndarray:
    """Per-class counts for each split: largest-remainder rounding, summing to ``n``."""
    raw = n * fractions
    counts = np.floor(raw).astype(np.int64)
    # Hand the leftover images to the largest remainders (ties: earlier split),
    # which, unlike rounding each count, always sums to exactly n.
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: n - int(counts.sum())]] += 1
    return counts


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_prob(name: str, value: object) -> float:
    try:
        p = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return p


def _check_probs(name: str, values: object, length: int) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {length} numbers, got {values!r}") from None
    if arr.shape != (length,):
        raise ValueError(f"{name} must have {length} values, got {values!r}")
    if not np.all((arr >= 0.0) & (arr <= 1.0)):  # also rejects NaN
        raise ValueError(f"{name} values must be in [0, 1], got {values!r}")
    if abs(arr.sum() - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1 (within 1e-6), got sum {arr.sum():.8g}")
    # Exact renormalisation so rng.choice does not reject a sum that is off by 1e-7.
    return arr / arr.sum()
