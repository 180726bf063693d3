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

Determinism: every random part (noise, impulse positions, fog field, motion direction, rotation
sign, perspective corners, occluder position, elastic field) is drawn on the CPU from a
``torch.Generator`` per image, seeded by that image's seed and the corruption's name, then moved
to the input's device once per batch. An image therefore gets the same corruption whatever batch
it comes in and on whatever device it runs. The same seed at every severity gives the same
pattern at growing strength (common random numbers), so accuracy differences between severities
are not sampling noise of the corruption itself. JPEG is encoded on the CPU (libjpeg) because
nvjpeg's bytes differ from it.
"""

from __future__ import annotations

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
        (0.08, 0.12, 0.18, 0.26, 0.38), "std in [0,1] units",
        "additive Gaussian noise, independent per pixel and channel",
        "ImageNet-C gaussian_noise c"),
    "shot_noise": CorruptionSpec(
        (60, 25, 12, 5, 3), "photons at full intensity",
        "Poisson photon noise: Poisson(x * photons) / photons",
        "ImageNet-C shot_noise c"),
    "impulse_noise": CorruptionSpec(
        (0.03, 0.06, 0.09, 0.17, 0.27), "fraction of pixel values",
        "salt-and-pepper: that fraction of values set to 0 or 1 (half each)",
        "ImageNet-C impulse_noise c (skimage s&p amount)"),
    "gaussian_blur": CorruptionSpec(
        (0.025, 0.04, 0.055, 0.075, 0.10), "sigma as a fraction of the image side",
        "Gaussian blur, kernel 2*ceil(3 sigma)+1",
        "ImageNet-C gaussian_blur sigma 1-6 px at 224 px and CIFAR-10-C 0.4-1 px at 32 px, "
        "raised for small images where a sub-pixel sigma is a no-op", side_pixels="exact"),
    "motion_blur": CorruptionSpec(
        (0.06, 0.10, 0.15, 0.22, 0.30), "line length as a fraction of the image side",
        "average along a centred line at a random angle in [0, 180) degrees",
        "ImageNet-C motion_blur (radius 10-20, sigma 3-15 px at 224 px), as a fraction",
        side_pixels="exact"),
    "brightness": CorruptionSpec(
        (0.1, 0.2, 0.3, 0.4, 0.5), "fraction of the way to white",
        "x + c (1 - x): 1 - adjust_brightness(1 - x, 1 - c); lifts dark background",
        "ImageNet-C brightness (+c on HSV value)",
        "grey: value + c(1-value); RGB: each channel moved c of the way to white"),
    "darkness": CorruptionSpec(
        (0.2, 0.35, 0.5, 0.65, 0.8), "fraction of the way to black",
        "x (1 - c): adjust_brightness(x, 1 - c); a fainter scanner or under-exposure",
        "mirror of ImageNet-C brightness; extended to 0.8 for faint strokes"),
    "contrast": CorruptionSpec(
        (0.4, 0.3, 0.2, 0.1, 0.05), "contrast factor",
        "adjust_contrast: c x + (1 - c) mean(grey(x)) per image",
        "ImageNet-C contrast c",
        "grey: mean of the image; RGB: mean of its ITU-R 601 grey image"),
    "fog": CorruptionSpec(
        ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)),
        "(strength, octave decay)",
        "(x + s * field) * max(x) / (max(x) + s), field a smooth grey [0,1] noise of octaves "
        "of upsampled coarse noise, each octave's amplitude 1/decay of the previous",
        "CIFAR-10-C fog c (plasma fractal replaced by octave noise)",
        "the same grey field added to every channel"),
    "pixelate": CorruptionSpec(
        (0.6, 0.5, 0.4, 0.3, 0.25), "downsampled side as a fraction of the side",
        "area downsample to round(c * side), nearest upsample back",
        "ImageNet-C pixelate c", side_pixels="rounded"),
    "jpeg": CorruptionSpec(
        (25, 18, 15, 10, 7), "JPEG quality",
        "8-bit round trip through libjpeg at that quality",
        "ImageNet-C jpeg_compression c",
        "grey: one luma plane; RGB: YCbCr with chroma subsampling"),
    "rotate": CorruptionSpec(
        (8, 15, 22, 30, 45), "degrees, random sign",
        "bilinear rotation about the centre, corners filled black",
        "MNIST-C rotate / ImageNet-P rotate; angles chosen here"),
    "perspective": CorruptionSpec(
        (0.1, 0.2, 0.3, 0.4, 0.5), "distortion scale",
        "each corner moved inwards by up to c/2 of the side (uniform), bilinear, black fill",
        "torchvision RandomPerspective distortion_scale (default 0.5 = severity 5)"),
    "occlusion": CorruptionSpec(
        (0.2, 0.3, 0.4, 0.5, 0.6), "box side as a fraction of the side",
        "a mid-grey (0.5) square at a uniform random position inside the image",
        "Cutout (DeVries & Taylor 2017; 0.5 of the side on CIFAR)",
        "grey value 0.5 in every channel", side_pixels="rounded"),
    "elastic": CorruptionSpec(
        (0.015, 0.03, 0.045, 0.06, 0.08), "RMS displacement as a fraction of the side",
        "smooth random warp: uniform noise blurred with sigma 0.14 side, scaled to that RMS",
        "Simard et al. 2003 (sigma 4 px on 28 px MNIST) / ImageNet-C elastic_transform",
        side_pixels="exact"),
}

_OCCLUDER_GREY = 0.5
_EXAMPLE_SIDES = (8, 28, 64)
_JPEG_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"
_ELASTIC_SMOOTHNESS = 0.14


def corrupt(x: torch.Tensor, name: str, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """Return ``x`` (N, C, H, W, float in [0, 1]) corrupted by ``name`` at ``severity``.

    Severity 0 returns an exact copy (the clean image); 1-5 use ``_SPECS[name].values``. The
    result has x's shape, dtype and device, is finite and clamped to [0, 1]. ``seeds`` gives one
    integer per image; its random draws depend only on (seed, name), never on the batch.
    """
    if name not in _SPECS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in (0, *SEVERITIES):
        raise ValueError(f"severity must be 0-5, got {severity!r}")
    if x.ndim != 4 or len(seeds) != x.shape[0]:
        raise ValueError(f"need x of shape (N, C, H, W) and N seeds; got {tuple(x.shape)} "
                         f"and {len(seeds)} seeds")
    if severity == 0:
        return x.clone()
    gens = [_generator(s, name) for s in seeds]
    out = _KERNELS[name](x, _SPECS[name].values[severity - 1], gens)
    return out.clamp(0.0, 1.0).to(x.dtype)


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


def _draw(gens: list[torch.Generator], fn: Callable[[torch.Generator], torch.Tensor],
          like: torch.Tensor) -> torch.Tensor:
    """Stack one CPU draw per image and move the batch to ``like``'s device in one copy."""
    return torch.stack([fn(g) for g in gens]).to(device=like.device, dtype=like.dtype)


