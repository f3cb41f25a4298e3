"""Safe image decode, inline images and saved files (error codes: docs/protocol.md; image files: docs/records.md).

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
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from server.budget import DECODE_BYTES_PER_PIXEL, HELD_BYTES_PER_PIXEL, PixelBudget, Reservation
from server.errors import ClientError, image_too_large

log = logging.getLogger(__name__)

# Raster formats only: no EPS (Ghostscript), PDF or other exotic decoders.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# A data: URL may carry only these media types, and its bytes must decode as one of them.
DATA_URL_MEDIA_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
DATA_URL_FORMATS = ("JPEG", "MPO", "PNG", "WEBP")
_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg"}
_DISPLAY_NAMES = {"WEBP": "WebP"}
# SAM scales the long side to 1024 pixels: past this ratio the short side is under 4.
MAX_ASPECT_RATIO = 256
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # uint8, (H, W, 3), C-contiguous RGB, EXIF orientation applied
    extension: str  # of the original bytes' format, e.g. "jpg"
    reservation: Reservation | None = None  # its pixels' share of the PIXEL_BUDGET_MB budget

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
            if budget is not None:
                reservation = budget.reserve(width * height * DECODE_BYTES_PER_PIXEL, force=force)
            extension = _EXTENSIONS.get(image.format, image.format.lower())
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
    return DecodedImage(pixels=pixels, extension=extension, reservation=reservation)


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


def save(data: bytes, image_dir: Path, job_id: str, extension: str) -> Path:
    """Write IMAGE_DIR/<job_id>.<extension> through a temporary file and a rename.

    A disk that is full or read-only is `store_unavailable` for the client;
    the server's /health reports it too (`writable_problem`).
    """
    if Path(job_id).name != job_id or job_id.startswith(".") or not extension.isalnum():
        raise ValueError(f"unsafe image file name: {job_id!r}.{extension!r}")
    image_dir = Path(image_dir)
    try:
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
    except OSError as exc:
        log.error("cannot write the image to IMAGE_DIR %s: %s", image_dir, exc)
        raise ClientError(
            "store_unavailable",
            f"The server cannot store the image right now ({exc.strerror or exc}); try again later.",
        ) from None
    return target


def link(existing: Path, image_dir: Path, job_id: str) -> Path:
    """Give a record its own name for an image file already saved: a hard link, else a copy."""
    target = Path(image_dir) / f"{job_id}{existing.suffix}"
    try:
        os.link(existing, target)
    except FileExistsError:
        pass
    except OSError:  # another file system, or links not allowed
        return save(existing.read_bytes(), image_dir, job_id, existing.suffix.lstrip("."))
    return target


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
