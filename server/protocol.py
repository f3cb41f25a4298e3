"""The wire protocol (1 and 1.1): parse and validate requests, build messages.

Pure functions only: no sockets, no store, no model. docs/protocol.md is the
contract. A protocol 1 request (`image_url` and `boxes`) is a 1.1 request
whose prompts are boxes; its masks echo `box`, a 1.1 prompt's echo `prompt`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any
from urllib.parse import urlsplit

from server import json_text
from server.errors import CLOSE_CODES, ClientError
from server.errors import invalid as _invalid
from server.images import data_url_max_chars, is_data_url
from server.prompts import Point

PROTOCOL_VERSION = "1.1"
REQUEST_KEYS = {"image_url", "image_sha256", "boxes", "prompts", "multimask", "output", "keep_open", "client_ref"}
BOX_KEYS = ("x", "y", "width", "height")
POINT_KEYS = ("x", "y", "label")
PROMPT_KEYS = {"box", "points", "mask_input"}
MASK_INPUT_KEYS = {"id", "index", "candidate"}
OUTPUTS = ("rle", "polygons")
MAX_CLIENT_REF = 128
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
class MaskRef:
    """`mask_input`: the mask `index` (and `candidate`, for a multimask result) of an earlier result `id`."""

    id: str
    index: int
    candidate: int | None = None

    def to_dict(self) -> dict[str, Any]:
        ref: dict[str, Any] = {"id": self.id, "index": self.index}
        if self.candidate is not None:
            ref["candidate"] = self.candidate
        return ref


@dataclasses.dataclass(frozen=True)
class RequestPrompt:
    """One prompt as the client sent it: a box, points, or both, and maybe a mask to refine."""

    box: Box | None = None
    points: tuple[Point, ...] = ()
    mask_input: MaskRef | None = None

    def to_dict(self) -> dict[str, Any]:
        """The prompt as a record keeps it and a result echoes it."""
        prompt: dict[str, Any] = {}
        if self.box is not None:
            prompt["box"] = self.box.to_dict()
        if self.points:
            prompt["points"] = [point._asdict() for point in self.points]
        if self.mask_input is not None:
            prompt["mask_input"] = self.mask_input.to_dict()
        return prompt


@dataclasses.dataclass(frozen=True)
class Request:
    image_url: str | None  # exactly one of image_url and image_sha256
    image_sha256: str | None
    prompts: tuple[RequestPrompt, ...]
    boxes_form: bool = False  # sent as protocol 1's `boxes`: masks echo `box`, not `prompt`
    multimask: bool = False
    output: tuple[str, ...] = ("rle",)
    keep_open: bool = False
    client_ref: str | None = None

    @property
    def is_v1(self) -> bool:
        """A protocol 1 request (image_url and boxes, nothing of 1.1): its answers are exactly protocol 1's."""
        return (
            self.boxes_form and self.image_url is not None and self.output == ("rle",)
            and not self.keep_open and self.client_ref is None
        )


def message_limit(max_message_bytes: int, max_image_bytes: int) -> int:
    """The largest request: MAX_MESSAGE_BYTES plus room for an inline image of MAX_IMAGE_BYTES."""
    return max_message_bytes + data_url_max_chars(max_image_bytes)


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


def client_ref_of(body: Any) -> str | None:
    """The request's `client_ref`, if it has a valid one: echoed even when the rest is refused."""
    ref = body.get("client_ref") if isinstance(body, dict) else None
    valid = isinstance(ref, str) and len(ref) <= MAX_CLIENT_REF and json_text.lone_surrogate(ref) is None
    return ref if valid else None


def keep_open_of(body: Any) -> bool:
    """Whether the request asks for a session (`keep_open: true`), even if the rest is refused."""
    return isinstance(body, dict) and body.get("keep_open") is True