def _gaussian_noise(x, std, gens):
    noise = _draw(gens, lambda g: torch.randn(x.shape[1:], generator=g), x)
    return x + std * noise


def _shot_noise(x, photons, gens):
    """Poisson counts drawn on the CPU (float64 rates) so every device gets the same counts."""
    rates = x.detach().to("cpu", torch.float64).clamp(0.0, 1.0) * photons
    counts = torch.stack([torch.poisson(r, generator=g) for r, g in zip(rates, gens, strict=True)])
    return counts.to(device=x.device, dtype=x.dtype) / photons


def _impulse_noise(x, amount, gens):
    u = _draw(gens, lambda g: torch.rand(x.shape[1:], generator=g), x)
    out = torch.where(u < amount / 2, torch.zeros_like(x), x)
    return torch.where((u >= amount / 2) & (u < amount), torch.ones_like(x), out)


def _gaussian_blur(x, frac, gens):
    sigma = frac * min(x.shape[-2:])
    size = 2 * math.ceil(3 * sigma) + 1
    size = min(size, 2 * (min(x.shape[-2:]) // 2) - 1)
    return F.gaussian_blur(x, [size, size], [sigma, sigma])


def _motion_blur(x, frac, gens):
    """Average along a line of ``frac`` * side pixels at a random angle, one kernel per image.

    Points along the line are splatted bilinearly into a K x K kernel (a tent function), so the
    kernel is built without loops; a grouped convolution applies each image's own kernel.
    """
    n, c, h, w = x.shape
    length = frac * min(h, w)
    k = 2 * math.ceil(length / 2) + 1
    theta = _draw(gens, lambda g: torch.rand((), generator=g, dtype=torch.float64) * math.pi, x)
    t = torch.linspace(-length / 2, length / 2, 4 * k + 1, device=x.device, dtype=x.dtype)
    centre = (k - 1) / 2
    px = centre + t[None, :] * torch.cos(theta)[:, None]
    py = centre + t[None, :] * torch.sin(theta)[:, None]
    grid = torch.arange(k, device=x.device, dtype=x.dtype)
    wy = (1 - (py[:, :, None] - grid).abs()).clamp(min=0)
    wx = (1 - (px[:, :, None] - grid).abs()).clamp(min=0)
    kernel = torch.einsum("nmi,nmj->nij", wy, wx)
    kernel = kernel / kernel.sum(dim=(1, 2), keepdim=True)
    weight = kernel.repeat_interleave(c, dim=0)[:, None]
    pad = k // 2
    padded = nnf.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="replicate")
    return nnf.conv2d(padded, weight, groups=n * c).reshape(n, c, h, w)


def _brightness(x, c, gens):
    return 1.0 - F.adjust_brightness(1.0 - x, 1.0 - c)


def _darkness(x, c, gens):
    return F.adjust_brightness(x, 1.0 - c)


def _contrast(x, factor, gens):
    return F.adjust_contrast(x, factor)


def _fog(x, params, gens):
    """Add a smooth grey noise field and renormalise, as ImageNet-C's fog does."""
    strength, decay = params
    h, w = x.shape[-2:]
    field = _draw(gens, lambda g: _octave_noise(g, h, w, decay), x)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + strength * field) * peak / (peak + strength)


