"""Common image corruptions at five severities, for the corruption probe (issue 14).

Fifteen corruptions model natural variability (sensor noise, focus and camera shake, exposure,
haze, resolution, compression, pose, occluders, paper warp) rather than worst-case pixel attacks.
Their severities follow ImageNet-C / CIFAR-10-C (Hendrycks & Dietterich, "Benchmarking Neural
Network Robustness to Common Corruptions and Perturbations", ICLR 2019, code in
github.com/hendrycks/robustness: ``ImageNet-C/create_c/make_imagenet_c.py`` and
``make_cifar_c.py``) and MNIST-C (Mu & Gilmer, "MNIST-C: A Robustness Benchmark for Computer
Vision", 2019), restated in pixel units of [0, 1] images. Spatial sizes (blur sigma, motion
length, occluder side, warp amplitude) are fractions of the image side, so one table serves 8x8
digits, 28x28 MNIST and 64x64 RGB images alike; where a source gives absolute pixels we chose the
fraction that its largest images imply and say so in ``_SPECS``.

Contract (``corrupt`` and ``corrupt_severities``): severity 0 is an exact copy of the clean
image; every corrupted image is finite, in [0, 1], of x's shape, dtype and device; the result
for an image depends only on that image, its seed, the corruption and the severity, never on
the other images of the batch or (beyond float rounding) on the device. Not even the
rounding depends on the batch: no batched matrix product (whose rounding moves with an
image's position), no fused multiply-add over the batch (rounded differently where a thread's
share ends), grouped convolutions in chunks of one fixed size.

Determinism: every random part (noise, impulse positions, fog field, motion direction, rotation
sign, perspective corners, occluder position, elastic field) is drawn on the CPU from a
``torch.Generator`` per image, seeded by that image's seed and the corruption's name, then moved
to the input's device once per batch. An image therefore gets the same corruption whatever batch
it comes in and on whatever device it runs. The same draws serve every severity (common random
numbers: the same pattern at growing strength), so accuracy differences between severities are
not sampling noise of the corruption itself; shot noise is the exception, a Poisson count
cannot be shared between rates, so each severity draws its own from the same seed. JPEG is
encoded on the CPU (libjpeg) because nvjpeg's bytes differ from it.

Cost: ``corrupt_severities`` draws once for all the severities asked for, and everything after
the draws runs on the whole batch on x's device: perspective and elastic as one
``grid_sample`` per severity with one grid per image (computed as ``F.perspective`` and
``F.elastic`` compute it for one image; the tests hold them equal), fog's octaves upsampled
for the batch at once. ``benchmarks/bench_corruptions.py`` times it against the forward passes.
"""

from __future__ import annotations

import functools
import math
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
import torchvision.transforms.v2.functional as F

SEVERITIES = (1, 2, 3, 4, 5)

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "gaussian_blur",
    "motion_blur",
    "brightness",
    "darkness",
    "contrast",
    "fog",
    "pixelate",
    "jpeg",
    "rotate",
    "perspective",
    "occlusion",
    "elastic",
)


@dataclass(frozen=True)
class CorruptionSpec:
    """One corruption's five severity parameters, their unit, meaning and source."""

    values: tuple
    unit: str
    meaning: str
    source: str
    grey_rgb_differ: str = ""
    side_pixels: str = ""  # "exact" or "rounded" when values are fractions of the image side