def parse_body(body: Any, *, max_boxes: int, max_points: int) -> Request:
    if not isinstance(body, dict):
        raise _invalid("The request must be a JSON object with an image (image_url or image_sha256) and boxes or prompts.")
    unknown = sorted(set(body) - REQUEST_KEYS)
    if unknown:
        raise _invalid(
            f"Unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed keys are {', '.join(sorted(REQUEST_KEYS))}."
        )
    image_url, image_sha256 = _parse_image(body)
    if "boxes" in body and "prompts" in body:
        raise _invalid("Send either boxes or prompts, not both.")
    if "boxes" in body:
        prompts = tuple(RequestPrompt(box=box) for box in _parse_boxes(body["boxes"], max_boxes))
    elif "prompts" in body:
        prompts = _parse_prompts(body["prompts"], max_boxes, max_points)
    else:
        raise _invalid('Send boxes or prompts; to prepare an image without masks, send "prompts": [].')
    for key in ("multimask", "keep_open"):
        if not isinstance(body.get(key, False), bool):
            raise _invalid(f"{key} must be true or false.")
    client_ref = body.get("client_ref")
    if client_ref is not None and (not isinstance(client_ref, str) or len(client_ref) > MAX_CLIENT_REF):
        raise _invalid(f"client_ref must be a string of at most {MAX_CLIENT_REF} characters.")
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


def _too_large(size: int, max_message_bytes: int, max_image_bytes: int) -> ClientError:
    return ClientError(
        "message_too_large",
        f"The request is {size} bytes; the limit is {max_message_bytes} bytes, not counting "
        f"an image sent as a data: URL (at most {max_image_bytes} bytes of image).",
    )


def _parse_image(body: dict[str, Any]) -> tuple[str | None, str | None]:
    if ("image_url" in body) == ("image_sha256" in body):
        raise _invalid("Send exactly one of image_url and image_sha256.")
    if "image_url" in body:
        return _parse_image_url(body["image_url"]), None
    sha256 = body["image_sha256"]
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise _invalid("image_sha256 must be 64 lowercase hexadecimal digits: the SHA-256 of the image's bytes.")
    return None, sha256


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


def _parse_output(output: Any) -> tuple[str, ...]:
    if not isinstance(output, list) or not output or any(item not in OUTPUTS for item in output):
        raise _invalid('output must be a non-empty list of "rle" and "polygons".')
    return tuple(dict.fromkeys(output))


def _parse_prompts(prompts: Any, max_prompts: int, max_points: int) -> tuple[RequestPrompt, ...]:
    if not isinstance(prompts, list):
        raise _invalid("prompts must be a list of prompt objects (box, points, mask_input); [] prepares the image.")
    if len(prompts) > max_prompts:
        raise _invalid(f"{len(prompts)} prompts sent; the limit is {max_prompts} per request.")
    return tuple(_parse_prompt(i, prompt, max_points) for i, prompt in enumerate(prompts))


def _parse_prompt(index: int, prompt: Any, max_points: int) -> RequestPrompt:
    where = f"prompts[{index}]"
    if not isinstance(prompt, dict) or set(prompt) - PROMPT_KEYS:
        raise _invalid(f"{where} must be an object with box, points and/or mask_input, and no other key.")
    if "box" not in prompt and not prompt.get("points"):
        raise _invalid(f"{where} has neither a box nor a point: a prompt needs one or both.")
    box = _parse_box(f"{where}.box", prompt["box"]) if "box" in prompt else None
    points = _parse_points(where, prompt.get("points", []), max_points)
    mask_input = _parse_mask_input(where, prompt["mask_input"]) if "mask_input" in prompt else None
    return RequestPrompt(box=box, points=points, mask_input=mask_input)


