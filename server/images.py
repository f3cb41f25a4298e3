"""Safe image decode, inline images and saved files (README.md: the protocol, "How it works").

Downloading an http(s) URL is `server.fetch`. `parse_data_url` reads an
image sent inline as a base64 `data:` URL instead. `decode` turns
the bytes into RGB pixels as displayed, refusing decompression bombs before
any pixel data is loaded. `save` and `find_saved` keep the original bytes at
`IMAGE_DIR/<id>.<ext>`.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import io
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from server.errors import ClientError, image_too_large

# Raster formats only: no EPS (Ghostscript), PDF or other exotic decoders.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# A data: URL may carry only these media types, and its bytes must decode as one of them.
DATA_URL_MEDIA_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
DATA_URL_FORMATS = ("JPEG", "MPO", "PNG", "WEBP")
_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg"}
_DISPLAY_NAMES = {"WEBP": "WebP"}
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # uint8, (H, W, 3), C-contiguous RGB, EXIF orientation applied
    extension: str  # of the original bytes' format, e.g. "jpg"

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def height(self) -> int:
        return self.pixels.shape[0]


# --- data: URLs ---------------------------------------------------------------


def is_data_url(url: str) -> bool:
    return url[:5].lower() == "data:"


def data_url_max_chars(max_bytes: int) -> int:
    """The longest a base64 data: URL of at most `max_bytes` image bytes can be."""
    longest_head = max(len(f"data:{media_type};base64,") for media_type in DATA_URL_MEDIA_TYPES)
    return longest_head + 4 * -(-max_bytes // 3)  # base64: 4 characters for every 3 bytes


def parse_data_url(url: str, *, max_bytes: int) -> bytes:
    """The image bytes of `data:image/png;base64,...` (or image/jpeg, image/webp).

    Pure: no I/O. The size limit applies to the decoded bytes. Raises
    ClientError with the code the client should get.
    """
    head, comma, payload = url.partition(",")
    media_type, _, encoding = head[len("data:"):].partition(";")
    if not comma or encoding.lower() != "base64":
        raise ClientError(
            "invalid_request",
            "A data: URL image must be base64, written data:<media type>;base64,<data>.",
        )
    if media_type.lower() not in DATA_URL_MEDIA_TYPES:
        raise ClientError(
            "unsupported_image",
            f"A data: URL image must be image/png, image/jpeg or image/webp, not {media_type[:40]!r}.",
        )
    if len(payload) // 4 * 3 > max_bytes + 2:  # refuse before decoding; the exact check follows
        raise image_too_large(max_bytes)
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError:  # binascii.Error, or a character that is not ASCII
        raise ClientError(
            "invalid_request", "The data: URL's base64 is malformed: it has characters or padding base64 does not allow."
        ) from None
    if len(data) > max_bytes:
        raise image_too_large(max_bytes)
    if not data:
        raise ClientError("unsupported_image", "The data: URL holds no image data.")
    return data


def describe_data_url(url: str, size: int) -> str:
    """What a record keeps instead of an inline image: its media type and size."""
    media_type = url[len("data:"):].partition(";")[0].lower()
    return f"data:{media_type};base64,... ({size} bytes, sent inline)"


# --- decode -----------------------------------------------------------------


def decode(data: bytes, *, max_pixels: int, formats: tuple[str, ...] = ALLOWED_FORMATS) -> DecodedImage:
    """Decode the first frame as displayed: EXIF rotation applied, RGB uint8.

    Only images in `formats` (Pillow's names) are read; others are unsupported_image.
    """
    Image.init()  # registers every plugin, so that Image.OPEN lists what this build reads
    formats = [name for name in formats if name in Image.OPEN]
    try:
        with Image.open(io.BytesIO(data), formats=formats) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ClientError(
                    "image_too_large",
                    f"The image is {width}x{height} pixels, more than the limit of "
                    f"{max_pixels:,} pixels.",
                )
            extension = _EXTENSIONS.get(image.format, image.format.lower())
            pixels = _to_rgb(ImageOps.exif_transpose(image))
    except ClientError:
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
        raise ClientError(
            "unsupported_image",
            "The image could not be decoded; the file may be truncated or corrupt.",
        ) from None
    return DecodedImage(pixels=pixels, extension=extension)


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
        return np.array(image.convert("RGB"), dtype=np.uint8)
    return np.repeat(gray[:, :, np.newaxis], 3, axis=2)


# --- files ------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save(data: bytes, image_dir: Path, job_id: str, extension: str) -> Path:
    """Write IMAGE_DIR/<job_id>.<extension> through a temporary file and a rename."""
    if Path(job_id).name != job_id or job_id.startswith(".") or not extension.isalnum():
        raise ValueError(f"unsafe image file name: {job_id!r}.{extension!r}")
    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    target = image_dir / f"{job_id}.{extension}"
    fd, temporary = tempfile.mkstemp(dir=image_dir, prefix=f".{job_id}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return target


def find_saved(image_dir: Path, job_id: str) -> Path | None:
    """The saved file for `job_id`, whatever its extension, or None."""
    matches = sorted(
        path for path in Path(image_dir).glob(glob.escape(job_id) + ".*") if path.is_file()
    )
    return matches[0] if matches else None


def delete_older_than(image_dir: Path, max_age_seconds: float) -> int:
    """Delete saved images (and stray temporary files) older than `max_age_seconds`."""
    cutoff = time.time() - max_age_seconds
    deleted = 0
    for path in Path(image_dir).glob("*"):
        with contextlib.suppress(FileNotFoundError):
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                deleted += 1
    return deleted
