"""Tests for auditclf.data.images: every input file is generated here with Pillow/NumPy."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from auditclf.data.images import DEFAULT_MAX_PIXELS, decode_image, to_chw_uint8
from auditclf.errors import DataError, ExitStatus

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _noise_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Random (H, W, 3) uint8: incompressible, so half the file is half the pixels."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _refusal(path: Path, **kwargs: object) -> str:
    """decode_image's DataError message for ``path``; fails the test if it decodes."""
    with pytest.raises(DataError) as info:
        decode_image(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert info.value.status == ExitStatus.BAD_DATA
    return message


# --- good files ---------------------------------------------------------------------------


def test_gray_png_round_trips_exactly(tmp_path: Path) -> None:
    pixels = np.arange(6 * 7, dtype=np.uint8).reshape(6, 7) * 6
    path = tmp_path / "gray.png"
    Image.fromarray(pixels).save(path)

    out = decode_image(path)

    assert out.dtype == np.uint8 and out.shape == (6, 7, 1)
    np.testing.assert_array_equal(out[:, :, 0], pixels)
    assert out.flags.c_contiguous and out.flags.writeable


def test_rgb_jpeg_gives_h_w_3(tmp_path: Path) -> None:
    path = tmp_path / "rgb.jpg"
    Image.new("RGB", (10, 4), (200, 40, 90)).save(path, quality=95)

    out = decode_image(path)

    assert out.shape == (4, 10, 3) and out.dtype == np.uint8
    # JPEG is lossy; a flat colour comes back within a few levels.
    assert np.abs(out.astype(int) - (200, 40, 90)).max() <= 3


def test_mode_1_becomes_0_or_255(tmp_path: Path) -> None:
    path = tmp_path / "bw.png"
    img = Image.new("1", (3, 1), 0)
    img.putpixel((1, 0), 1)
    img.save(path)

    assert decode_image(path)[:, :, 0].tolist() == [[0, 255, 0]]


# --- refusals of the file itself ----------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    assert _refusal(path) == f"{path}: no such file"


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    assert _refusal(tmp_path) == f"{tmp_path}: not a regular file"


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert _refusal(path) == f"{path}: empty file (0 bytes)"


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not a picture\n")
    assert _refusal(path) == f"{path}: not an image Pillow can read"


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_file_refused(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"cut.{suffix}"
    Image.fromarray(_noise_rgb(64, 64)).save(path)
    assert decode_image(path).shape == (64, 64, 3)  # the whole file was fine
    _cut_in_half(path)

    message = _refusal(path)

    assert message.startswith(f"{path}: truncated or corrupt image: ")
    assert "image file is truncated" in message
    # Refusing must not have been achieved by flipping Pillow's global switch.
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_truncated_tiff_header_refused_without_warning(tmp_path: Path) -> None:
    # Pillow warns "Corrupt EXIF data" on this one before failing; -W error would turn a
    # leaked warning into a UserWarning exception instead of the DataError asserted here.
    path = tmp_path / "cut.tif"
    Image.fromarray(_noise_rgb(8, 8)).save(path)
    path.write_bytes(path.read_bytes()[:30])
    assert _refusal(path) == f"{path}: not an image Pillow can read"


# --- decompression bombs -----------------------------------------------------------------


def test_oversized_image_refused_before_decoding_without_warning(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (100, 50), 7).save(path)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        message = _refusal(path, max_pixels=4999)
    assert caught == []
    assert message == (
        f"{path}: image is 100×50 = 5000 pixels, over the limit of 4999 (decompression-bomb guard)"
    )
    assert decode_image(path, max_pixels=5000).shape == (50, 100, 1)  # limit is inclusive
    assert DEFAULT_MAX_PIXELS == 40_000_000


def test_pillow_bomb_warning_becomes_the_same_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (100, 100), 7).save(path)
    # 10_000 pixels is over Pillow's limit but under twice it: Pillow would only warn.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        message = _refusal(path)
    assert caught == []
    assert message == (
        f"{path}: image is 100×100 = 10000 pixels, over the limit of 6000 "
        "(decompression-bomb guard)"
    )
    assert Image.MAX_IMAGE_PIXELS == 6000  # read, never written


def test_pillow_bomb_error_becomes_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (100, 100), 7).save(path)
    # Over twice Pillow's limit: Image.open itself raises DecompressionBombError.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)

    message = _refusal(path)

    assert message.startswith(f"{path}: Image size (10000 pixels) exceeds limit of 8000")
    assert message.endswith("(decompression-bomb guard)")