def _parse_points(where: str, points: Any, max_points: int) -> tuple[Point, ...]:
    if not isinstance(points, list):
        raise _invalid(f"{where}.points must be a list of {{x, y, label}} objects.")
    if len(points) > max_points:
        raise _invalid(f"{where} has {len(points)} points; the limit is {max_points} (MAX_POINTS).")
    parsed = []
    for index, point in enumerate(points):
        name = f"{where}.points[{index}]"
        if not isinstance(point, dict) or set(point) != set(POINT_KEYS):
            raise _invalid(f"{name} must be an object with exactly the keys x, y, label.")
        label = point["label"]
        if isinstance(label, bool) or label not in (0, 1):
            raise _invalid(f"{name}.label must be 1 (foreground) or 0 (background), not {label!r}.")
        parsed.append(Point(_number(f"{name}.x", point["x"]), _number(f"{name}.y", point["y"]), int(label)))
    return tuple(parsed)


def _parse_mask_input(where: str, ref: Any) -> MaskRef:
    name = f"{where}.mask_input"
    if not isinstance(ref, dict) or not {"id", "index"} <= set(ref) or set(ref) - MASK_INPUT_KEYS:
        raise _invalid(f'{name} must be {{"id": <an earlier result\'s id>, "index": i}}, with "candidate": j for a multimask result.')
    if not isinstance(ref["id"], str) or not ref["id"] or len(ref["id"]) > 64:
        raise _invalid(f"{name}.id must be the id of an earlier result.")
    for key in ("index", "candidate"):
        value = ref.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _invalid(f"{name}.{key} must be a whole number, 0 or more.")
    return MaskRef(ref["id"], ref["index"], ref.get("candidate"))


def _number(name: str, value: Any) -> float:
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an integer too large for a float
        number = math.nan
    if not math.isfinite(number):
        raise _invalid(f"{name} must be a finite number.")
    return number


def _parse_boxes(boxes: Any, max_boxes: int) -> tuple[Box, ...]:
    if not isinstance(boxes, list) or not boxes:
        raise _invalid("boxes must be a non-empty list of {x, y, width, height} objects.")
    if len(boxes) > max_boxes:
        raise _invalid(f"{len(boxes)} boxes sent; the limit is {max_boxes} per request.")
    return tuple(_parse_box(f"boxes[{i}]", box) for i, box in enumerate(boxes))


def _parse_box(name: str, box: Any) -> Box:
    if not isinstance(box, dict) or set(box) != set(BOX_KEYS):
        raise _invalid(f"{name} must be an object with exactly the keys x, y, width, height.")
    values = {key: _number(f"{name}.{key}", box[key]) for key in BOX_KEYS}
    if values["width"] <= 0 or values["height"] <= 0:
        raise _invalid(f"{name} must have width and height greater than 0.")
    return Box(**values)


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


# --- server -> client messages -------------------------------------------------


def _dump(message: dict[str, Any], client_ref: str | None = None) -> str:
    if client_ref is not None:
        message["client_ref"] = client_ref
    return json.dumps(message, separators=(",", ":"))


def queued_message(job_id: str, position: int, client_ref: str | None = None) -> str:
    return _dump({"type": "queued", "id": job_id, "position": position}, client_ref)


def status_message(job_id: str, status: str, client_ref: str | None = None) -> str:
    return _dump({"type": "status", "id": job_id, "status": status}, client_ref)


def result_message(
    job_id: str,
    *,
    width: int,
    height: int,
    sha256: str | None,
    masks: list[Any],
    timings: dict[str, float],
    cached_embedding: bool,
    client_ref: str | None = None,
) -> str:
    return _dump(
        {
            "type": "result",
            "id": job_id,
            "image": {"width": width, "height": height} | ({"sha256": sha256} if sha256 else {}),
            "masks": masks,
            "timings": timings,
            "cached_embedding": cached_embedding,
        },
        client_ref,
    )


def error_message(job_id: str | None, code: str, message: str, client_ref: str | None = None) -> str:
    assert code in CLOSE_CODES, code
    return _dump({"type": "error", "id": job_id, "code": code, "message": message}, client_ref)
