"""The image of image-to-video: reading it safely, the size it picks, and the VAE's input.

What the reference's ``predict()`` does with ``--i2v-image-path`` and ``--i2v-resolution``
(FORMAT.md section 15), reproduced exactly:

1. **Buckets.** ``generate_crop_size_list(base, 32)`` for base 480 / 720 / 960 (360p / 540p /
   720p): sizes whose area is at most ``(base/32)^2`` 32-px patches and whose aspect ratio is at
   most 4. The first element of each pair is the height.
2. **Closest bucket.** ``a = H/W`` of the image; the ratios are ``round(h/w, 5)``. A portrait or
   square image (``a >= 1``) considers only buckets with ``ratio - a <= 0``, a landscape one only
   those with ``ratio - a > 0`` (so an exactly equal ratio is excluded for landscape images).
   The smallest ``|ratio - a|`` wins, the first one on ties. The bucket *replaces* the
   requested video size.
3. **VAE input.** torchvision's ``Resize(min(bucket))`` (shorter side to that size, the longer to
   ``int(size * long / short)``, PIL bilinear), ``CenterCrop(bucket)``, ``ToTensor``,
   ``Normalize(0.5, 0.5)``: [1, 3, 1, h, w] float32 in [-1, 1].
4. The LLaVA vision tower sees the *original* image through its CLIP processor
   (:class:`hyvideo.text.llava.LlavaTextImageEncoder`), not the crop.

Reading (:func:`read_image`) checks everything before any model is loaded, and each problem is a
one-line :class:`~hyvideo.pipeline.types.UsageError` (field ``i2v_image_path``) naming the file
and what is valid: a missing or unreadable file, a file that is not an image, an animated image,
one under 16 px on a side, one over 64 megapixels (decompression bombs included), a
floating-point image. Conversions, documented:

* **alpha** (RGBA, LA, a palette with transparency): dropped by ``convert("RGB")``, as the
  reference does; transparent pixels keep the colour stored under them (often black).
* **palette, grayscale, CMYK, YCbCr**: ``convert("RGB")``, as the reference does.
* **16-bit** images: scaled to 8 bits (value / 257). The reference's ``convert("RGB")`` would clip
  them to 255, a white image.
* **EXIF orientation** is applied (``ImageOps.exif_transpose``), so a phone photo is upright.
  The reference ignores it and would animate the sideways pixels; images without an orientation
  tag are unchanged.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from hyvideo.pipeline.types import UsageError

__all__ = [
    "I2V_RESOLUTIONS",
    "MAX_IMAGE_PIXELS",
    "MIN_IMAGE_SIDE",
    "I2VImage",
    "bucket_for",
    "check_image",
    "closest_bucket",
    "crop_size_list",
    "i2v_buckets",
    "load_i2v_image",
    "prepare_i2v_image",
    "read_image",
    "resize_center_crop",
    "vae_pixels",
]

# --i2v-resolution -> the bucket base size of the reference. 144p is ours: the same bucket walk at
# base 192, for previews and the offline tiny-random-i2v demo (the official code has no such size).
I2V_RESOLUTIONS: dict[str, int] = {"144p": 192, "360p": 480, "540p": 720, "720p": 960}
BUCKET_PATCH = 32
MIN_IMAGE_SIDE = 16  # smaller carries no picture; the buckets are at least 224 px
MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # far above any bucket (<= 1920 x 480); below PIL's bomb limit
FIELD = "i2v_image_path"
VALID = (f"valid: a still image file (PNG, JPEG, WebP, BMP, ...) of at least "
         f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} px and at most {MAX_IMAGE_PIXELS // 2**20} megapixels")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def crop_size_list(base_size: int, patch_size: int = BUCKET_PATCH, max_ratio: float = 4.0
                   ) -> list[tuple[int, int]]:
    """The reference's ``generate_crop_size_list``: (height, width) pairs, multiples of
    ``patch_size``, of at most ``round((base/patch)^2)`` patches and aspect ratio <= max_ratio.

    The walk starts at (n, 1) patches and, at each step, grows the second side while the area
    allows it, else shrinks the first one.
    """
    num_patches = round((base_size / patch_size) ** 2)
    sizes, first, second = [], num_patches, 1
    while first > 0:
        if max(first, second) / min(first, second) <= max_ratio:
            sizes.append((first * patch_size, second * patch_size))
        if (second + 1) * first <= num_patches:
            second += 1
        else:
            first -= 1
    return sizes


def closest_bucket(height: int, width: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The reference's ``get_closest_ratio`` for an image of ``height`` x ``width``.

    Portrait or square images take buckets at most as tall (``round(h/w, 5) - a <= 0``),
    landscape ones strictly taller ones (``> 0``); the smallest difference wins, the first on
    ties. (The one-sidedness is the reference's; it decides which way an image is cropped.)
    """
    aspect = float(height) / float(width)
    diffs = [round(float(h) / float(w), 5) - aspect for h, w in buckets]
    allowed = [(i, d) for i, d in enumerate(diffs) if (d <= 0 if aspect >= 1 else d > 0)]
    best = min(allowed, key=lambda pair: abs(pair[1]))[0]  # min keeps the first on ties
    return buckets[best]


def i2v_buckets(resolution: str) -> list[tuple[int, int]]:
    """The (height, width) buckets of ``--i2v-resolution`` 360p, 540p or 720p (or our 144p)."""
    if resolution not in I2V_RESOLUTIONS:
        raise UsageError(f"i2v resolution must be one of {', '.join(I2V_RESOLUTIONS)}, "
                         f"got {resolution!r}", "i2v_resolution")
    return crop_size_list(I2V_RESOLUTIONS[resolution])