# --- modes -------------------------------------------------------------------------------


def test_16bit_png_scaled_not_clipped(tmp_path: Path) -> None:
    # round(v / 257): 0->0, 128->0 (0.498), 129->1 (0.502), 257->1, 32896->128 (exactly
    # 128.0), 65407->255 (254.502), 65535->255. Clipping would give 128, 129, 255, ...
    values = np.array([[0, 128, 129, 257, 32896, 65407, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as img:
        assert img.mode in ("I;16", "I")  # really a 16-bit file

    out = decode_image(path)

    assert out.shape == (1, 7, 1)
    assert out[0, :, 0].tolist() == [0, 0, 1, 1, 128, 255, 255]


def test_32bit_integer_tiff_in_16bit_range_is_scaled(tmp_path: Path) -> None:
    path = tmp_path / "int.tif"
    Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.int32)).save(path)
    with Image.open(path) as img:
        assert img.mode == "I"

    assert decode_image(path)[0, :, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize(("low", "high"), [(0, 70000), (-5, 100)])
def test_32bit_integer_tiff_out_of_16bit_range_refused(tmp_path: Path, low: int, high: int) -> None:
    path = tmp_path / "int.tif"
    Image.fromarray(np.array([[low, high]], dtype=np.int32)).save(path)

    assert _refusal(path) == (
        f"{path}: 'I' image has values {low}..{high}, outside the 16-bit range "
        "0..65535; cannot map to 8 bit"
    )


def test_palette_png_transparency_composited_on_white(tmp_path: Path) -> None:
    img = Image.new("P", (4, 1), 0)
    img.putpalette([*RED, *GREEN])
    img.putdata([0, 1, 0, 1])
    path = tmp_path / "pal.png"
    img.save(path, transparency=1)  # index 1 (green) is fully transparent

    out = decode_image(path)
    black = decode_image(path, alpha_background=0)

    assert out.shape == (1, 4, 3)
    assert out[0].tolist() == [list(RED), list(WHITE), list(RED), list(WHITE)]
    assert black[0].tolist() == [list(RED), [0, 0, 0], list(RED), [0, 0, 0]]


def test_palette_png_without_transparency_is_rgb(tmp_path: Path) -> None:
    img = Image.new("P", (2, 1), 0)
    img.putpalette([*RED, *BLUE])
    img.putdata([1, 0])
    path = tmp_path / "pal.png"
    img.save(path)

    assert decode_image(path)[0].tolist() == [list(BLUE), list(RED)]


def test_rgba_alpha_composited(tmp_path: Path) -> None:
    img = Image.new("RGBA", (3, 1))
    img.putdata([(10, 20, 30, 0), (10, 20, 30, 255), (200, 100, 0, 128)])
    path = tmp_path / "rgba.png"
    img.save(path)

    out = decode_image(path)
    gray_bg = decode_image(path, alpha_background=100)

    # Third pixel: round((c * 128 + 255 * 127) / 255) = 227.39, 177.2, 127.0.
    assert out[0].tolist() == [[255, 255, 255], [10, 20, 30], [227, 177, 127]]
    assert gray_bg[0, 0].tolist() == [100, 100, 100]


def test_la_alpha_composited_to_one_channel(tmp_path: Path) -> None:
    img = Image.new("LA", (2, 1))
    img.putdata([(50, 0), (50, 255)])
    path = tmp_path / "la.png"
    img.save(path)

    out = decode_image(path)

    assert out.shape == (1, 2, 1)
    assert out[0, :, 0].tolist() == [255, 50]


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    img = Image.new("CMYK", (32, 16), (0, 0, 0, 0))  # white
    img.paste((0, 255, 255, 0), (0, 0, 16, 16))  # left half: full magenta+yellow = red
    path = tmp_path / "cmyk.jpg"
    img.save(path, quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"

    out = decode_image(path)

    assert out.shape == (16, 32, 3)
    assert np.abs(out[8, 4].astype(int) - RED).max() <= 6
    assert np.abs(out[8, 28].astype(int) - WHITE).max() <= 6


def test_lab_tiff_becomes_rgb(tmp_path: Path) -> None:
    img = Image.new("LAB", (2, 1), (255, 128, 128))  # L* = 100, a* = b* = 0: white
    img.putpixel((1, 0), (0, 128, 128))  # L* = 0: black
    path = tmp_path / "lab.tif"
    img.save(path)

    out = decode_image(path)

    assert out.shape == (1, 2, 3)
    assert np.abs(out[0, 0].astype(int) - 255).max() <= 2
    assert np.abs(out[0, 1].astype(int) - 0).max() <= 2


def test_exif_orientation_6_is_applied(tmp_path: Path) -> None:
    # Stored 64 wide x 32 high, quadrants TL red, TR green, BL blue, BR white.
    # Orientation 6 = "rotate 90° clockwise to display", so the displayed image is
    # 32 wide x 64 high with TL blue, TR red, BL white, BR green.
    stored = Image.new("RGB", (64, 32))
    stored.paste(RED, (0, 0, 32, 16))
    stored.paste(GREEN, (32, 0, 64, 16))
    stored.paste(BLUE, (0, 16, 32, 32))
    stored.paste(WHITE, (32, 16, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=95, exif=exif.tobytes())

    out = decode_image(path).astype(int)

    assert out.shape == (64, 32, 3)
    for (row, col), color in {
        (16, 8): BLUE,
        (16, 24): RED,
        (48, 8): WHITE,
        (48, 24): GREEN,
    }.items():
        assert np.abs(out[row, col] - color).max() <= 10, (row, col, out[row, col])


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 0.25, 0.5, 1.0], [0, 64, 128, 255]),  # [0, 1] x 255: 63.75, 127.5 (ties even)
        ([0.0, 2.4, 254.6, 255.0], [0, 2, 255, 255]),  # [0, 255]: rounded
    ],
)
def test_float_image_mapped_to_8bit(
    tmp_path: Path, values: list[float], expected: list[int]
) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([values], dtype=np.float32)).save(path)
    with Image.open(path) as img:
        assert img.mode == "F"

    out = decode_image(path)

    assert out.shape == (1, 4, 1)
    assert out[0, :, 0].tolist() == expected


