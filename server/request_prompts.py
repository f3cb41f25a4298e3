"""A request's prompts as the client sends them: boxes, points and masks to refine, read and validated.

Pure functions only. `server.prompts` is what the model takes; `server.protocol`
reads the rest of the request and fits these prompts to the image.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from server.errors import invalid as _invalid
from server.prompts import Point

BOX_KEYS = ("x", "y", "width", "height")
POINT_KEYS = ("x", "y", "label")
PROMPT_KEYS = {"box", "points", "mask_input", "render"}
MASK_INPUT_KEYS = {"id", "index", "candidate"}


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
    render: MaskRef | None = None  # an earlier mask again, from its kept logits: nothing else in the prompt

    def to_dict(self) -> dict[str, Any]:
        """The prompt as a record keeps it and a result echoes it."""
        prompt: dict[str, Any] = {}
        if self.box is not None:
            prompt["box"] = self.box.to_dict()
        if self.points:
            prompt["points"] = [point._asdict() for point in self.points]
        if self.mask_input is not None:
            prompt["mask_input"] = self.mask_input.to_dict()
        if self.render is not None:
            prompt["render"] = self.render.to_dict()
        return prompt


def renders(prompts: tuple[RequestPrompt, ...]) -> bool:
    """Whether any prompt is a `render`."""
    return any(prompt.render is not None for prompt in prompts)



def parse_prompts(prompts: Any, max_prompts: int, max_points: int) -> tuple[RequestPrompt, ...]:
    """A 1.1 request's `prompts`, or `invalid_request`."""
    if not isinstance(prompts, list):
        raise _invalid("prompts must be a list of prompt objects (box, points, mask_input); [] prepares the image.")
    if len(prompts) > max_prompts:
        raise _invalid(f"{len(prompts)} prompts sent; the limit is {max_prompts} per request.")
    return tuple(_parse_prompt(i, prompt, max_points) for i, prompt in enumerate(prompts))


def _parse_prompt(index: int, prompt: Any, max_points: int) -> RequestPrompt:
    where = f"prompts[{index}]"
    if not isinstance(prompt, dict) or set(prompt) - PROMPT_KEYS:
        raise _invalid(f"{where} must be an object with box, points and/or mask_input (or render alone), and no other key.")
    if "render" in prompt:
        if len(prompt) > 1:
            raise _invalid(f"{where}.render gives an earlier mask again: send it alone in its prompt.")
        return RequestPrompt(render=_parse_mask_ref(f"{where}.render", prompt["render"]))
    if "box" not in prompt and not prompt.get("points"):
        raise _invalid(f"{where} has neither a box nor a point: a prompt needs one or both.")
    box = _parse_box(f"{where}.box", prompt["box"]) if "box" in prompt else None
    points = _parse_points(where, prompt.get("points", []), max_points)
    mask_input = _parse_mask_ref(f"{where}.mask_input", prompt["mask_input"]) if "mask_input" in prompt else None
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


def _parse_mask_ref(name: str, ref: Any) -> MaskRef:
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


def parse_boxes(boxes: Any, max_boxes: int) -> tuple[Box, ...]:
    """A protocol 1 request's `boxes`, or `invalid_request`."""
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

