"""Defensive image decoding and batching.

``decode_image`` turns one file into an upright ``uint8`` array of shape
``(H, W, C)`` with ``C`` in ``{1, 3}``, or raises :class:`DataError` with one
line that names the file. ``to_chw_uint8`` stacks such arrays into one
``(N, C, H, W)`` batch of a common size and channel count; ``target_shape``
picks that size and count from the decoded shapes alone, and ``to_chw`` brings
one image to it.

Pixel values are always 8-bit intensities, 0..255; sizes are in pixels and
tuples are ``(H, W)`` (NumPy order), except where Pillow itself wants ``(W, H)``.
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from auditclf.errors import DataError

DEFAULT_MAX_PIXELS = 40_000_000  # per image; larger is refused as a decompression bomb

# The only formats decoded, whatever the file name says; the format is detected from the
# content. Each is decoded by Pillow itself or a widely fuzzed library (libpng, libjpeg,
# libwebp, libtiff). Left out on purpose: EPS/PS and PDF (Pillow hands EPS to Ghostscript,
# an interpreter), and the long tail of rarely used plugins (FITS, PSD, SGI, DDS, ...).
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
_SNIFF_BYTES = 16  # what Pillow's plugins look at to recognise their format

# What Pillow's decoders raise on damaged data. They are not consistent: PNG raises
# SyntaxError for bad chunks, JPEG OSError("image file is truncated"), zlib its own
# error, and header parsers struct.error / IndexError / ValueError / EOFError.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    struct.error,
    zlib.error,
)

# 16-bit grayscale in its various byte orders, plus 32-bit "I", which Pillow also
# uses for 16-bit PNG/TIFF data on some versions.
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})

# Modes Pillow can turn into one of our four 8-bit working modes with convert().
_CONVERT_TO = {
    "1": "L",
    "L": "L",
    "LA": "LA",
    "La": "LA",
    "PA": "RGBA",
    "RGB": "RGB",
    "RGBA": "RGBA",
    "RGBa": "RGBA",
    "RGBX": "RGB",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "HSV": "RGB",
}

_U16_MAX = 65535
_SHORT_REASON_CHARS = 120


def decode_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    alpha_background: int = 255,
) -> np.ndarray:
    """Decode one image file defensively with Pillow.

    Args:
        path: the image file.
        max_pixels: refuse images with more than this many pixels (width × height),
            checked from the header before any pixel is decoded. Pillow's own global
            limit (``Image.MAX_IMAGE_PIXELS``) also applies; the smaller one wins.
        alpha_background: gray level 0..255 that transparent pixels are composited
            onto (255 = white).

    Returns:
        A new, C-contiguous ``uint8`` array of shape ``(H, W, C)``, ``C`` in ``{1, 3}``,
        upright according to the EXIF orientation tag; the first frame of a
        multi-frame file. Warnings Pillow issues while decoding are not passed on.

    Raises:
        DataError: one line naming ``path``, for a missing, empty, unreadable,
            truncated, oversized or unconvertible file.
        ValueError: for a bad ``max_pixels`` or ``alpha_background`` argument.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if not 0 <= alpha_background <= 255:
        raise ValueError(f"alpha_background must be in 0..255, got {alpha_background}")
    name = os.fspath(path)
    _check_file(name)
    limit = _effective_pixel_limit(max_pixels)
    with warnings.catch_warnings():
        # Silence warnings issued by Pillow itself, for this call only:
        # - metadata it skips ("Corrupt EXIF data"): it then either decodes the pixels
        #   fine or fails, and the failure becomes a DataError;
        # - DecompressionBombWarning from Image.open: _check_pixels below refuses the
        #   same images (the limit includes MAX_IMAGE_PIXELS), naming the dimensions.
        warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
        img = _open(name)
        with img:
            _check_pixels(name, img.size, limit)
            # Some plugins re-check while decoding (TIFF tiles, GIF frames); there a
            # warning means the header under-stated the size, so refuse it.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            _load(name, img)
            upright = _exif_upright(name, img)
            return _to_uint8_hwc(name, upright, alpha_background)


def _check_file(name: str) -> None:
    """Refuse a path that is missing, not a regular file, or 0 bytes long."""
    try:
        size = os.stat(name).st_size
    except FileNotFoundError:
        raise DataError(f"{name}: no such file") from None
    except OSError as exc:
        raise DataError(f"{name}: cannot read file: {exc.strerror or exc}") from None
    if not Path(name).is_file():
        raise DataError(f"{name}: not a regular file")
    if size == 0:
        raise DataError(f"{name}: empty file (0 bytes)")