def _octave_noise(g: torch.Generator, h: int, w: int, decay: float) -> torch.Tensor:
    """A (1, H, W) field in [0, 1]: coarse uniform noise at 2, 4, 8.. cells, bilinear upsampled."""
    field = torch.zeros(1, 1, h, w)
    cells, amplitude = 2, 1.0
    while cells <= max(2, min(h, w) // 2):
        coarse = torch.rand(1, 1, cells, cells, generator=g)
        field += amplitude * nnf.interpolate(coarse, size=(h, w), mode="bilinear",
                                             align_corners=False)
        cells, amplitude = cells * 2, amplitude / decay
    low, high = field.amin(), field.amax()
    return ((field - low) / (high - low).clamp(min=1e-12))[0]


def _pixelate(x, frac, gens):
    h, w = x.shape[-2:]
    small = nnf.interpolate(x, size=(max(1, round(frac * h)), max(1, round(frac * w))),
                            mode="area")
    return nnf.interpolate(small, size=(h, w), mode="nearest-exact")


def _jpeg(x, quality, gens):
    """Round trip through libjpeg on the CPU: rounding to uint8 and back, one copy per batch."""
    as_bytes = (x.detach().to("cpu", torch.float32) * 255).round().clamp(0, 255).to(torch.uint8)
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its JPEG codec in favour of torchcodec (not a dependency);
        # F.jpeg still works, and only this exact warning is silenced.
        warnings.filterwarnings("ignore", message=_JPEG_DEPRECATION, category=DeprecationWarning)
        decoded = F.jpeg(as_bytes, quality)
    return (decoded.to(torch.float32) / 255).to(device=x.device, dtype=x.dtype)


def _rotate(x, degrees, gens):
    """Rotate by +degrees or -degrees (random per image): two torchvision calls per batch."""
    sign = _draw(gens, lambda g: torch.rand((), generator=g) < 0.5, x) > 0.5
    left = F.rotate(x, degrees, interpolation=F.InterpolationMode.BILINEAR)
    right = F.rotate(x, -degrees, interpolation=F.InterpolationMode.BILINEAR)
    return torch.where(sign[:, None, None, None], left, right)


def _perspective(x, scale, gens):
    """Move each corner inwards by up to scale/2 of the side; one torchvision call per image."""
    h, w = x.shape[-2:]
    start = [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]
    # corner coordinates are Python numbers for torchvision: computed on the CPU
    corners = torch.tensor(start, dtype=torch.float64)
    inward = torch.tensor([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=torch.float64)
    sides = torch.tensor([w - 1, h - 1], dtype=torch.float64)
    out = torch.empty_like(x)
    for i, g in enumerate(gens):
        shift = torch.rand(4, 2, generator=g, dtype=torch.float64) * scale / 2 * sides
        end = (corners + inward * shift).tolist()
        out[i] = F.perspective(x[i], start, end, interpolation=F.InterpolationMode.BILINEAR)
    return out


def _occlusion(x, frac, gens):
    h, w = x.shape[-2:]
    bh, bw = max(1, round(frac * h)), max(1, round(frac * w))
    corner = _draw(gens, lambda g: torch.rand(2, generator=g, dtype=torch.float64), x)
    top = (corner[:, 0] * (h - bh + 1)).floor().clamp(max=h - bh)
    left = (corner[:, 1] * (w - bw + 1)).floor().clamp(max=w - bw)
    rows = torch.arange(h, device=x.device, dtype=x.dtype)
    cols = torch.arange(w, device=x.device, dtype=x.dtype)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + bh)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + bw)
    box = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
    return torch.where(box, torch.full_like(x, _OCCLUDER_GREY), x)


