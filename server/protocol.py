"""Wire protocol version 1: parse and validate requests, build messages.

Pure functions only: no sockets, no store, no model. The protocol is
documented in docs/protocol.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any
from urllib.parse import urlsplit

from server.errors import CLOSE_CODES, ClientError
from server.errors import invalid as _invalid
from server.images import data_url_max_chars, is_data_url

REQUEST_KEYS = {"image_url", "boxes", "multimask"}
BOX_KEYS = ("x", "y", "width", "height")


@dataclasses.dataclass(frozen=True)
class Box:
    """A box in displayed-image pixels: top-left corner, width and height."""

    x: float
    y: float
    width: float
    height: float

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)

    def to_xyxy(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.x + self.width, self.y + self.height)


@dataclasses.dataclass(frozen=True)
class Request:
    image_url: str
    boxes: tuple[Box, ...]
    multimask: bool = False


def message_limit(max_message_bytes: int, max_image_bytes: int) -> int:
    """The largest request: MAX_MESSAGE_BYTES plus room for an inline image of MAX_IMAGE_BYTES."""
    return max_message_bytes + data_url_max_chars(max_image_bytes)


def parse_request(
    message: str | bytes, *, max_boxes: int, max_message_bytes: int, max_image_bytes: int
) -> Request:
    """Turn the client's one message into a `Request`, or raise `ClientError`.

    The message may exceed `max_message_bytes` only by the length of a data:
    URL in `image_url`, which may hold up to `max_image_bytes` of image.
    """
    if isinstance(message, bytes):
        raise _invalid("Send the request as a JSON text message, not a binary frame.")
    size = len(message) if message.isascii() else len(message.encode("utf-8"))  # no copy when ASCII
    # Refuse by size before parsing: parsing costs many times a message's size
    # (a few kB of compressed `{},{},...` inflate to megabytes of JSON and then
    # to hundreds of megabytes of Python objects). Only one string, a data:
    # URL, may be long, and parsing one string costs about its own size.
    if size - _data_url_literal_chars(message) > max_message_bytes:
        raise _too_large(size, max_message_bytes, max_image_bytes)
    if size > message_limit(max_message_bytes, max_image_bytes):
        raise _too_large(size, max_message_bytes, max_image_bytes)
    body = _load_json(message)
    if size - _inline_image_bytes(body) > max_message_bytes:
        raise _too_large(size, max_message_bytes, max_image_bytes)
    if not isinstance(body, dict):
        raise _invalid("The request must be a JSON object with image_url and boxes.")
    unknown = sorted(set(body) - REQUEST_KEYS)
    if unknown:
        raise _invalid(
            f"Unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed keys are {', '.join(sorted(REQUEST_KEYS))}."
        )
    multimask = body.get("multimask", False)
    if not isinstance(multimask, bool):
        raise _invalid("multimask must be true or false.")
    return Request(
        image_url=_parse_image_url(body.get("image_url")),
        boxes=_parse_boxes(body.get("boxes"), max_boxes),
        multimask=multimask,
    )


def _load_json(message: str) -> Any:
    try:
        return json.loads(message)
    except json.JSONDecodeError as exc:
        raise ClientError("invalid_json", f"The request is not valid JSON: {exc}.") from None
    except (RecursionError, ValueError):  # nesting too deep, or an integer literal too long
        raise ClientError("invalid_json", "The request is JSON this server will not parse: too deeply nested, or a number too long.") from None


def _inline_image_bytes(body: Any) -> int:
    """The size of a data: URL in `image_url`: the part of a request that MAX_MESSAGE_BYTES does not count.

    Counted in characters, which is its size in bytes for any valid data: URL
    (base64 is ASCII) and never more than that for an invalid one.
    """
    url = body.get("image_url") if isinstance(body, dict) else None
    return len(url) if isinstance(url, str) and is_data_url(url) else 0


_DATA_URL_LITERAL = re.compile(r'"data:[^"\\]*(?:\\.[^"\\]*)*"', re.IGNORECASE)


def _data_url_literal_chars(message: str) -> int:
    """The length of the longest `"data:..."` string literal in the raw message, before parsing.

    A string literal ends at the first quote that no backslash escapes.
    Counting the longest one only lets a message be as long as one inline
    image plus MAX_MESSAGE_BYTES; the exact check, on the parsed
    `image_url`, follows the parse.
    """
    return max((match.end() - match.start() for match in _DATA_URL_LITERAL.finditer(message)), default=0)


def _too_large(size: int, max_message_bytes: int, max_image_bytes: int) -> ClientError:
    return ClientError(
        "message_too_large",
        f"The request is {size} bytes; the limit is {max_message_bytes} bytes, not counting "
        f"an image sent as a data: URL (at most {max_image_bytes} bytes of image).",
    )


def _parse_image_url(url: Any) -> str:
    if not isinstance(url, str) or not url:
        raise _invalid("image_url must be a non-empty string.")
    if is_data_url(url):
        return url  # its contents are checked when the image is read, never echoed back
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError on a malformed port
    except ValueError:
        raise _invalid(f"image_url {url!r} is not a valid URL.") from None
    if parts.scheme not in ("http", "https"):
        raise _invalid(f"image_url must use http, https or data, not {parts.scheme or 'no scheme'!r}.")
    if not parts.hostname:
        raise _invalid(f"image_url {url!r} has no host.")
    return url


def _parse_boxes(boxes: Any, max_boxes: int) -> tuple[Box, ...]:
    if not isinstance(boxes, list) or not boxes:
        raise _invalid("boxes must be a non-empty list of {x, y, width, height} objects.")
    if len(boxes) > max_boxes:
        raise _invalid(f"{len(boxes)} boxes sent; the limit is {max_boxes} per request.")
    return tuple(_parse_box(i, box) for i, box in enumerate(boxes))


def _parse_box(index: int, box: Any) -> Box:
    if not isinstance(box, dict) or set(box) != set(BOX_KEYS):
        raise _invalid(f"boxes[{index}] must be an object with exactly the keys x, y, width, height.")
    values = {}
    for key in BOX_KEYS:
        value = box[key]
        try:
            number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
        except OverflowError:  # an integer too large for a float
            number = math.nan
        if not math.isfinite(number):
            raise _invalid(f"boxes[{index}].{key} must be a finite number.")
        values[key] = number
    if values["width"] <= 0 or values["height"] <= 0:
        raise _invalid(f"boxes[{index}] must have width and height greater than 0.")
    return Box(**values)


def clip_boxes(boxes: tuple[Box, ...], width: int, height: int) -> tuple[Box, ...]:
    """Clip each box to the image; a box with no area inside it is an error."""
    clipped = []
    for index, box in enumerate(boxes):
        x0, y0, x1, y1 = box.to_xyxy()
        x0, x1 = max(x0, 0.0), min(x1, float(width))
        y0, y1 = max(y0, 0.0), min(y1, float(height))
        if x1 <= x0 or y1 <= y0:
            raise _invalid(
                f"boxes[{index}] ({_describe(box)}) lies wholly outside the "
                f"{width}x{height} image."
            )
        clipped.append(Box(x0, y0, x1 - x0, y1 - y0))
    return tuple(clipped)


def _describe(box: Box) -> str:
    return f"x={box.x:g}, y={box.y:g}, width={box.width:g}, height={box.height:g}"


# --- server -> client messages -------------------------------------------------


def _dump(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def queued_message(job_id: str, position: int) -> str:
    return _dump({"type": "queued", "id": job_id, "position": position})


def status_message(job_id: str, status: str) -> str:
    return _dump({"type": "status", "id": job_id, "status": status})


def result_message(
    job_id: str,
    *,
    width: int,
    height: int,
    masks: list[Any],
    timings: dict[str, float],
    cached_embedding: bool,
) -> str:
    return _dump(
        {
            "type": "result",
            "id": job_id,
            "image": {"width": width, "height": height},
            "masks": masks,
            "timings": timings,
            "cached_embedding": cached_embedding,
        }
    )


def error_message(job_id: str | None, code: str, message: str) -> str:
    assert code in CLOSE_CODES, code
    return _dump({"type": "error", "id": job_id, "code": code, "message": message})