def bucket_for(height: int, width: int, resolution: str) -> tuple[int, int]:
    """The video size (height, width) an image of ``height`` x ``width`` picks at
    ``resolution``: e.g. 1080 x 1920 -> (352, 608) / (544, 928) / (704, 1248)."""
    return closest_bucket(height, width, i2v_buckets(resolution))


def resize_center_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """torchvision ``Resize(min(size))`` + ``CenterCrop(size)`` on a PIL image (bilinear).

    ``size`` is (height, width). A side that comes out short (never for a bucket of the image's
    own aspect) is padded with black around the image, as torchvision does.
    """
    height, width = size
    short = min(height, width)
    w, h = image.size
    new_w, new_h = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    # torchvision: pad (left/top get the floor half) when the crop is larger, else a rounded
    # offset; a PIL crop box outside the image fills black, which is the same padding.
    left = -((width - new_w) // 2) if width > new_w else int(round((new_w - width) / 2.0))
    top = -((height - new_h) // 2) if height > new_h else int(round((new_h - height) / 2.0))
    return image.crop((left, top, left + width, top + height))


def vae_pixels(image: Image.Image) -> torch.Tensor:
    """``ToTensor`` + ``Normalize(0.5, 0.5)``: [1, 3, 1, h, w] float32 in [-1, 1]."""
    array = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy())  # [h, w, 3]
    pixels = array.permute(2, 0, 1).float().div(255)  # [3, h, w]
    return pixels.sub(0.5).div(0.5)[None, :, None]  # [1, 3, 1, h, w]


# ---------------------------------------------------------------------------- reading


def _bad(path: object, problem: str) -> UsageError:
    return UsageError(f"image {path}: {problem} ({VALID})", FIELD)


def _open(path: Path) -> Image.Image:
    if not path.exists():
        raise _bad(path, "no such file")
    if not path.is_file():
        raise _bad(path, "not a file")
    try:
        with warnings.catch_warnings():
            # PIL only warns between its own limit and twice that; make it an error here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except UnidentifiedImageError:
        raise _bad(path, "not an image file PIL can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _bad(path, "too many pixels (a decompression bomb?)") from None
    except OSError as exc:
        raise _bad(path, f"cannot read it: {exc.strerror or exc}") from None


def check_image(image: Image.Image, name: object = "upload") -> None:
    """Size, frame count and pixel type of an opened image (header only, nothing decoded)."""
    w, h = image.size
    if w * h > MAX_IMAGE_PIXELS:
        raise _bad(name, f"{w}x{h} px is {w * h / 2**20:.0f} megapixels, too many")
    if min(w, h) < MIN_IMAGE_SIDE:
        raise _bad(name, f"{w}x{h} px is too small")
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise _bad(name, f"an animated image ({frames} frames); save one frame as a still image")
    if image.mode == "F":
        raise _bad(name, "floating-point pixels; save it as an 8- or 16-bit image")


def _to_rgb(image: Image.Image) -> Image.Image:
    """The documented conversions: EXIF orientation applied, 16-bit scaled, then RGB."""
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block: keep the pixels as stored
        pass
    if image.mode in _SIXTEEN_BIT:
        values = np.asarray(image, dtype=np.float64) / 257.0  # 65535 -> 255
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL's "palette with transparency" note: alpha is dropped
        return image.convert("RGB")


def read_image(path: str | Path) -> Image.Image:
    """Open, check and decode an image file: an RGB PIL image (conversions in the module doc).

    Raises UsageError (field ``i2v_image_path``) with one line naming the file and what is valid.
    """
    path = Path(path)
    image = _open(path)
    with image:
        check_image(image, path)
        try:
            image.load()
        except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt data
            raise _bad(path, f"cannot decode it: {exc}") from None
        return _to_rgb(image)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class I2VImage:
    """An I2V input image, ready for the pipeline.

    Attributes:
        image: the original image, RGB (what the LLaVA's CLIP processor sees; the negative
            branch uses a black image of its size).
        height, width: the bucket it picked: the video size.
        pixels: the VAE input [1, 3, 1, height, width] float32 in [-1, 1].
        sha256: hex digest of the file's bytes (None for an in-memory image).
        path: the file (None for an in-memory image).
    """

    image: Image.Image
    height: int
    width: int
    pixels: torch.Tensor
    sha256: str | None = None
    path: Path | None = None


def prepare_i2v_image(image: Image.Image, resolution: str, *, path: Path | None = None,
                      sha256: str | None = None) -> I2VImage:
    """Bucket and VAE input of an opened image (e.g. an upload a web form decoded): checked and
    converted like a file (an orientation tag already applied was removed, so never twice)."""
    check_image(image, path or "upload")
    return _bucketed(_to_rgb(image), resolution, path, sha256)


def load_i2v_image(path: str | Path, resolution: str = "720p") -> I2VImage:
    """Read ``path`` (checked, converted), pick its bucket at ``resolution``, build the VAE
    input. The resolution is checked first, so a bad value costs no image decoding."""
    i2v_buckets(resolution)
    path = Path(path)
    return _bucketed(read_image(path), resolution, path, _sha256(path))


def _bucketed(rgb: Image.Image, resolution: str, path: Path | None, sha256: str | None) -> I2VImage:
    """The I2V input of a checked RGB image: its bucket at ``resolution`` and the VAE input."""
    height, width = bucket_for(rgb.height, rgb.width, resolution)
    pixels = vae_pixels(resize_center_crop(rgb, (height, width)))
    return I2VImage(rgb, height, width, pixels, sha256, path)
