"""Where an open's video file comes from: an http(s) download or a `data:` URL (docs/protocol.md, "Video").

The connection side reads the bytes, within MAX_VIDEO_BYTES, and hashes
them; the processor decodes them (server/video_decode.py). No image or video
library here: the connection side imports this module.
"""

from __future__ import annotations

import base64
import hashlib

from server import fetch
from server.config import Settings
from server.data_urls import describe_data_url, is_data_url
from server.errors import ClientError
from server.models.registry import SAM2, model_type

MEDIA_TYPES = ("video/mp4", "video/webm")


def inline_bytes(settings: Settings) -> int:
    """The most a message's data: URL may carry: MAX_IMAGE_BYTES, or on a SAM 2.1 server MAX_VIDEO_BYTES
    where that is more (a clip sent inline). A SAM 1 server, which does no video, keeps the image's room."""
    if model_type(settings.sam_model_type).family == SAM2:
        return max(settings.max_image_bytes, settings.max_video_bytes)
    return settings.max_image_bytes


def read(url: str, settings: Settings) -> tuple[bytes, str, str]:
    """The file's bytes, their SHA-256, and the URL its records keep; or `ClientError`."""
    if is_data_url(url):
        data = from_data_url(url, settings.max_video_bytes)
        return data, hashlib.sha256(data).hexdigest(), describe_data_url(url, len(data))
    try:
        data = fetch.download(
            url,
            max_bytes=settings.max_video_bytes,
            timeout=settings.download_timeout,
            allow_private=settings.allow_private_urls,
            max_redirects=settings.max_redirects,
        )
    except ClientError as exc:
        if exc.code == "image_too_large":
            raise too_large(settings.max_video_bytes) from None
        raise
    return data, hashlib.sha256(data).hexdigest(), url


def from_data_url(url: str, max_bytes: int) -> bytes:
    """The bytes of `data:video/mp4;base64,...` (or video/webm), at most `max_bytes`."""
    head, comma, payload = url.partition(",")
    media_type, _, encoding = head[len("data:"):].partition(";")
    if not comma or encoding.lower() != "base64":
        raise ClientError("invalid_request", "A data: URL video must be base64, written data:video/mp4;base64,<data>.")
    if media_type.lower() not in MEDIA_TYPES:
        raise ClientError("unsupported_video", f"A data: URL video must be video/mp4 or video/webm, not {media_type[:40]!r}.")
    if len(payload) // 4 * 3 > max_bytes + 2:
        raise too_large(max_bytes)
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError:
        raise ClientError("invalid_request", "The data: URL's base64 is malformed.") from None
    if len(data) > max_bytes:
        raise too_large(max_bytes)
    return data


def too_large(max_bytes: int) -> ClientError:
    return ClientError("video_too_large", f"The video is larger than MAX_VIDEO_BYTES ({max_bytes} bytes).")
