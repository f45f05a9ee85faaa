"""The I2V input image: buckets, resize/crop/normalise for the VAE (conformance), safe reading
(the bad-image catalogue) and the documented conversions (alpha, palette, 16-bit, EXIF)."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import hyvideo.pipeline.image_input as image_input
from hyvideo.conformance import Case, run_case
from hyvideo.pipeline.image_input import (
    MAX_IMAGE_PIXELS,
    bucket_for,
    closest_bucket,
    crop_size_list,
    i2v_buckets,
    load_i2v_image,
    prepare_i2v_image,
    read_image,
    resize_center_crop,
    vae_pixels,
)
from hyvideo.pipeline.types import UsageError
from tests.conftest import conformance_root

CASE = "image_preprocess_i2v"
# From FORMAT.md section 15 (and the case's settings.mapping): (width, height) -> buckets (h, w).
KNOWN = [
    ((1920, 1080), {"360p": (352, 608), "540p": (544, 928), "720p": (704, 1248)}),
    ((1080, 1920), {"360p": (608, 352), "540p": (928, 544), "720p": (1248, 704)}),
    ((50, 50), {"360p": (480, 480), "540p": (704, 704), "720p": (960, 960)}),
    # The strict inequality for landscape images: 704/1248 is a bucket's exact ratio, excluded.
    ((1248, 704), {"360p": (352, 608), "540p": (544, 928), "720p": (736, 1248)}),
    ((704, 1248), {"360p": (608, 352), "540p": (928, 544), "720p": (1248, 736)}),
    ((5000, 1000), {"360p": (224, 896), "540p": (352, 1408), "720p": (480, 1920)}),
]


def _mapping():
    path = conformance_root() / "cases" / CASE / "case.json"
    entries = json.loads(path.read_text())["settings"]["mapping"] if path.is_file() else []
    params = [((e["image_width"], e["image_height"]), {r: tuple(e[r]) for r in ("360p", "540p", "720p")})
              for e in entries]
    return [pytest.param(size, buckets, id=f"{size[0]}x{size[1]}") for size, buckets in KNOWN + params]


def test_conformance_case(conformance):
    result = run_case(Case.open(conformance / "cases" / CASE))
    assert result.passed, result.line()


@pytest.mark.parametrize("size, buckets", _mapping())
def test_bucket_selection(size, buckets):
    width, height = size
    for resolution, expected in buckets.items():
        assert bucket_for(height, width, resolution) == expected, resolution


def test_bucket_lists():
    for resolution, count in (("360p", 43), ("540p", 67), ("720p", 91)):
        buckets = i2v_buckets(resolution)
        assert len(buckets) == count
        assert all(h % 32 == 0 and w % 32 == 0 and max(h, w) / min(h, w) <= 4 for h, w in buckets)
    assert i2v_buckets("360p")[0] == (896, 224) and i2v_buckets("360p")[-1] == (224, 896)
    assert crop_size_list(480) == i2v_buckets("360p")
    with pytest.raises(UsageError, match="360p, 540p, 720p") as err:
        i2v_buckets("1080p")
    assert err.value.field == "i2v_resolution"


def test_ties_keep_the_first_bucket():
    # a = 1.5: the buckets 1.25 (twice, different sizes) are the closest allowed (<= a).
    assert closest_bucket(3, 2, [(64, 64), (80, 64), (160, 128), (128, 64)]) == (80, 64)
    # Landscape a = 0.5: the equal ratio 0.5 is excluded, 0.75 beats 1.0.
    assert closest_bucket(1, 2, [(32, 64), (64, 64), (48, 64)]) == (48, 64)


def _noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    g = np.random.default_rng(seed)
    channels = len(mode) if mode in ("RGB", "RGBA", "LA") else 1
    array = g.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(array.squeeze(-1) if channels == 1 else array, mode)


def test_resize_center_crop_and_vae_pixels():
    image = _noise(200, 100)
    crop = resize_center_crop(image, (64, 96))  # shorter side 100 -> 64, 200 -> 128, crop 96
    assert crop.size == (96, 64)
    resized = image.resize((128, 64), Image.Resampling.BILINEAR)
    assert np.array_equal(np.asarray(crop), np.asarray(resized)[:, 16:112])
    pixels = vae_pixels(crop)
    assert pixels.shape == (1, 3, 1, 64, 96) and pixels.dtype == torch.float32
    u8 = torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1).float()
    assert torch.equal(pixels[0, :, 0], (u8 / 255 - 0.5) / 0.5)
    assert pixels.min() >= -1 and pixels.max() <= 1


def test_a_crop_larger_than_the_resized_image_is_padded_black():
    image = Image.new("RGB", (100, 50), (200, 100, 50))
    crop = np.asarray(resize_center_crop(image, (50, 103)))  # width 100 < 103: pad 1 left, 2 right
    assert crop.shape == (50, 103, 3)
    assert (crop[:, 0] == 0).all() and (crop[:, -2:] == 0).all() and (crop[:, 1:101] == (200, 100, 50)).all()


# ---------------------------------------------------------------------------- bad images


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data): what a bomb looks like."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def _animated(path: Path) -> Path:
    frames = [_noise(32, 32, seed=i) for i in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def _truncated(path: Path) -> Path:
    _noise(64, 64).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _text(path: Path) -> Path:
    path.write_text("not an image\n")
    return path


def _save(image: Image.Image):
    def make(path: Path) -> Path:
        image.save(path)
        return path
    return make


BAD = [
    ("missing.png", lambda p: p, "no such file"),
    ("folder.png", lambda p: (p.mkdir(), p)[1], "not a file"),
    ("notes.png", _text, "not an image file"),
    ("half.png", _truncated, "cannot decode"),
    ("anim.gif", _animated, "animated image (3 frames)"),
    ("anim.png", _animated, "animated image (3 frames)"),
    ("one.png", _save(Image.new("RGB", (1, 1))), "1x1 px is too small"),
    ("thin.png", _save(Image.new("RGB", (400, 8))), "400x8 px is too small"),
    ("big.png", lambda p: _png_header(p, 9000, 8000), "9000x8000 px is 69 megapixels"),
    ("bigger.png", lambda p: _png_header(p, 10000, 10000), "too many pixels"),  # PIL's warning zone
    ("bomb.png", lambda p: _png_header(p, 30000, 30000), "too many pixels"),  # PIL's error zone
    ("float.tif", _save(Image.new("F", (32, 32))), "floating-point pixels"),
]


@pytest.mark.parametrize("name, make, problem", BAD, ids=[b[0] for b in BAD])
def test_bad_image_is_one_line_naming_the_file(tmp_path, name, make, problem):
    path = make(tmp_path / name)
    with pytest.raises(UsageError) as err:
        load_i2v_image(path, "360p")
    message = str(err.value)
    assert problem in message and str(tmp_path / name) in message
    assert "valid: a still image file" in message and "\n" not in message
    assert err.value.field == "i2v_image_path"


def test_unreadable_file(tmp_path, monkeypatch):
    path = _save(_noise(32, 32))(tmp_path / "locked.png")

    def denied(fp, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(fp))

    monkeypatch.setattr(image_input.Image, "open", denied)
    with pytest.raises(UsageError, match=r"locked.png: cannot read it: Permission denied \(valid"):
        read_image(path)


def test_the_limits_are_inclusive(tmp_path):
    assert read_image(_save(Image.new("RGB", (16, 16)))(tmp_path / "small.png")).size == (16, 16)
    side = int(MAX_IMAGE_PIXELS ** 0.5)
    image_input.check_image(Image.new("1", (side, side)))  # exactly at the limit: accepted


def test_the_resolution_is_checked_before_the_image(tmp_path):
    with pytest.raises(UsageError) as err:
        load_i2v_image(tmp_path / "missing.png", "4k")
    assert err.value.field == "i2v_resolution"


# ---------------------------------------------------------------------------- conversions


def test_alpha_is_dropped_like_the_reference(tmp_path):
    rgba = Image.new("RGBA", (20, 20), (200, 10, 30, 0))  # fully transparent, colour kept
    rgba.putpixel((0, 0), (1, 2, 3, 255))
    image = read_image(_save(rgba)(tmp_path / "alpha.png"))
    assert image.mode == "RGB"
    assert image.getpixel((5, 5)) == (200, 10, 30) and image.getpixel((0, 0)) == (1, 2, 3)
    la = read_image(_save(Image.new("LA", (20, 20), (77, 0)))(tmp_path / "la.png"))
    assert la.getpixel((3, 3)) == (77, 77, 77)


def test_palette_and_grayscale(tmp_path):
    palette = Image.new("P", (20, 20), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    palette.info["transparency"] = 1
    image = read_image(_save(palette)(tmp_path / "palette.png"))
    assert image.mode == "RGB" and image.getpixel((4, 4)) == (10, 200, 30)
    gray = read_image(_save(Image.new("L", (20, 20), 90))(tmp_path / "gray.jpg"))
    assert gray.mode == "RGB" and gray.getpixel((4, 4)) == (90, 90, 90)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 32768]] * 16, dtype=np.uint16).repeat(4, axis=1)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    image = np.asarray(read_image(path))
    assert image[0, 0].tolist() == [0] * 3 and image[0, 4].tolist() == [100] * 3
    assert image[0, 8].tolist() == [255] * 3 and image[0, 12].tolist() == [128] * 3


def test_exif_orientation_is_applied(tmp_path):
    original = _noise(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "phone.png"
    original.save(path, exif=exif)
    image = read_image(path)
    assert image.size == (20, 40)
    assert np.array_equal(np.asarray(image), np.asarray(original.transpose(Image.Transpose.ROTATE_270)))


def test_orientation_is_applied_once(tmp_path):
    original = _noise(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.png"
    original.save(path, exif=exif)
    from_file = load_i2v_image(path, "360p")
    with Image.open(path) as upload:  # what a web form hands over: the tag still there
        from_upload = prepare_i2v_image(upload, "360p")
    assert from_file.image.size == from_upload.image.size == (20, 40)
    assert torch.equal(from_file.pixels, from_upload.pixels)
    assert (from_file.height, from_file.width) == bucket_for(40, 20, "360p") == (640, 320)


def test_load_i2v_image(tmp_path):
    path = _save(_noise(64, 48))(tmp_path / "still.png")
    item = load_i2v_image(path, "360p")
    assert (item.height, item.width) == (416, 544) and item.image.size == (64, 48)
    assert item.pixels.shape == (1, 3, 1, 416, 544)
    assert item.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and item.path == path
    again = prepare_i2v_image(_noise(64, 48).convert("RGBA"), "360p")  # an in-memory upload
    assert torch.equal(again.pixels, item.pixels) and again.sha256 is None