def _elastic(x, frac, gens):
    """Warp by a smooth random field of RMS ``frac`` * side pixels; F.elastic once per image."""
    h, w = x.shape[-2:]
    fields = _draw(gens, lambda g: _elastic_field(g, h, w, frac), x)
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = F.elastic(x[i], fields[i:i + 1], interpolation=F.InterpolationMode.BILINEAR)
    return out


def _elastic_field(g: torch.Generator, h: int, w: int, frac: float) -> torch.Tensor:
    """(H, W, 2) displacement in grid_sample units (2/W per pixel in x, 2/H in y)."""
    side = min(h, w)
    sigma = _ELASTIC_SMOOTHNESS * side
    size = min(2 * math.ceil(3 * sigma) + 1, 2 * (side // 2) - 1)
    noise = torch.rand(2, h, w, generator=g, dtype=torch.float64) * 2 - 1
    smooth = F.gaussian_blur(noise.float()[None], [size, size], [sigma, sigma])[0].double()
    rms = smooth.pow(2).mean().sqrt().clamp(min=1e-12)
    pixels = smooth / rms * frac * side
    return torch.stack([pixels[0] * 2 / w, pixels[1] * 2 / h], dim=-1).float()


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


def corrupt_severities(
    x: torch.Tensor, name: str, severities: Sequence[int], seeds: Sequence[int]
) -> list[torch.Tensor]:
    """``corrupt(x, name, s, seeds)`` for each severity ``s``, in order."""
    return [corrupt(x, name, severity, seeds) for severity in severities]
