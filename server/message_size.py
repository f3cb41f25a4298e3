"""How large a client message may be, and its JSON, read only once its size passes (docs/protocol.md, "Message size").

Pure functions only, like `server.protocol`, which parses what `load_message` returns.
"""

from __future__ import annotations

import json
from typing import Any

from server import json_text
from server.errors import ClientError
from server.errors import invalid as _invalid
from server.data_urls import data_url_max_chars, is_data_url


def message_limit(max_message_bytes: int, max_image_bytes: int) -> int:
    """The largest request: MAX_MESSAGE_BYTES plus room for an inline image of MAX_IMAGE_BYTES."""
    return max_message_bytes + data_url_max_chars(max_image_bytes)


def load_message(message: str | bytes, *, max_message_bytes: int, max_image_bytes: int) -> Any:
    """The message's JSON, refused by size before it is parsed."""
    if isinstance(message, bytes):
        raise _invalid("Send the request as a JSON text message, not a binary frame.")
    size = len(message) if message.isascii() else len(message.encode("utf-8"))  # no copy when ASCII
    # Refuse by size before parsing: parsing costs many times a message's size
    # (a few kB of compressed `{},{},...` inflate to megabytes of JSON and then
    # to hundreds of megabytes of Python objects). Only one string, a data:
    # URL, may be long, and parsing one string costs about its own size. Only
    # a message past MAX_MESSAGE_BYTES is scanned for it, in one linear pass,
    # and only a literal that opens within MAX_MESSAGE_BYTES can make it fit.
    if size > message_limit(max_message_bytes, max_image_bytes) or (
        size > max_message_bytes
        and size - json_text.longest_string_literal(message, "data:", opens_within=max_message_bytes)
        > max_message_bytes
    ):
        raise _too_large(size, max_message_bytes, max_image_bytes)
    body = _load_json(message)
    if size - _inline_image_bytes(body) > max_message_bytes:
        raise _too_large(size, max_message_bytes, max_image_bytes)
    return body


def _load_json(message: str) -> Any:
    try:
        return json.loads(message)
    except json.JSONDecodeError as exc:
        raise ClientError("invalid_json", f"The request is not valid JSON: {exc}.") from None
    except (RecursionError, ValueError):  # nesting too deep, or an integer literal too long
        raise ClientError("invalid_json", "The request is JSON this server will not parse: too deeply nested, or a number too long.") from None


def _inline_image_bytes(body: Any) -> int:
    """The size of a data: URL in `image_url` (or a video's `video_url`): the part of a request that
    MAX_MESSAGE_BYTES does not count.

    Counted in characters, which is its size in bytes for any valid data: URL
    (base64 is ASCII) and never more than that for an invalid one.
    """
    url = (body.get("image_url") or body.get("video_url")) if isinstance(body, dict) else None
    return len(url) if isinstance(url, str) and is_data_url(url) else 0


def _too_large(size: int, max_message_bytes: int, max_image_bytes: int) -> ClientError:
    return ClientError(
        "message_too_large",
        f"The request is {size} bytes; the limit is {max_message_bytes} bytes, not counting "
        f"an image sent as a data: URL (at most {max_image_bytes} bytes of image).",
    )