def _effective_pixel_limit(max_pixels: int) -> int:
    """The smaller of ``max_pixels`` and Pillow's process-wide limit (None = no limit)."""
    pillow_limit = Image.MAX_IMAGE_PIXELS
    return max_pixels if pillow_limit is None else min(max_pixels, int(pillow_limit))


def _open(name: str) -> Image.Image:
    """``Image.open`` restricted to :data:`ALLOWED_FORMATS` (reads the header only),
    with its failures as DataError."""
    try:
        return Image.open(name, formats=ALLOWED_FORMATS)
    except FileNotFoundError:
        raise DataError(f"{name}: no such file") from None
    except Image.DecompressionBombError as exc:
        # Over twice Pillow's limit: Pillow refuses before we can read the size.
        raise DataError(f"{name}: {_short(exc)} (decompression-bomb guard)") from None
    except UnidentifiedImageError:
        detected = _detected_format(name)
        if detected is None or detected in ALLOWED_FORMATS:  # none, or a damaged header
            raise DataError(f"{name}: not an image Pillow can read") from None
        raise DataError(
            f"{name}: the content looks like {detected}, not one of the decoded formats "
            f"({', '.join(ALLOWED_FORMATS)}); convert it to PNG"
        ) from None
    except (IsADirectoryError, PermissionError) as exc:
        raise DataError(f"{name}: cannot read file: {exc.strerror or exc}") from None
    except _DECODE_ERRORS as exc:
        # A plugin recognised the signature, then choked on the header.
        raise DataError(f"{name}: truncated or corrupt image: {_short(exc)}") from None


def _detected_format(name: str) -> str | None:
    """The format Pillow would take the file for, from its first bytes only.

    Asks each plugin's signature check (``accept``), never its header parser or
    decoder, so naming an EPS file does not start Ghostscript.
    """
    try:
        with open(name, "rb") as handle:
            prefix = handle.read(_SNIFF_BYTES)
    except OSError:
        return None
    Image.init()
    return next((fmt for fmt, (_, accept) in Image.OPEN.items() if accept and accept(prefix)), None)


def _check_pixels(name: str, size: tuple[int, int], limit: int) -> None:
    """Refuse an empty or oversized image; ``size`` is Pillow's ``(W, H)``."""
    width, height = size
    pixels = width * height
    if pixels == 0:
        raise DataError(f"{name}: image has no pixels ({width}×{height})")
    if pixels > limit:
        raise DataError(
            f"{name}: image is {width}×{height} = {pixels} pixels, over the limit of "
            f"{limit} (decompression-bomb guard)"
        )


def _load(name: str, img: Image.Image) -> None:
    """Decode the pixels of the current (first) frame, refusing damaged data.

    ``ImageFile.LOAD_TRUNCATED_IMAGES`` stays False: a half-decoded image would be
    silently padded with gray and audited as if it were real.
    """
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{name}: {_short(exc)} (decompression-bomb guard)") from None
    except _DECODE_ERRORS as exc:
        raise DataError(f"{name}: truncated or corrupt image: {_short(exc)}") from None


