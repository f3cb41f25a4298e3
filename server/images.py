"""Safe image download and decode (error codes: docs/protocol.md; image files: docs/records.md).

`download` fetches an http(s) URL with a guard against server-side request
forgery, a byte limit and a deadline for the whole transfer. `parse_data_url`
reads an image sent inline as a base64 `data:` URL instead. `decode` turns
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
import ipaddress
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import numpy as np
import requests
import urllib3
from PIL import Image, ImageOps

from server.errors import ClientError

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024
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


# --- download ---------------------------------------------------------------


def download(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    allow_private: bool,
    max_redirects: int = 3,
) -> bytes:
    """Fetch `url` (http or https), following at most `max_redirects` redirects.

    Raises ValueError for a non-http(s) URL, ClientError for everything the
    client should hear about.
    """
    if is_data_url(url):
        # Only a record's short description of an inline image reaches here:
        # the image itself was sent to, and saved by, another server.
        raise ClientError(
            "image_download_failed",
            "The image was sent inline as a data: URL, and only the server that received it keeps it.",
        )
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    deadline = time.monotonic() + timeout
    with requests.Session() as session:
        session.trust_env = False  # no proxies or .netrc: fetch exactly what was checked
        for _ in range(max_redirects + 1):
            host = _check_url(url, allow_private)
            with _download_errors(host, timeout):
                response = session.get(
                    url,
                    stream=True,
                    allow_redirects=False,
                    timeout=_remaining(deadline, host, timeout),
                    headers={"Accept-Encoding": "identity"},
                )
                with response:
                    location = response.headers.get("Location")
                    if response.status_code in _REDIRECT_STATUSES and location:
                        url = urljoin(url, location)
                        continue
                    if response.status_code >= 300:
                        raise ClientError(
                            "image_download_failed",
                            f"The image server {host} answered HTTP {response.status_code}; "
                            "check that the URL is correct and publicly readable.",
                        )
                    return _read_body(response, host, max_bytes, deadline, timeout)
    raise ClientError(
        "image_download_failed",
        f"The image URL redirected more than {max_redirects} times; use the image's direct URL.",
    )


def _check_url(url: str, allow_private: bool) -> str:
    """Return the URL's host, after refusing it if it must not be fetched."""
    parts = urlsplit(url)
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not host or port is None:
        raise ClientError(
            "image_download_failed",
            f"The image URL led to {url!r}, which is not a valid http or https URL.",
        )
    if allow_private:
        return host
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise ClientError(
            "image_download_failed",
            f"The image URL's host {host} could not be resolved; check its spelling.",
        ) from None
    if any(_is_forbidden(ipaddress.ip_address(info[4][0].split("%")[0])) for info in infos):
        raise ClientError(
            "image_url_forbidden",
            f"The image URL's host {host} resolves to a private, loopback or link-local "
            "address, which this server does not fetch; use a publicly reachable URL.",
        )
    return host


def _is_forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for any address that is not a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def _read_body(
    response: requests.Response, host: str, max_bytes: int, deadline: float, timeout: float
) -> bytes:
    """Stream the body, counting bytes as they arrive and watching the deadline."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    connection = response.raw.connection
    body = bytearray()
    while True:
        remaining = _remaining(deadline, host, timeout)
        if connection is not None and connection.sock is not None:
            connection.sock.settimeout(remaining)
        chunk = response.raw.read1(_CHUNK_BYTES, decode_content=True)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > max_bytes:
            raise _too_large(max_bytes)


def _remaining(deadline: float, host: str, timeout: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _timed_out(host, timeout)
    return remaining


def _too_large(max_bytes: int) -> ClientError:
    return ClientError(
        "image_too_large", f"The image is larger than the limit of {max_bytes:,} bytes."
    )


def _timed_out(host: str, timeout: float) -> ClientError:
    return ClientError(
        "image_download_failed",
        f"Downloading the image from {host} took longer than the {timeout:g} s timeout.",
    )


@contextlib.contextmanager
def _download_errors(host: str, timeout: float):
    """Turn network and HTTP library exceptions into ClientError."""
    try:
        yield
    except (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError):
        raise _timed_out(host, timeout) from None
    except requests.exceptions.SSLError:
        raise ClientError(
            "image_download_failed",
            f"The TLS connection to {host} failed; check that its certificate is valid.",
        ) from None
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
        raise ClientError(
            "image_download_failed",
            f"Could not download the image from {host}: the connection failed or was cut.",
        ) from None


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
        raise _too_large(max_bytes)
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError:  # binascii.Error, or a character that is not ASCII
        raise ClientError(
            "invalid_request", "The data: URL's base64 is malformed: it has characters or padding base64 does not allow."
        ) from None
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
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
