"""Images sent inline, as base64 `data:` URLs: recognised, measured and read, without decoding any pixel.

Pure: no I/O and no image library, so that the wire protocol (message sizes,
server/message_size.py) and the downloader can tell a data: URL by its text.
Decoding the bytes is server/images.py.
"""

from __future__ import annotations

import base64

from server.errors import ClientError, image_too_large

# A data: URL may carry only these media types, and its bytes must decode as one of them.
MEDIA_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}


def is_data_url(url: str) -> bool:
    return url[:5].lower() == "data:"


def data_url_max_chars(max_bytes: int) -> int:
    """The longest a base64 data: URL of at most `max_bytes` image bytes can be."""
    longest_head = max(len(f"data:{media_type};base64,") for media_type in MEDIA_TYPES)
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
    if media_type.lower() not in MEDIA_TYPES:
        raise ClientError(
            "unsupported_image",
            f"A data: URL image must be image/png, image/jpeg or image/webp, not {media_type[:40]!r}.",
        )
    return base64_image(payload, max_bytes=max_bytes, source="The data: URL")


def base64_image(payload: str, *, max_bytes: int, source: str) -> bytes:
    """The image bytes that base64 text holds (a data: URL's, or a tool's image field), at most `max_bytes`.

    `source` names the text in the sentences, e.g. "The data: URL". Raises
    ClientError with the code the client should get.
    """
    if len(payload) // 4 * 3 > max_bytes + 2:  # refuse before decoding; the exact check follows
        raise image_too_large(max_bytes)
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError:  # binascii.Error, or a character that is not ASCII
        raise ClientError(
            "invalid_request", f"{source}'s base64 is malformed: it has characters or padding base64 does not allow."
        ) from None
    if len(data) > max_bytes:
        raise image_too_large(max_bytes)
    if not data:
        raise ClientError("unsupported_image", f"{source} holds no image data.")
    return data


def describe_data_url(url: str, size: int) -> str:
    """What a record keeps instead of an inline image: its media type and size."""
    media_type = url[len("data:"):].partition(";")[0].lower()
    return f"data:{media_type};base64,... ({size} bytes, sent inline)"