_SPECS: dict[str, CorruptionSpec] = {
    "gaussian_noise": CorruptionSpec(
        (0.08, 0.12, 0.18, 0.26, 0.38),
        "std in [0,1] units",
        "additive Gaussian noise, independent per pixel and channel",
        "ImageNet-C gaussian_noise c",
    ),
    "shot_noise": CorruptionSpec(
        (60, 25, 12, 5, 3),
        "photons at full intensity",
        "Poisson photon noise: Poisson(x * photons) / photons",
        "ImageNet-C shot_noise c",
    ),
    "impulse_noise": CorruptionSpec(
        (0.03, 0.06, 0.09, 0.17, 0.27),
        "fraction of pixel values",
        "salt-and-pepper: that fraction of values set to 0 or 1 (half each)",
        "ImageNet-C impulse_noise c (skimage s&p amount)",
    ),
    "gaussian_blur": CorruptionSpec(
        (0.025, 0.04, 0.055, 0.075, 0.10),
        "sigma as a fraction of the image side",
        "Gaussian blur, kernel 2*ceil(3 sigma)+1",
        "ImageNet-C gaussian_blur sigma 1-6 px at 224 px and CIFAR-10-C 0.4-1 px at 32 px, "
        "raised for small images where a sub-pixel sigma is a no-op",
        side_pixels="exact",
    ),
    "motion_blur": CorruptionSpec(
        (0.06, 0.10, 0.15, 0.22, 0.30),
        "line length as a fraction of the image side",
        "average along a centred line at a random angle in [0, 180) degrees",
        "ImageNet-C motion_blur (radius 10-20, sigma 3-15 px at 224 px), as a fraction",
        side_pixels="exact",
    ),
    "brightness": CorruptionSpec(
        (0.1, 0.2, 0.3, 0.4, 0.5),
        "fraction of the way to white",
        "x + c (1 - x): 1 - adjust_brightness(1 - x, 1 - c); lifts dark background",
        "ImageNet-C brightness (+c on HSV value)",
        "grey: value + c(1-value); RGB: each channel moved c of the way to white",
    ),
    "darkness": CorruptionSpec(
        (0.2, 0.35, 0.5, 0.65, 0.8),
        "fraction of the way to black",
        "x (1 - c): adjust_brightness(x, 1 - c); a fainter scanner or under-exposure",
        "mirror of ImageNet-C brightness; extended to 0.8 for faint strokes",
    ),
    "contrast": CorruptionSpec(
        (0.4, 0.3, 0.2, 0.1, 0.05),
        "contrast factor",
        "adjust_contrast: c x + (1 - c) mean(grey(x)) per image",
        "ImageNet-C contrast c",
        "grey: mean of the image; RGB: mean of its ITU-R 601 grey image",
    ),
    "fog": CorruptionSpec(
        ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)),
        "(strength, octave decay)",
        "(x + s * field) * max(x) / (max(x) + s), field a smooth grey [0,1] noise of octaves "
        "of upsampled coarse noise, each octave's amplitude 1/decay of the previous",
        "CIFAR-10-C fog c (plasma fractal replaced by octave noise)",
        "the same grey field added to every channel",
    ),
    "pixelate": CorruptionSpec(
        (0.6, 0.5, 0.4, 0.3, 0.25),
        "downsampled side as a fraction of the side",
        "area downsample to round(c * side), nearest upsample back",
        "ImageNet-C pixelate c",
        side_pixels="rounded",
    ),
    "jpeg": CorruptionSpec(
        (25, 18, 15, 10, 7),
        "JPEG quality",
        "8-bit round trip through libjpeg at that quality",
        "ImageNet-C jpeg_compression c",
        "grey: one luma plane; RGB: YCbCr with chroma subsampling",
    ),
    "rotate": CorruptionSpec(
        (8, 15, 22, 30, 45),
        "degrees, random sign",
        "bilinear rotation about the centre, corners filled black",
        "MNIST-C rotate / ImageNet-P rotate; angles chosen here",
    ),
    "perspective": CorruptionSpec(
        (0.1, 0.2, 0.3, 0.4, 0.5),
        "distortion scale",
        "each corner moved inwards by up to c/2 of the side (uniform), bilinear, black fill",
        "torchvision RandomPerspective distortion_scale (default 0.5 = severity 5)",
    ),
    "occlusion": CorruptionSpec(
        (0.2, 0.3, 0.4, 0.5, 0.6),
        "box side as a fraction of the side",
        "a mid-grey (0.5) square at a uniform random position inside the image",
        "Cutout (DeVries & Taylor 2017; 0.5 of the side on CIFAR)",
        "grey value 0.5 in every channel",
        side_pixels="rounded",
    ),
    "elastic": CorruptionSpec(
        (0.015, 0.03, 0.045, 0.06, 0.08),
        "RMS displacement as a fraction of the side",
        "smooth random warp: uniform noise blurred with sigma 0.14 side, scaled to that RMS",
        "Simard et al. 2003 (sigma 4 px on 28 px MNIST) / ImageNet-C elastic_transform",
        side_pixels="exact",
    ),
}

_OCCLUDER_GREY = 0.5
_EXAMPLE_SIDES = (8, 28, 64)
_JPEG_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"
_ELASTIC_SMOOTHNESS = 0.14
_MOTION_CHUNK = 16  # images per motion-blur convolution (see _motion_blur_at)
_KERNEL_ELEMENTS = 2**22  # terms summed at once into motion-blur kernels (16 MB in float32)


