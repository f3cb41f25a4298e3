"""The wire protocol (1, 1.1 and 1.2): parse and validate requests.

Pure functions only: no sockets, no store, no model. docs/protocol.md is the
contract. A protocol 1 request (`image_url` and `boxes`) is a 1.1 request
whose prompts are boxes; its masks echo `box`, a 1.1 prompt's echo `prompt`.

Beside it: `server.message_size` (a message's size limit, read before its
JSON), `server.request_prompts` (the prompts' types and validation) and
`server.answers` (the messages the server sends).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any
from urllib.parse import urlsplit

from server import everything_params, json_text
from server.errors import invalid as _invalid
from server.data_urls import is_data_url
from server.message_size import load_message
from server import request_prompts
from server.request_prompts import Box, RequestPrompt, parse_boxes, parse_prompts

PROTOCOL_VERSION = "1.2"
REQUEST_KEYS = {
    "image_url", "image_sha256", "boxes", "prompts", "everything", "multimask", "output", "keep_open", "client_ref",
    "mask_scale",
}
OUTPUTS = ("rle", "polygons")
MAX_CLIENT_REF = 128
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclasses.dataclass(frozen=True)
class Request:
    image_url: str | None  # exactly one of image_url and image_sha256, unless an adapter brings the image
    image_sha256: str | None
    prompts: tuple[RequestPrompt, ...]
    boxes_form: bool = False  # sent as protocol 1's `boxes`: masks echo `box`, not `prompt`
    multimask: bool = False
    output: tuple[str, ...] = ("rle",)
    keep_open: bool = False
    client_ref: str | None = None
    everything: dict[str, Any] | None = None  # (1.2) the generator's parameters as sent; then no prompts
    mask_scale: float | None = None  # masks at this fraction of the image's size (1.2); None: full size

    @property
    def is_v1(self) -> bool:
        """A protocol 1 request (image_url and boxes, nothing of 1.1): its answers are exactly protocol 1's."""
        return (
            self.boxes_form and self.image_url is not None and self.output == ("rle",)
            and not self.keep_open and self.client_ref is None and self.mask_scale is None
        )


def parse_request(
    message: str | bytes, *, max_boxes: int, max_points: int, max_message_bytes: int, max_image_bytes: int
) -> Request:
    """Turn one client message into a `Request`, or raise `ClientError`.

    The message may exceed `max_message_bytes` only by the length of a data:
    URL in `image_url`, which may hold up to `max_image_bytes` of image.
    """
    return parse_body(
        load_message(message, max_message_bytes=max_message_bytes, max_image_bytes=max_image_bytes),
        max_boxes=max_boxes,
        max_points=max_points,
    )


def client_ref_of(body: Any) -> str | None:
    """The request's `client_ref`, if it has a valid one: echoed even when the rest is refused."""
    ref = body.get("client_ref") if isinstance(body, dict) else None
    valid = isinstance(ref, str) and len(ref) <= MAX_CLIENT_REF and json_text.lone_surrogate(ref) is None
    return ref if valid else None


def keep_open_of(body: Any) -> bool:
    """Whether the request asks for a session (`keep_open: true`), even if the rest is refused."""
    return isinstance(body, dict) and body.get("keep_open") is True


def parse_body(body: Any, *, max_boxes: int, max_points: int, image_given: bool = False) -> Request:
    """`body` as a `Request`, or ClientError. `image_given`: an adapter brings the image itself (no image key)."""
    if not isinstance(body, dict):
        raise _invalid("The request must be a JSON object with an image (image_url or image_sha256) and boxes or prompts.")
    unknown = sorted(set(body) - REQUEST_KEYS)
    if unknown:
        raise _invalid(
            f"Unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed keys are {', '.join(sorted(REQUEST_KEYS))}."
        )
    image_url, image_sha256 = _parse_image(body, image_given)
    if sum(key in body for key in ("boxes", "prompts", "everything")) > 1:
        raise _invalid("Send exactly one of boxes, prompts and everything.")
    everything = everything_params.parse(body["everything"]) if "everything" in body else None
    if everything is not None and "multimask" in body:
        raise _invalid("multimask does not apply to everything; send everything.multimask_output (SAM 2.1) instead.")
    if everything is not None:
        prompts = ()
    elif "boxes" in body:
        prompts = tuple(RequestPrompt(box=box) for box in parse_boxes(body["boxes"], max_boxes))
    elif "prompts" in body:
        prompts = parse_prompts(body["prompts"], max_boxes, max_points)
    else:
        raise _invalid('Send boxes, prompts or everything; to prepare an image without masks, send "prompts": [].')
    for key in ("multimask", "keep_open"):
        if not isinstance(body.get(key, False), bool):
            raise _invalid(f"{key} must be true or false.")
    client_ref = body.get("client_ref")
    if client_ref is not None and (not isinstance(client_ref, str) or len(client_ref) > MAX_CLIENT_REF):
        raise _invalid(f"client_ref must be a string of at most {MAX_CLIENT_REF} characters.")
    mask_scale = _parse_mask_scale(body["mask_scale"]) if "mask_scale" in body else None
    if everything is not None and mask_scale is not None:
        raise _invalid("mask_scale does not apply to everything yet: everything's masks come at the image's size.")
    if request_prompts.renders(prompts) and body.get("multimask", False) is True:
        raise _invalid("A render prompt gives one mask: send it without multimask.")
    # Last, when the schema has bounded the body: a string that is not text could be neither sent on nor stored.
    if (where := json_text.lone_surrogate(body)) is not None:
        raise _invalid(f"{where} holds a lone surrogate (a \\ud800-\\udfff escape without its pair): not Unicode text.")
    return Request(
        image_url=image_url,
        image_sha256=image_sha256,
        prompts=prompts,
        boxes_form="boxes" in body,
        multimask=body.get("multimask", False),
        output=_parse_output(body.get("output", ["rle"])),
        keep_open=body.get("keep_open", False),
        client_ref=client_ref,
        everything=everything,
        mask_scale=mask_scale,
    )

