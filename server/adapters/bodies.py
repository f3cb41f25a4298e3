"""What the adapters share when they read a tool's call: its JSON, its image in base64, the model's names. Pure."""

from __future__ import annotations

import json
from typing import Any

from server.data_urls import base64_image
from server.errors import ClientError, invalid
from server.models.registry import SAM2, model_type


def json_object(body: bytes) -> dict[str, Any]:
    """The call's body as a JSON object; ClientError `invalid_json` or `invalid_request` with a sentence."""
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ClientError("invalid_json", f"The request body is not valid JSON: {exc}.") from None
    except (RecursionError, ValueError):  # nesting too deep, a number too long, bytes that are no text
        raise ClientError("invalid_json", "The request body is JSON this server will not parse.") from None
    if not isinstance(value, dict):
        raise invalid("The request body must be a JSON object.")
    return value


def image_of(text: Any, *, field: str, max_bytes: int) -> bytes:
    """The image bytes of a base64 field, bare or as a `data:` URL (whose media type is not checked here)."""
    if not isinstance(text, str) or not text:
        raise invalid(f"`{field}` must be the image in base64.")
    if text[:5].lower() == "data:":
        text = text.partition(",")[2]
    return base64_image(text, max_bytes=max_bytes, source=f"`{field}`")


def tool_model_name(name: str) -> str:
    """What the tools call the model type `name`: `cap-<model type>`, "+" written "_plus" (CVAT allows `[a-zA-Z0-9_.-]`)."""
    return "cap-" + name.replace("+", "_plus")


def model_title(name: str) -> str:
    """How a person reads the model type `name`, e.g. "Segment Anything 2.1 (sam2.1_hiera_t)"."""
    family = "Segment Anything 2.1" if model_type(name).family == SAM2 else "Segment Anything"
    return f"{family} ({name})"


def finite_number(value: Any) -> bool:
    """A JSON number that is a coordinate: not a boolean, not NaN or infinite (Python's json reads those)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < float("inf")
