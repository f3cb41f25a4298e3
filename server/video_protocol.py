"""Video requests, pure: open, prompt a frame, remove an object, propagate (docs/protocol.md, "Video").

A message with `video_url` or `video_sha256` is a video request; everything
else is `server.protocol`'s. Every video request needs `keep_open: true`:
a clip's state lives in the session that opened it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from server.errors import invalid as _invalid
from server.protocol import MAX_CLIENT_REF, parse_url
from server.request_prompts import Box, RequestPrompt, parse_prompts

KINDS = ("open", "prompt", "remove", "propagate")
COMMON_KEYS = {"keep_open", "client_ref"}
KEYS = {
    "open": {"video_url"},
    "prompt": {"video_sha256", "frame", "prompts", "output"},
    "remove": {"video_sha256", "remove_object"},
    "propagate": {"video_sha256", "propagate", "output"},
}
PROPAGATE_KEYS = {"from", "direction", "frames"}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_video(body: Any) -> bool:
    return isinstance(body, dict) and ("video_url" in body or "video_sha256" in body)


@dataclasses.dataclass(frozen=True)
class ObjectPrompt:
    """A prompt for one object on one frame: points and/or a box, in the frame's pixels."""

    object: int
    prompt: RequestPrompt

    def to_dict(self) -> dict[str, Any]:
        return {"object": self.object, **self.prompt.to_dict()}


@dataclasses.dataclass(frozen=True)
class Propagation:
    start: int
    reverse: bool
    frames: int | None  # None: to the clip's end

    def to_dict(self) -> dict[str, Any]:
        made: dict[str, Any] = {"from": self.start, "direction": "backward" if self.reverse else "forward"}
        return made if self.frames is None else made | {"frames": self.frames}


@dataclasses.dataclass(frozen=True)
class VideoRequest:
    kind: str  # one of KINDS
    video_url: str | None = None  # open
    video_sha256: str | None = None  # the others
    frame: int | None = None  # prompt
    prompts: tuple[ObjectPrompt, ...] = ()
    remove_object: int | None = None
    propagate: Propagation | None = None
    output: tuple[str, ...] = ("rle",)
    keep_open: bool = True
    client_ref: str | None = None
    is_v1 = False


def parse(body: dict[str, Any], *, max_prompts: int, max_points: int) -> VideoRequest:
    """A video request, or `invalid_request`."""
    kind = _kind(body)
    unknown = sorted(set(body) - KEYS[kind] - COMMON_KEYS)
    if unknown:
        raise _invalid(f"Unknown key(s) {', '.join(map(repr, unknown))} for a video {kind} request.")
    if body.get("keep_open") is not True:
        raise _invalid('A video request needs "keep_open": true: a clip is held by the session that opened it.')
    client_ref = body.get("client_ref")
    if client_ref is not None and (not isinstance(client_ref, str) or len(client_ref) > MAX_CLIENT_REF):
        raise _invalid(f"client_ref must be a string of at most {MAX_CLIENT_REF} characters.")
    common = {"client_ref": client_ref, "output": _output(body.get("output", ["rle"]))}
    if kind == "open":
        return VideoRequest("open", video_url=parse_url("video_url", body["video_url"]), **common)
    sha256 = body["video_sha256"]
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise _invalid("video_sha256 must be 64 lowercase hexadecimal digits: the sha256 an open's result gave.")
    if kind == "remove":
        return VideoRequest("remove", video_sha256=sha256, remove_object=_object("remove_object", body["remove_object"]), **common)
    if kind == "propagate":
        return VideoRequest("propagate", video_sha256=sha256, propagate=_propagation(body["propagate"]), **common)
    prompts = _prompts(body["prompts"], max_prompts, max_points)
    return VideoRequest("prompt", video_sha256=sha256, frame=_whole("frame", body["frame"]), prompts=prompts, **common)


def _kind(body: dict[str, Any]) -> str:
    if "video_url" in body:
        if "video_sha256" in body:
            raise _invalid("Send video_url (to open a clip) or video_sha256 (to work on an open one), not both.")
        return "open"
    found = [kind for kind, key in (("prompt", "prompts"), ("remove", "remove_object"), ("propagate", "propagate")) if key in body]
    if len(found) != 1:
        raise _invalid("A request on an open video sends exactly one of prompts (with frame), remove_object and propagate.")
    if found == ["prompt"] and "frame" not in body:
        raise _invalid("A video prompt request needs frame: the index of the frame the prompts are on.")
    return found[0]


def _prompts(prompts: Any, max_prompts: int, max_points: int) -> tuple[ObjectPrompt, ...]:
    if not isinstance(prompts, list) or not prompts:
        raise _invalid('prompts must be a non-empty list of {"object": id, "points": [...], "box": {...}}.')
    parsed = []
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, dict) or "object" not in prompt or "mask_input" in prompt:
            raise _invalid(f"prompts[{index}] must be an object with object (an id) and points and/or a box.")
        rest = {key: value for key, value in prompt.items() if key != "object"}
        [made] = parse_prompts([rest], 1, max_points)
        parsed.append(ObjectPrompt(_object(f"prompts[{index}].object", prompt["object"]), made))
    if len(parsed) > max_prompts:
        raise _invalid(f"{len(parsed)} prompts sent; the limit is {max_prompts} per request.")
    return tuple(parsed)


def _propagation(value: Any) -> Propagation:
    if not isinstance(value, dict) or not {"from", "direction"} <= set(value) or set(value) - PROPAGATE_KEYS:
        raise _invalid('propagate must be {"from": k, "direction": "forward" or "backward", "frames": m}.')
    if value["direction"] not in ("forward", "backward"):
        raise _invalid('propagate.direction must be "forward" or "backward".')
    frames = _whole("propagate.frames", value["frames"]) if "frames" in value else None
    return Propagation(_whole("propagate.from", value["from"]), value["direction"] == "backward", frames)


def _whole(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _invalid(f"{name} must be a whole number, 0 or more.")
    return value


def _object(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise _invalid(f"{name} must be an object id: a whole number from 0 to 2147483647.")
    return value


def _output(output: Any) -> tuple[str, ...]:
    if output != ["rle"]:
        raise _invalid('A video request\'s output is ["rle"]: polygons are not made for video frames.')
    return ("rle",)


def fit(request: VideoRequest, frames: int, width: int, height: int) -> VideoRequest:
    """The request on a clip of `frames` frames of `width`×`height`: frames inside it, boxes clipped, points inside."""
    if request.frame is not None and request.frame >= frames:
        raise _invalid(f"frame {request.frame} is outside the clip, which has frames 0 to {frames - 1}.")
    if request.propagate is not None and request.propagate.start >= frames:
        raise _invalid(f"propagate.from {request.propagate.start} is outside the clip, which has frames 0 to {frames - 1}.")
    fitted = []
    for index, item in enumerate(request.prompts):
        prompt = item.prompt
        for number, point in enumerate(prompt.points):
            if not (0 <= point.x <= width and 0 <= point.y <= height):
                raise _invalid(f"prompts[{index}].points[{number}] lies outside the {width}x{height} frame.")
        box = prompt.box
        if box is not None:
            x0, y0, x1, y1 = box.to_xyxy()
            x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
            if x1 <= x0 or y1 <= y0:
                raise _invalid(f"prompts[{index}].box lies wholly outside the {width}x{height} frame.")
            box = Box(x0, y0, x1 - x0, y1 - y0)
        fitted.append(dataclasses.replace(item, prompt=dataclasses.replace(prompt, box=box)))
    return dataclasses.replace(request, prompts=tuple(fitted))