def _parse_image(body: dict[str, Any], image_given: bool) -> tuple[str | None, str | None]:
    if image_given:
        assert "image_url" not in body and "image_sha256" not in body, "an adapter sends its image one way"
        return None, None
    if ("image_url" in body) == ("image_sha256" in body):
        raise _invalid("Send exactly one of image_url and image_sha256.")
    if "image_url" in body:
        return parse_url("image_url", body["image_url"]), None
    sha256 = body["image_sha256"]
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise _invalid("image_sha256 must be 64 lowercase hexadecimal digits: the SHA-256 of the image's bytes.")
    return None, sha256


def parse_url(name: str, url: Any) -> str:
    """An image's or a video's URL: http(s), or a data: URL (whose contents are checked when it is read)."""
    if not isinstance(url, str) or not url:
        raise _invalid(f"{name} must be a non-empty string.")
    if is_data_url(url):
        return url  # its contents are checked when the image is read, never echoed back
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError on a malformed port
    except ValueError:
        raise _invalid(f"{name} {url!r} is not a valid URL.") from None
    if parts.scheme not in ("http", "https"):
        raise _invalid(f"{name} must use http, https or data, not {parts.scheme or 'no scheme'!r}.")
    if not parts.hostname:
        raise _invalid(f"{name} {url!r} has no host.")
    return url


def _parse_mask_scale(scale: Any) -> float:
    try:
        number = float(scale) if isinstance(scale, (int, float)) and not isinstance(scale, bool) else math.nan
    except OverflowError:  # an integer too large for a float
        number = math.nan
    if not 0 < number <= 1:  # NaN too
        raise _invalid("mask_scale must be a number greater than 0 and at most 1 (the masks' size ÷ the image's).")
    return number


def scaled_size(width: int, height: int, scale: float | None) -> tuple[int, int]:
    """The masks' width and height at `mask_scale`: floor(W·s + 0.5) × floor(H·s + 0.5), at least 1 each."""
    if scale is None:
        return width, height
    return max(1, math.floor(width * scale + 0.5)), max(1, math.floor(height * scale + 0.5))


def _parse_output(output: Any) -> tuple[str, ...]:
    if not isinstance(output, list) or not output or any(item not in OUTPUTS for item in output):
        raise _invalid('output must be a non-empty list of "rle" and "polygons".')
    return tuple(dict.fromkeys(output))

def fit_prompts(request: Request, width: int, height: int) -> tuple[RequestPrompt, ...]:
    """The prompts on a `width`×`height` image: boxes clipped to it; a box wholly outside, or a point outside, is refused."""
    fitted = []
    for index, prompt in enumerate(request.prompts):
        name = f"boxes[{index}]" if request.boxes_form else f"prompts[{index}].box"
        box = _clip(name, prompt.box, width, height) if prompt.box is not None else None
        for number, point in enumerate(prompt.points):
            if not (0 <= point.x <= width and 0 <= point.y <= height):
                raise _invalid(
                    f"prompts[{index}].points[{number}] (x={point.x:g}, y={point.y:g}) lies outside the "
                    f"{width}x{height} image."
                )
        fitted.append(dataclasses.replace(prompt, box=box))
    return tuple(fitted)


def _clip(name: str, box: Box, width: int, height: int) -> Box:
    x0, y0, x1, y1 = box.to_xyxy()
    x0, x1 = max(x0, 0.0), min(x1, float(width))
    y0, y1 = max(y0, 0.0), min(y1, float(height))
    if x1 <= x0 or y1 <= y0:
        raise _invalid(f"{name} ({_describe(box)}) lies wholly outside the {width}x{height} image.")
    return Box(x0, y0, x1 - x0, y1 - y0)


def _describe(box: Box) -> str:
    return f"x={box.x:g}, y={box.y:g}, width={box.width:g}, height={box.height:g}"
