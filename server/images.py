"""Safe image decode (error codes: docs/protocol.md).

Downloading an http(s) URL is `server.fetch`. An image sent inline
as a base64 `data:` URL is read by `server.data_urls`. `decode` turns
the bytes into RGB pixels as displayed, refusing decompression bombs, and
files far larger than their pixels need, before any pixel data is loaded.
Keeping the bytes in IMAGE_DIR is `server.image_store`.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from server.budget import DECODE_BYTES_PER_PIXEL, HELD_BYTES_PER_PIXEL, PixelBudget, Reservation
from server.errors import ClientError

# Raster formats only: no EPS (Ghostscript), PDF or other exotic decoders.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF")
DATA_URL_FORMATS = ("JPEG", "MPO", "PNG", "WEBP")
_DISPLAY_NAMES = {"WEBP": "WebP"}
# SAM scales the long side to 1024 pixels: past this ratio the short side is under 4.
MAX_ASPECT_RATIO = 256
# A file may hold at most this many bytes a pixel, plus METADATA_ALLOWANCE: 8 is
# 16-bit RGBA stored raw, more than any lossless encoding of the pixels needs.
# The rest would be chunks, metadata or frames the model never sees, kept on
# disk for IMAGE_RETENTION_HOURS (a 1x1 PNG carrying 19 MB of junk chunks).
MAX_FILE_BYTES_PER_PIXEL = 8
METADATA_ALLOWANCE = 2**20
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # uint8, (H, W, 3), C-contiguous RGB, EXIF orientation applied
    reservation: Reservation | None = None  # its pixels' share of the PIXEL_BUDGET_MB budget

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def height(self) -> int:
        return self.pixels.shape[0]


# --- decode -----------------------------------------------------------------


def decode(
    data: bytes,
    *,
    max_pixels: int,
    formats: tuple[str, ...] = ALLOWED_FORMATS,
    budget: PixelBudget | None = None,
    force: bool = False,
) -> DecodedImage:
    """Decode the first frame as displayed: EXIF rotation applied, RGB uint8.

    Only images in `formats` (Pillow's names) are read; others are
    unsupported_image. With a `budget`, the decode's memory is reserved from
    it once the header is read, before any pixel is (`queue_full` when it is
    spent, unless `force`); the returned image holds the smaller reservation
    of its pixels, for the caller to release.
    """
    Image.init()  # registers every plugin, so that Image.OPEN lists what this build reads
    formats = [name for name in formats if name in Image.OPEN]
    reservation = None
    try:
        with Image.open(io.BytesIO(data), formats=formats) as image:
            width, height = image.size
            _check_size(width, height, max_pixels)
            _check_file_size(len(data), width, height)
            if budget is not None:
                reservation = budget.reserve(width * height * DECODE_BYTES_PER_PIXEL, force=force)
            pixels = _to_rgb(ImageOps.exif_transpose(image, in_place=True) or image)
        if reservation is not None:
            reservation.shrink(width * height * HELD_BYTES_PER_PIXEL)
    except ClientError:  # the budget's refusal comes before its reservation
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ClientError(
            "image_too_large",
            f"The image declares more pixels than the limit of {max_pixels:,} pixels.",
        ) from None
    except Image.UnidentifiedImageError:
        raise ClientError(
            "unsupported_image",
            f"The image is not one this server reads: send {_format_names(formats)}.",
        ) from None
    except Exception:  # Pillow's decoders raise many types on bad input.
        if reservation is not None:
            reservation.release()
        raise ClientError(
            "unsupported_image",
            "The image could not be decoded; the file may be truncated or corrupt.",
        ) from None
    return DecodedImage(pixels=pixels, reservation=reservation)


def _check_size(width: int, height: int, max_pixels: int) -> None:
    """Refuse images over MAX_IMAGE_PIXELS, and images too thin for SAM to see anything in."""
    if width * height > max_pixels:
        raise ClientError(
            "image_too_large",
            f"The image is {width}x{height} pixels, more than the limit of {max_pixels:,} pixels.",
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ClientError(
            "unsupported_image",
            f"The image is {width}x{height} pixels: one side is more than {MAX_ASPECT_RATIO} times the "
            "other, so the model (which scales the long side to 1024) would see a strip under 4 pixels wide.",
        )


def largest_file_for(width: int, height: int) -> int:
    """The most bytes an image file of width x height pixels may have."""
    return width * height * MAX_FILE_BYTES_PER_PIXEL + METADATA_ALLOWANCE


def _check_file_size(size: int, width: int, height: int) -> None:
    """Refuse a file far larger than its pixels need, rather than keep its junk on disk."""
    if size > largest_file_for(width, height):
        raise ClientError(
            "image_too_large",
            f"The image file is {size:,} bytes for {width}x{height} pixels, more than the "
            f"{largest_file_for(width, height):,} bytes any lossless encoding of them needs "
            f"({MAX_FILE_BYTES_PER_PIXEL} a pixel and 1 MiB of metadata): strip its metadata or "
            "extra frames, or send it as PNG or JPEG.",
        )


def _format_names(formats: list[str]) -> str:
    names = [_DISPLAY_NAMES.get(name, name) for name in formats if name != "MPO"]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def _to_rgb(image: Image.Image) -> np.ndarray:
    """RGB uint8 pixels; 16-bit and float grayscale are scaled, not clipped."""
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int32)
        gray = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
    elif image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0, posinf=0, neginf=0)
        low, high = min(values.min(), 0.0), max(values.max(), 1.0)
        gray = ((values - low) * (255 / (high - low)) + 0.5).astype(np.uint8)
    else:
        # asarray wraps the bytes Pillow hands out instead of copying them again.
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    return np.repeat(gray[:, :, np.newaxis], 3, axis=2)


# --- files ------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def writable_problem(directory: Path) -> str | None:
    """Why files cannot be written in `directory` (created if missing), or None when they can."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory, prefix=".write-check.") as probe:
            probe.write(b"x")  # a full disk still lets an empty file be created
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return f"{directory} is not writable: {exc.strerror or exc}"
    return None