def _exif_upright(name: str, img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag so that row 0 is the top of the scene."""
    try:
        return ImageOps.exif_transpose(img)
    except _DECODE_ERRORS as exc:
        raise DataError(f"{name}: truncated or corrupt image: bad EXIF: {_short(exc)}") from None


def _to_uint8_hwc(name: str, img: Image.Image, background: int) -> np.ndarray:
    """Map any supported mode to an 8-bit ``(H, W, C)`` array, ``C`` in ``{1, 3}``."""
    if img.mode in _WIDE_GRAY_MODES:
        return _wide_gray_to_uint8(name, img)[:, :, None]
    if img.mode == "F":
        return _float_to_uint8(name, img)[:, :, None]
    img = _to_working_mode(name, img)
    # np.array copies: Pillow's array interface hands out a read-only buffer.
    arr = np.array(img, dtype=np.uint8, order="C")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if img.mode in ("LA", "RGBA"):
        arr = _composite(arr, background)
    return arr


def _to_working_mode(name: str, img: Image.Image) -> Image.Image:
    """Convert ``img`` to one of L, LA, RGB, RGBA (alpha kept for compositing)."""
    mode = img.mode
    has_transparency = img.info.get("transparency") is not None
    if mode == "P":
        target = "RGBA" if has_transparency else "RGB"
    elif mode in ("L", "RGB") and has_transparency:
        # A tRNS colour key: turn it into a real alpha channel so it gets composited.
        target = "LA" if mode == "L" else "RGBA"
    elif mode == "LAB":
        return _lab_to_rgb(name, img)
    elif mode in _CONVERT_TO:
        target = _CONVERT_TO[mode]
    else:
        raise DataError(f"{name}: unsupported image mode {mode!r}")
    if target == mode:
        return img
    try:
        return img.convert(target)
    except ValueError as exc:
        raise DataError(f"{name}: cannot convert mode {mode!r} to {target}: {exc}") from None


def _lab_to_rgb(name: str, img: Image.Image) -> Image.Image:
    """CIELAB -> sRGB through littleCMS, which Pillow versions all agree on."""
    try:
        from PIL import ImageCms
    except ImportError:
        raise DataError(f"{name}: LAB image needs Pillow built with littleCMS") from None
    transform = ImageCms.buildTransform(
        ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
    )
    return ImageCms.applyTransform(img, transform)


def _composite(arr: np.ndarray, background: int) -> np.ndarray:
    """Blend ``(H, W, C+1)`` colour+alpha over a flat gray ``background``.

    Returns ``(H, W, C)`` uint8: ``round((c * a + bg * (255 - a)) / 255)``, so alpha
    255 keeps the colour exactly and alpha 0 gives exactly ``background``.
    """
    color = arr[:, :, :-1].astype(np.uint32)
    alpha = arr[:, :, -1:].astype(np.uint32)
    blended = (color * alpha + background * (255 - alpha) + 127) // 255
    return blended.astype(np.uint8)


def _wide_gray_to_uint8(name: str, img: Image.Image) -> np.ndarray:
    """16-bit (or 32-bit holding 0..65535) gray -> ``(H, W)`` uint8.

    Scales by ``round(v / 257)`` so 65535 -> 255 and 32896 -> 128. Pillow's own
    ``convert("L")`` clips at 255 instead, which turns most 16-bit images white.
    """
    values = np.asarray(img).astype(np.int64)
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > _U16_MAX:
        raise DataError(
            f"{name}: {img.mode!r} image has values {low}..{high}, outside the 16-bit "
            f"range 0..{_U16_MAX}; cannot map to 8 bit"
        )
    # (v + 128) // 257 == round(v / 257); v / 257 is never exactly x.5 for integer v.
    return ((values + 128) // 257).astype(np.uint8)


def _float_to_uint8(name: str, img: Image.Image) -> np.ndarray:
    """Mode "F" -> ``(H, W)`` uint8: [0, 1] is scaled by 255, [0, 255] is rounded.

    Rounding is to nearest, ties to even (``np.rint``). Anything else is refused
    because there is no safe guess at what the numbers mean.
    """
    values = np.asarray(img).astype(np.float64)
    if not np.isfinite(values).all():
        raise DataError(f"{name}: float image contains NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= 1.0:
        return np.rint(values * 255.0).astype(np.uint8)
    if low >= 0.0 and high <= 255.0:
        return np.rint(values).astype(np.uint8)
    raise DataError(
        f"{name}: float image has values {low:g}..{high:g}, outside [0, 1] and [0, 255]; "
        "cannot map to 8 bit"
    )


def _short(exc: BaseException) -> str:
    """First line of an exception's message, capped, for a one-line DataError."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    if len(text) > _SHORT_REASON_CHARS:
        text = text[: _SHORT_REASON_CHARS - 1] + "…"
    return text


def to_chw_uint8(
    images: list[np.ndarray],
    *,
    size: tuple[int, int] | None,
    channels: int | None,
) -> tuple[np.ndarray, dict]:
    """Stack decoded ``(H, W, C)`` uint8 arrays into one ``(N, C, H, W)`` uint8 array.

    Args:
        images: arrays as returned by :func:`decode_image`, ``C`` in ``{1, 3}``.
        size: target ``(H, W)`` in pixels; None -> the most common ``(H, W)`` among
            ``images`` (ties: the one seen first). Other sizes are resized with
            Pillow's bilinear filter, which is antialiased when shrinking.
        channels: 1 or 3; None -> 3 if any image has 3 channels, else 1. Gray is
            repeated to 3 channels; RGB becomes L by Pillow's ITU-R 601 luma
            (before resizing, which is then done on one channel).

    Returns:
        ``(batch, info)``: ``batch`` of shape ``(N, C, H, W)``, and
        ``info = {"resized": n, "size": [H, W], "channels": C,
        "converted_to_rgb": n, "converted_to_gray": n}``.

    Raises:
        ValueError: for arrays that are not ``(H, W, 1|3)`` uint8, a bad ``size`` or
            ``channels``, or an empty list without both ``size`` and ``channels``.
    """
    for i, arr in enumerate(images):
        _check_hwc(i, arr)
    target_c, height, width = target_shape(
        [arr.shape for arr in images], size=size, channels=channels
    )
    batch = np.empty((len(images), target_c, height, width), dtype=np.uint8)
    info = {
        "resized": 0,
        "size": [height, width],
        "channels": target_c,
        "converted_to_rgb": 0,
        "converted_to_gray": 0,
    }
    for i, arr in enumerate(images):
        batch[i] = to_chw(arr, (target_c, height, width))
        info["resized"] += arr.shape[:2] != (height, width)
        info["converted_to_gray"] += arr.shape[2] == 3 and target_c == 1
        info["converted_to_rgb"] += arr.shape[2] == 1 and target_c == 3
    return batch, info


def target_shape(
    shapes: list[tuple[int, int, int]],
    *,
    size: tuple[int, int] | None,
    channels: int | None,
) -> tuple[int, int, int]:
    """The ``(C, H, W)`` that images of the decoded ``(H, W, C)`` ``shapes`` are stacked at.

    The rules of :func:`to_chw_uint8`; shapes suffice, so a folder too large to
    hold decoded is sized from one pass that keeps only each image's shape.
    """
    height, width = _target_size([shape[:2] for shape in shapes], size)
    return _target_channels([shape[2] for shape in shapes], channels), height, width


def to_chw(arr: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """One decoded ``(H, W, 1|3)`` uint8 image as ``(C, H, W)`` uint8 of the target ``shape``.

    RGB becomes L before resizing (which is then done on one channel); gray is
    repeated to 3 channels.
    """
    channels, height, width = shape
    if arr.shape[2] == 3 and channels == 1:
        arr = _rgb_to_luma(arr)
    if arr.shape[:2] != (height, width):
        arr = _resize(arr, (height, width))
    out = np.empty(shape, dtype=np.uint8)
    out[:] = arr.transpose(2, 0, 1)  # (1, H, W) broadcasts to (3, H, W)
    return out


def _check_hwc(index: int, arr: np.ndarray) -> None:
    """Refuse anything but a non-empty ``(H, W, 1|3)`` uint8 array."""
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8 or arr.ndim != 3:
        got = f"{getattr(arr, 'dtype', type(arr).__name__)} {getattr(arr, 'shape', '')}"
        raise ValueError(f"images[{index}]: expected a (H, W, C) uint8 array, got {got}")
    if arr.shape[2] not in (1, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"images[{index}]: expected (H, W, 1|3) with H, W > 0, got {arr.shape}")


def _target_size(sizes: list[tuple[int, int]], size: tuple[int, int] | None) -> tuple[int, int]:
    """The ``(H, W)`` to stack at: ``size`` if given, else the most common one."""
    if size is not None:
        if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
            raise ValueError(f"size must be (H, W) with positive integers, got {size!r}")
        return int(size[0]), int(size[1])
    if not sizes:
        raise ValueError("cannot infer size from zero images; pass size=(H, W)")
    # Counter keeps first-seen order among equal counts, so ties go to the earliest.
    (height, width), _ = Counter(tuple(map(int, hw)) for hw in sizes).most_common(1)[0]
    return int(height), int(width)


def _target_channels(counts: list[int], channels: int | None) -> int:
    """1 or 3: ``channels`` if given, else 3 if any image is RGB."""
    if channels is not None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        return channels
    if not counts:
        raise ValueError("cannot infer channels from zero images; pass channels=1 or 3")
    return 3 if 3 in counts else 1


def _rgb_to_luma(arr: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` -> ``(H, W, 1)`` with Pillow's L = 0.299 R + 0.587 G + 0.114 B."""
    return np.asarray(Image.fromarray(arr).convert("L"), dtype=np.uint8)[:, :, None]


def _resize(arr: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W, C)`` uint8 to ``size_hw`` with Pillow's antialiased bilinear."""
    # fromarray picks L for (H, W) and RGB for (H, W, 3) uint8; resize wants (W, H).
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    resized = img.resize((size_hw[1], size_hw[0]), Image.Resampling.BILINEAR)
    out = np.asarray(resized, dtype=np.uint8)
    return out[:, :, None] if out.ndim == 2 else out