def test_float_image_out_of_range_refused(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[-1.0, 300.0]], dtype=np.float32)).save(path)
    assert _refusal(path) == (
        f"{path}: float image has values -1..300, outside [0, 1] and [0, 255]; cannot map to 8 bit"
    )


def test_float_image_nan_refused(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.5, np.nan]], dtype=np.float32)).save(path)
    assert _refusal(path) == f"{path}: float image contains NaN or infinite values"


def test_multiframe_gif_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (4, 4), color) for color in (RED, BLUE, GREEN)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with Image.open(path) as img:
        assert img.n_frames == 3

    out = decode_image(path)

    assert out.shape == (4, 4, 3)
    assert (out.reshape(-1, 3) == RED).all()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_file_handles_closed_on_success_and_refusal(tmp_path: Path) -> None:
    good = tmp_path / "good.gif"
    frames = [Image.new("L", (4, 4), v) for v in (1, 2)]
    frames[0].save(good, save_all=True, append_images=frames[1:])  # multi-frame keeps fp
    bad = tmp_path / "bad.png"
    Image.fromarray(_noise_rgb(32, 32)).save(bad)
    _cut_in_half(bad)
    before = len(os.listdir("/proc/self/fd"))

    decode_image(good)
    _refusal(bad)
    _refusal(good, max_pixels=1)

    assert len(os.listdir("/proc/self/fd")) == before