def corrupt(x: torch.Tensor, name: str, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """Return ``x`` (N, C, H, W, float in [0, 1]) corrupted by ``name`` at ``severity``.

    Severity 0 returns an exact copy (the clean image); 1-5 use ``_SPECS[name].values``. The
    result has x's shape, dtype and device, is finite and clamped to [0, 1]. ``seeds`` gives one
    integer per image; its random draws depend only on (seed, name), never on the batch. The
    same as ``corrupt_severities(x, name, (severity,), seeds)[0]``.
    """
    return corrupt_severities(x, name, (severity,), seeds)[0]


def corrupt_severities(
    x: torch.Tensor, name: str, severities: Sequence[int], seeds: Sequence[int]
) -> list[torch.Tensor]:
    """``corrupt(x, name, s, seeds)`` for each ``s`` in ``severities``, in that order.

    The random parts are drawn once per image and shared by every severity, so asking for all
    five costs one draw, not five; each result equals ``corrupt`` at that severity exactly,
    whatever other severities are asked for with it. A severity asked for twice gives the
    same tensor twice; severity 0 gives a new copy of ``x`` each time.
    """
    if name not in _SPECS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    bad = [s for s in severities if s not in (0, *SEVERITIES)]
    if bad:
        raise ValueError(f"severity must be 0-5, got {bad[0]!r}")
    if x.ndim != 4 or len(seeds) != x.shape[0]:
        raise ValueError(
            f"need x of shape (N, C, H, W) and N seeds; got {tuple(x.shape)} and {len(seeds)} seeds"
        )
    wanted = sorted({s for s in severities if s})
    corrupted = {}
    if wanted:
        values = [_SPECS[name].values[s - 1] for s in wanted]
        outs = _KERNELS[name](x, values, [_generator(s, name) for s in seeds])
        corrupted = {
            s: out.clamp(0.0, 1.0).to(x.dtype) for s, out in zip(wanted, outs, strict=True)
        }
    return [corrupted[s] if s else x.clone() for s in severities]


def severity_table() -> list[dict]:
    """Per corruption: unit, what it does, severity 1 and 5 values, 1- vs 3-channel, source."""
    return [
        {
            "name": name,
            "unit": spec.unit,
            "meaning": spec.meaning,
            "severity_1": spec.values[0],
            "severity_5": spec.values[-1],
            "values": list(spec.values),
            "in_words": {
                1: f"{_show(spec.values[0])} {spec.unit}",
                5: f"{_show(spec.values[-1])} {spec.unit}",
            },
            "pixels_at_side": _pixels(spec),
            "channels": spec.grey_rgb_differ or "same for 1 and 3 channels",
            "source": spec.source,
        }
        for name, spec in ((n, _SPECS[n]) for n in CORRUPTIONS)
    ]


def _show(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _pixels(spec: CorruptionSpec) -> dict:
    """Severity 1 and 5 in pixels on 8, 28 and 64 px images, for side-relative parameters."""
    if not spec.side_pixels:
        return {}

    def at(value, side):
        if spec.side_pixels == "rounded":
            return max(1, round(value * side))
        return round(value * side, 2)

    return {side: (at(spec.values[0], side), at(spec.values[-1], side)) for side in _EXAMPLE_SIDES}


def _generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator seeded by the image's seed and the corruption (stable across runs)."""
    g = torch.Generator(device="cpu")
    g.manual_seed((int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63))
    return g


def _draw(
    gens: list[torch.Generator],
    fn: Callable[[torch.Generator], torch.Tensor],
    like: torch.Tensor,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Stack one CPU draw per image and move the batch to ``like``'s device in one copy."""
    return torch.stack([fn(g) for g in gens]).to(device=like.device, dtype=dtype or like.dtype)


def _gaussian_noise(x, stds, gens):
    noise = _draw(gens, lambda g: torch.randn(x.shape[1:], generator=g), x)
    return [x + std * noise for std in stds]


def _shot_noise(x, photon_counts, gens):
    """Poisson counts drawn on the CPU (float64 rates) so every device gets the same counts.

    A Poisson draw cannot be shared between rates, so each severity draws afresh: every
    generator is re-seeded with its own seed (``initial_seed``) first.
    """
    rates = x.detach().to("cpu", torch.float64).clamp(0.0, 1.0)
    counts = torch.stack(
        [
            torch.stack(
                [
                    torch.poisson(r * photons, generator=_reseeded(g))
                    for r, g in zip(rates, gens, strict=True)
                ]
            )
            for photons in photon_counts
        ]
    ).to(device=x.device, dtype=x.dtype)
    return [counts[k] / photons for k, photons in enumerate(photon_counts)]


def _reseeded(g: torch.Generator) -> torch.Generator:
    return g.manual_seed(g.initial_seed())


def _impulse_noise(x, amounts, gens):
    """Values with u < amount/2 become 0 (pepper), amount/2 <= u < amount become 1 (salt)."""
    u = _draw(gens, lambda g: torch.rand(x.shape[1:], generator=g), x)
    return [torch.where(u < amount, (u >= amount / 2).to(x.dtype), x) for amount in amounts]


def _gaussian_blur(x, fracs, gens):
    return [_blur(x, frac * min(x.shape[-2:])) for frac in fracs]


def _blur(x, sigma):
    size = 2 * math.ceil(3 * sigma) + 1
    size = min(size, 2 * (min(x.shape[-2:]) // 2) - 1)
    return F.gaussian_blur(x, [size, size], [sigma, sigma])


def _motion_blur(x, fracs, gens):
    """Average along a line at a random angle (one per image, shared by the severities)."""
    direction = _draw(gens, _direction, x)
    return [_motion_blur_at(x, frac, direction) for frac in fracs]


def _direction(g: torch.Generator) -> torch.Tensor:
    """(cos, sin) of an angle uniform in [0, pi), in float64 image by image (a vectorised
    cosine over the batch would round differently from one image to the next)."""
    theta = torch.rand((), generator=g, dtype=torch.float64) * math.pi
    return torch.stack([theta.cos(), theta.sin()])


def _motion_blur_at(x, frac, direction):
    """Average along a line of ``frac`` * side pixels in each image's ``direction`` (N, 2):
    a grouped convolution applies each image's own kernel (:func:`_line_kernels`).

    The convolution runs over chunks of exactly ``_MOTION_CHUNK`` images (the last one filled
    up with copies of its last image, dropped afterwards): a grouped convolution rounds
    differently with the number of groups, and one fixed shape keeps every image's result
    independent of the batch.
    """
    n, c, h, w = x.shape
    kernels = _line_kernels(frac * min(h, w), direction, x)
    missing = -n % _MOTION_CHUNK
    if missing:
        x = torch.cat([x, x[-1:].expand(missing, c, h, w)])
        kernels = torch.cat([kernels, kernels[-1:].expand(missing, *kernels.shape[1:])])
    weight = kernels.repeat_interleave(c, dim=0)[:, None]
    pad = kernels.shape[-1] // 2
    padded = nnf.pad(x.reshape(1, -1, h, w), (pad, pad, pad, pad), mode="replicate")
    group = _MOTION_CHUNK * c
    out = torch.cat(
        [
            nnf.conv2d(
                padded[:, start : start + group], weight[start : start + group], groups=group
            )
            for start in range(0, len(weight), group)
        ],
        dim=1,
    )
    return out.reshape(-1, c, h, w)[:n]


def _line_kernels(length: float, direction: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N, K, K) kernels, K = 2 ceil(length / 2) + 1: 4 K + 1 points evenly along a centred
    line of ``length`` pixels in each direction, splatted bilinearly (a tent function), summed
    to 1. Summed elementwise over the points, a few images at a time (at most
    ``_KERNEL_ELEMENTS`` terms): a batched matrix product, even of one fixed shape, rounds
    differently with an image's position in the batch."""
    k = 2 * math.ceil(length / 2) + 1
    t = torch.linspace(-length / 2, length / 2, 4 * k + 1, device=like.device, dtype=like.dtype)
    centre = (k - 1) / 2
    px = centre + t[None, :] * direction[:, :1]
    py = centre + t[None, :] * direction[:, 1:]
    cells = torch.arange(k, device=like.device, dtype=like.dtype)
    wy = (1 - (py[:, :, None] - cells).abs()).clamp(min=0)
    wx = (1 - (px[:, :, None] - cells).abs()).clamp(min=0)
    per = max(1, _KERNEL_ELEMENTS // (len(t) * k * k))
    kernel = torch.cat(
        [
            (wy[i : i + per, :, :, None] * wx[i : i + per, :, None, :]).sum(dim=1)
            for i in range(0, len(wy), per)
        ]
    )
    return kernel / kernel.sum(dim=(1, 2), keepdim=True)


def _brightness(x, amounts, gens):
    return [1.0 - F.adjust_brightness(1.0 - x, 1.0 - c) for c in amounts]


def _darkness(x, amounts, gens):
    return [F.adjust_brightness(x, 1.0 - c) for c in amounts]


def _contrast(x, factors, gens):
    """``F.adjust_contrast``'s formula: factor * x + (1 - factor) * mean of the grey image
    (ITU-R 601 weights for RGB), with every product rounded on its own. torchvision's
    ``add_(.., alpha=..)`` is a fused multiply-add in its vectorised loop and not in the
    scalar remainder, so an image split between two threads' shares of a batch came out
    differently (by 6e-8) than alone. The mean is summed in float64, so that the rounding of
    the reduction, which can change with the batch, stays out of the result."""
    rgb = x.shape[1] == 3
    grey = x[:, 0:1] * 0.2989 + x[:, 1:2] * 0.587 + x[:, 2:3] * 0.114 if rgb else x
    mean = grey.to(torch.float64).mean(dim=(1, 2, 3), keepdim=True).to(x.dtype)
    return [x * factor + mean * (1.0 - factor) for factor in factors]


def _fog(x, params, gens):
    """Add a smooth grey noise field and renormalise, as ImageNet-C's fog does.

    The field is octaves of coarse uniform noise at 2, 4, 8.. cells, bilinear upsampled, each
    octave's amplitude 1/decay of the previous, rescaled to [0, 1] per image. The coarse noise
    is drawn once per image; the octaves are upsampled for the whole batch at once and summed
    per decay.
    """
    h, w = x.shape[-2:]
    cells = [2]
    while cells[-1] * 2 <= max(2, min(h, w) // 2):
        cells.append(cells[-1] * 2)
    per_image = [[torch.rand(1, c, c, generator=g) for c in cells] for g in gens]
    octaves = [
        nnf.interpolate(
            torch.stack([draws[i] for draws in per_image]).to(x),
            size=(h, w),
            mode="bilinear",
            align_corners=False,
        )
        for i in range(len(cells))
    ]
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    fields = {}
    outs = []
    for strength, decay in params:
        if decay not in fields:
            fields[decay] = _octave_sum(octaves, decay)
        outs.append((x + strength * fields[decay]) * peak / (peak + strength))
    return outs


def _octave_sum(octaves: list[torch.Tensor], decay: float) -> torch.Tensor:
    """(N, 1, H, W): the octaves weighted 1, 1/decay, 1/decay^2.., rescaled to [0, 1] per image."""
    field = torch.zeros_like(octaves[0])
    amplitude = 1.0
    for octave in octaves:
        field += amplitude * octave
        amplitude /= decay
    low = field.amin(dim=(1, 2, 3), keepdim=True)
    high = field.amax(dim=(1, 2, 3), keepdim=True)
    return (field - low) / (high - low).clamp(min=1e-12)


def _pixelate(x, fracs, gens):
    h, w = x.shape[-2:]
    return [
        nnf.interpolate(
            nnf.interpolate(
                x, size=(max(1, round(frac * h)), max(1, round(frac * w))), mode="area"
            ),
            size=(h, w),
            mode="nearest-exact",
        )
        for frac in fracs
    ]


def _jpeg(x, qualities, gens):
    """Round trip through libjpeg on the CPU: rounding to uint8 and back, one copy per batch."""
    as_bytes = (x.detach().to("cpu", torch.float32) * 255).round().clamp(0, 255).to(torch.uint8)
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its JPEG codec in favour of torchcodec (not a dependency);
        # F.jpeg still works, and only this exact warning is silenced.
        warnings.filterwarnings("ignore", message=_JPEG_DEPRECATION, category=DeprecationWarning)
        decoded = torch.stack([F.jpeg(as_bytes, quality) for quality in qualities])
    return list((decoded.to(torch.float32) / 255).to(device=x.device, dtype=x.dtype))


def _rotate(x, angles, gens):
    """Rotate by +degrees or -degrees (random per image, shared by the severities)."""
    left = _draw(gens, lambda g: torch.rand((), generator=g) < 0.5, x, torch.bool)
    outs = []
    for degrees in angles:
        out = torch.empty_like(x)
        for sign, rows in ((1, left), (-1, ~left)):
            if rows.any():
                out[rows] = F.rotate(
                    x[rows], sign * degrees, interpolation=F.InterpolationMode.BILINEAR
                )
        outs.append(out)
    return outs


def _perspective(x, scales, gens):
    """Move each corner inwards by up to scale/2 of the side: one grid_sample per severity.

    The uniform draws are shared by the severities; the coefficients of every image at every
    severity are solved in one batched call and moved to x's device in one copy.
    """
    h, w = x.shape[-2:]
    start = torch.tensor([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=torch.float64)
    inward = torch.tensor([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=torch.float64)
    sides = torch.tensor([w - 1, h - 1], dtype=torch.float64)
    u = torch.stack([torch.rand(4, 2, generator=g, dtype=torch.float64) for g in gens])
    ends = torch.cat([start + inward * (u * scale / 2 * sides) for scale in scales])
    coeffs = _perspective_coefficients(start, ends).to(device=x.device, dtype=x.dtype)
    return [_perspective_warp(x, part) for part in coeffs.split(len(x))]


def _perspective_coefficients(start: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """(N, 8) float32 coefficients that map ``ends`` (N, 4, 2) back to ``start`` (4, 2), as
    torchvision's ``_get_perspective_coeffs`` solves them for one image (rows rounded to
    float32, least squares in float64, the solution rounded to float32), all in one call."""
    ex, ey = ends[..., 0], ends[..., 1]
    sx, sy = start[:, 0].expand_as(ex), start[:, 1].expand_as(ey)
    one, zero = torch.ones_like(ex), torch.zeros_like(ex)
    rows_x = torch.stack([ex, ey, one, zero, zero, zero, -sx * ex, -sx * ey], dim=-1)
    rows_y = torch.stack([zero, zero, zero, ex, ey, one, -sy * ex, -sy * ey], dim=-1)
    a = torch.stack([rows_x, rows_y], dim=2).reshape(-1, 8, 8).float().double()
    b = start.reshape(1, 8, 1).expand(len(a), 8, 1)
    return torch.linalg.lstsq(a, b, driver="gels").solution[..., 0].float()


def _perspective_warp(x: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """``F.perspective(x[i], coefficients=coeffs[i])`` (bilinear, black fill) for all images
    at once: torchvision's ``_perspective_grid`` (the coefficients divided by half the side,
    applied to the pixel centres) with one coefficient set per image, then one grid_sample."""
    n, _, h, w = x.shape
    c = coeffs[:, :, None, None]  # (N, 8, 1, 1) against (H, W) pixel centres
    px = torch.linspace(0.5, w - 0.5, w, device=x.device, dtype=x.dtype)[None, :]
    py = torch.linspace(0.5, h - 0.5, h, device=x.device, dtype=x.dtype)[:, None]
    # elementwise rather than a matrix product, whose rounding would depend on the batch size
    denominator = c[:, 6] * px + c[:, 7] * py + 1.0
    gx = (c[:, 0] / (0.5 * w) * px + c[:, 1] / (0.5 * w) * py + c[:, 2] / (0.5 * w)) / denominator
    gy = (c[:, 3] / (0.5 * h) * px + c[:, 4] / (0.5 * h) * py + c[:, 5] / (0.5 * h)) / denominator
    grid = torch.stack([gx - 1.0, gy - 1.0], dim=-1)
    return nnf.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _occlusion(x, fracs, gens):
    corner = _draw(gens, lambda g: torch.rand(2, generator=g, dtype=torch.float64), x)
    grey = torch.full_like(x, _OCCLUDER_GREY)
    return [torch.where(_box(x, frac, corner), grey, x) for frac in fracs]


def _box(x, frac, corner):
    """(N, 1, H, W) mask of a square of ``frac`` * side at ``corner`` (fractions of the room)."""
    h, w = x.shape[-2:]
    bh, bw = max(1, round(frac * h)), max(1, round(frac * w))
    top = (corner[:, 0] * (h - bh + 1)).floor().clamp(max=h - bh)
    left = (corner[:, 1] * (w - bw + 1)).floor().clamp(max=w - bw)
    rows = torch.arange(h, device=x.device, dtype=x.dtype)
    cols = torch.arange(w, device=x.device, dtype=x.dtype)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + bh)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + bw)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _elastic(x, fracs, gens):
    """Warp by a smooth random field of RMS ``frac`` * side pixels: one grid_sample per severity.

    The field of unit RMS is drawn once per image and scaled per severity;
    :func:`_elastic_warp` does what ``F.elastic`` does for one image, for the whole batch.
    """
    h, w = x.shape[-2:]
    side = min(h, w)
    unit = _draw(gens, lambda g: _unit_field(g, h, w), x, torch.float64)
    to_grid = torch.tensor([2 / w, 2 / h], device=x.device, dtype=torch.float64)
    return [_elastic_warp(x, (unit * (frac * side) * to_grid).to(x.dtype)) for frac in fracs]


def _unit_field(g: torch.Generator, h: int, w: int) -> torch.Tensor:
    """(H, W, 2) float64 displacement in pixels (x, y) of RMS 1: uniform noise in [-1, 1]
    smoothed by a Gaussian of sigma ``_ELASTIC_SMOOTHNESS`` of the side (``F.gaussian_blur``'s
    kernel and reflect padding, as a product with :func:`_blur_matrix` each way). Image by
    image on the CPU: a batched matrix product would round differently with the batch."""
    side = min(h, w)
    sigma = _ELASTIC_SMOOTHNESS * side
    size = min(2 * math.ceil(3 * sigma) + 1, 2 * (side // 2) - 1)
    noise = torch.rand(2, h, w, generator=g, dtype=torch.float64) * 2 - 1
    smooth = _blur_matrix(h, size, sigma) @ noise @ _blur_matrix(w, size, sigma).T
    rms = smooth.pow(2).mean().sqrt().clamp(min=1e-12)
    return (smooth / rms).permute(1, 2, 0)


@functools.lru_cache(maxsize=8)
def _blur_matrix(n: int, size: int, sigma: float) -> torch.Tensor:
    """(n, n) float64 matrix of a 1-D Gaussian blur along a side of n pixels, as
    ``F.gaussian_blur`` does it: its kernel of ``size`` taps (a softmax of -(t / sigma)^2
    over ``t`` evenly spaced in +-(size - 1) / (2 sqrt 2)) over reflect padding."""
    lim = (size - 1) / (2.0 * math.sqrt(2.0))
    kernel = torch.softmax(
        -((torch.linspace(-lim, lim, size, dtype=torch.float64) / sigma) ** 2), 0
    )
    taps = torch.arange(n)[:, None] + torch.arange(size) - size // 2
    source = torch.where(taps < 0, -taps, torch.where(taps > n - 1, 2 * (n - 1) - taps, taps))
    matrix = torch.zeros(n, n, dtype=torch.float64)
    return matrix.scatter_add_(1, source, kernel.expand(n, size).contiguous())


def _elastic_warp(x: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """``F.elastic(x[i], displacement[i:i+1])`` (bilinear, black fill) for every image at once:
    torchvision's identity grid (``_create_identity_grid``) plus each image's (H, W, 2)
    displacement in grid units, one grid_sample."""
    h, w = x.shape[-2:]
    identity = torch.empty(1, h, w, 2, device=x.device, dtype=x.dtype)
    identity[..., 0] = torch.linspace((1 - w) / w, (w - 1) / w, w, device=x.device, dtype=x.dtype)
    identity[..., 1] = torch.linspace((1 - h) / h, (h - 1) / h, h, device=x.device, dtype=x.dtype)[
        :, None
    ]
    return nnf.grid_sample(
        x, identity + displacement, mode="bilinear", padding_mode="zeros", align_corners=False
    )


# name -> kernel(x, parameter values of the severities asked for, one generator per image):
# one unclamped tensor per value, in order, the random parts drawn once for all of them
_KERNELS: dict[str, Callable] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "gaussian_blur": _gaussian_blur,
    "motion_blur": _motion_blur,
    "brightness": _brightness,
    "darkness": _darkness,
    "contrast": _contrast,
    "fog": _fog,
    "pixelate": _pixelate,
    "jpeg": _jpeg,
    "rotate": _rotate,
    "perspective": _perspective,
    "occlusion": _occlusion,
    "elastic": _elastic,
}