def test_argument_validation() -> None:
    with pytest.raises(ValueError, match="alpha_background"):
        decode_image("x.png", alpha_background=256)
    with pytest.raises(ValueError, match="max_pixels"):
        decode_image("x.png", max_pixels=0)


# --- to_chw_uint8 ------------------------------------------------------------------------


def _flat(height: int, width: int, value: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(np.array(value, dtype=np.uint8), (height, width, len(value))).copy()


def test_to_chw_mixed_sizes_resized_to_most_common() -> None:
    images = [_flat(4, 6, (10,)), _flat(8, 12, (20,)), _flat(4, 6, (30,))]

    batch, info = to_chw_uint8(images, size=None, channels=None)

    assert batch.shape == (3, 1, 4, 6) and batch.dtype == np.uint8
    assert info == {
        "resized": 1,
        "size": [4, 6],
        "channels": 1,
        "converted_to_rgb": 0,
        "converted_to_gray": 0,
    }
    # A flat image stays flat (and exact) under bilinear resizing.
    assert [int(v) for v in np.unique(batch[1])] == [20]
    assert (batch[0] == 10).all() and (batch[2] == 30).all()


def test_to_chw_explicit_size_downscale_is_antialiased() -> None:
    checker = (np.indices((8, 8)).sum(axis=0) % 2 * 255).astype(np.uint8)[:, :, None]

    batch, info = to_chw_uint8([checker], size=(4, 4), channels=1)

    assert batch.shape == (1, 1, 4, 4) and info["resized"] == 1
    assert info["size"] == [4, 4]
    # Nearest-neighbour would keep pure 0/255 pixels; an antialiased filter averages.
    assert batch.min() >= 64 and batch.max() <= 191


def test_to_chw_mixed_channels_gray_repeated_to_rgb() -> None:
    images = [_flat(2, 3, (100,)), _flat(2, 3, (10, 200, 30))]

    batch, info = to_chw_uint8(images, size=None, channels=None)

    assert batch.shape == (2, 3, 2, 3)
    assert info["channels"] == 3 and info["converted_to_rgb"] == 1
    assert info["converted_to_gray"] == 0 and info["resized"] == 0
    assert batch[0, :, 0, 0].tolist() == [100, 100, 100]
    assert batch[1, :, 1, 2].tolist() == [10, 200, 30]


def test_to_chw_rgb_to_gray_uses_itu_601_luma() -> None:
    images = [_flat(2, 3, (100,)), _flat(2, 3, (10, 200, 30))]

    batch, info = to_chw_uint8(images, size=None, channels=1)

    # 0.299 * 10 + 0.587 * 200 + 0.114 * 30 = 123.81 -> 124
    assert batch.shape == (2, 1, 2, 3)
    assert info["converted_to_gray"] == 1 and info["converted_to_rgb"] == 0
    assert (batch[0] == 100).all() and (batch[1] == 124).all()


def test_to_chw_size_tie_goes_to_first_seen() -> None:
    images = [_flat(3, 5, (1,)), _flat(5, 3, (2,))]
    batch, info = to_chw_uint8(images, size=None, channels=None)
    assert batch.shape == (2, 1, 3, 5) and info["size"] == [3, 5] and info["resized"] == 1


def test_to_chw_empty_list() -> None:
    batch, info = to_chw_uint8([], size=(2, 3), channels=3)
    assert batch.shape == (0, 3, 2, 3) and info["resized"] == 0
    with pytest.raises(ValueError, match="cannot infer size"):
        to_chw_uint8([], size=None, channels=3)


def test_to_chw_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"images\[0\]"):
        to_chw_uint8([np.zeros((2, 2, 3), dtype=np.float32)], size=None, channels=None)
    with pytest.raises(ValueError, match=r"images\[1\]"):
        to_chw_uint8(
            [_flat(2, 2, (1,)), np.zeros((2, 2, 4), dtype=np.uint8)], size=None, channels=None
        )
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        to_chw_uint8([_flat(2, 2, (1,))], size=None, channels=2)
    with pytest.raises(ValueError, match="size must be"):
        to_chw_uint8([_flat(2, 2, (1,))], size=(0, 2), channels=None)
