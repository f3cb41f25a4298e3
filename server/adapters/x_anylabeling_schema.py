"""X-AnyLabeling's remote server, as X-AnyLabeling-Server's `app/schemas` define it: pure translation (docs/x-anylabeling.md).

The desktop client (`anylabeling/services/auto_labeling/remote_server.py`)
sends `POST v1/predict` with `{"model", "image" (a data: URL), "params":
{"marks": [...], ...}}`, where a mark is `{"type": "point", "data": [x, y],
"label": 1 | 0}` or `{"type": "rectangle", "data": [x1, y1, x2, y2], ...}`
in image pixels. The answer is `{"success": true, "data": {"shapes": [...],
"description": ""}}`, each shape a closed polygon labelled
`AUTOLABEL_OBJECT`, as the server's own SAM 2 model
(`app/models/segment_anything_2.py`) makes them. Errors are `{"success":
false, "error": {"code", "message"}}`.
"""

from __future__ import annotations

from typing import Any

from server.adapters.bodies import finite_number, image_of, model_title, tool_model_name
from server.adapters.calls import X_ANYLABELING, Ask
from server.errors import ClientError, invalid

LABEL = "AUTOLABEL_OBJECT"

# The buttons X-AnyLabeling shows for a point-and-box model (the server's configs/auto_labeling/segment_anything_2.yaml).
WIDGETS = [
    {"name": name, "value": None}
    for name in ("button_add_point", "button_remove_point", "button_add_rect", "button_clear", "button_finish_object")
]

# What each error code becomes: (HTTP status, the tool's error code). A status of 503 is FastAPI's
# `{"detail": ...}`, as that server answers a full queue; the rest are its `{"success": false, ...}`.
ANSWER_OF_CODE = {
    "invalid_json": (400, "INVALID_REQUEST"),
    "invalid_request": (200, "INVALID_REQUEST"),
    "message_too_large": (200, "INVALID_REQUEST"),
    "image_unknown": (200, "INVALID_REQUEST"),
    "mask_unknown": (200, "INVALID_REQUEST"),
    "superseded": (200, "INVALID_REQUEST"),
    "image_url_forbidden": (200, "INVALID_IMAGE"),
    "image_download_failed": (200, "INVALID_IMAGE"),
    "image_too_large": (200, "INVALID_IMAGE"),
    "unsupported_image": (200, "INVALID_IMAGE"),
    "result_too_large": (200, "INFERENCE_ERROR"),
    "job_timeout": (200, "INFERENCE_ERROR"),
    "processing_failed": (200, "INFERENCE_ERROR"),
    "internal_error": (200, "INFERENCE_ERROR"),
    "queue_full": (503, None),
    "store_unavailable": (503, None),
    "shutting_down": (503, None),
}


def model_info(model_type: str) -> dict[str, Any]:
    """One model's entry in `v1/models`, as that server's `BaseModel.get_metadata` writes it."""
    return {
        "display_name": f"CAP {model_title(model_type)}",
        "widgets": WIDGETS,
        "params": {},
        "capabilities": {},
        "batch_processing_mode": "default",
    }


def models_answer(model_type: str) -> dict[str, Any]:
    return {"success": True, "data": {tool_model_name(model_type): model_info(model_type)}}


def error_answer(code: str, message: str) -> dict[str, Any]:
    return {"success": False, "error": {"code": code, "message": message}}


def predict_call(call: dict[str, Any]) -> tuple[str, Any, dict[str, Any]]:
    """`PredictRequest`'s fields (`model`, `image`, `params`), checked as its pydantic schema checks them."""
    model, image, params = call.get("model"), call.get("image"), call.get("params", {})
    if not isinstance(model, str) or not isinstance(image, str) or not isinstance(params, dict):
        raise invalid("The request must have `model` and `image` (strings) and may have `params` (an object).")
    return model, image, params


def ask_of_predict(image_text: str, params: dict[str, Any], *, max_image_bytes: int) -> Ask | None:
    """The marks as an ask: one prompt, or one per rectangle (each with every point); None without marks."""
    marks = params.get("marks") or []
    if not isinstance(marks, list) or not all(isinstance(mark, dict) for mark in marks):
        raise invalid("`params.marks` must be a list of marks, each {type, data, label}.")
    points = [_point(mark) for mark in marks if mark.get("type") == "point"]
    boxes = [_box(mark) for mark in marks if mark.get("type") == "rectangle"]
    if len(points) + len(boxes) != len(marks):
        raise invalid("Each mark's `type` must be \"point\" or \"rectangle\".")
    if not marks:
        return None
    prompts = [{"points": points, "box": box} if points else {"box": box} for box in boxes] or [{"points": points}]
    multimask = params.get("multimask_output", False)
    if not isinstance(multimask, bool):
        raise invalid("`params.multimask_output` must be true or false.")
    image = _image(image_text, max_image_bytes)
    return Ask(
        body={"prompts": prompts, "multimask": multimask, "output": ["polygons"]},
        client=X_ANYLABELING,
        image=image,
        image_name=f"x-anylabeling upload, {len(image)} bytes",
    )


def image_ask(image_text: str, *, max_image_bytes: int) -> Ask:
    """A call without marks: the image alone, to prepare its embedding (`prompts: []`)."""
    image = _image(image_text, max_image_bytes)
    return Ask(
        body={"prompts": []}, client=X_ANYLABELING, image=image, image_name=f"x-anylabeling upload, {len(image)} bytes"
    )


def shapes_answer(result: dict[str, Any]) -> dict[str, Any]:
    """The result as polygon shapes: for each prompt, its mask (with multimask, the best-scoring), one shape per ring."""
    shapes = []
    for mask in result["masks"]:
        if isinstance(mask, list):
            mask = max(mask, key=lambda candidate: candidate["score"])
        if mask.get("polygons_omitted"):
            raise ClientError("result_too_large", "The mask's outline has more vertices than MAX_POLYGON_VERTICES.")
        score = min(max(float(mask["score"]), 0.0), 1.0)  # the server's Shape holds a score within [0, 1]
        shapes += [_shape(ring, score) for ring in mask["polygons"]]
    return {"success": True, "data": {"shapes": shapes, "description": ""}}


def _image(image_text: str, max_image_bytes: int) -> bytes:
    """The image's bytes; base64 that does not decode is INVALID_IMAGE there, as that server answers it."""
    try:
        return image_of(image_text, field="image", max_bytes=max_image_bytes)
    except ClientError as error:
        raise ClientError("unsupported_image" if error.code == "invalid_request" else error.code, error.message) from None


def _shape(ring: list[int], score: float) -> dict[str, Any]:
    """A ring, flat [x1, y1, x2, y2, ...], as the server's `Shape`: a closed polygon of [x, y] points."""
    points = [[float(x), float(y)] for x, y in zip(ring[0::2], ring[1::2])]
    return {
        "label": LABEL,
        "shape_type": "polygon",
        "points": points + points[:1],
        "score": score,
        "attributes": {},
        "description": None,
        "difficult": False,
        "direction": 0,
        "flags": None,
        "group_id": None,
        "kie_linking": [],
    }


def _point(mark: dict[str, Any]) -> dict[str, Any]:
    data, label = mark.get("data"), mark.get("label", 1)
    if not (isinstance(data, list) and len(data) == 2 and all(map(finite_number, data))) or label not in (0, 1):
        raise invalid(f"A point mark must be {{\"data\": [x, y], \"label\": 1 or 0}}; got {str(mark)[:80]}.")
    return {"x": data[0], "y": data[1], "label": int(label)}


def _box(mark: dict[str, Any]) -> dict[str, Any]:
    data = mark.get("data")
    if not (isinstance(data, list) and len(data) == 4 and all(map(finite_number, data))):
        raise invalid(f"A rectangle mark must be {{\"data\": [x1, y1, x2, y2]}}; got {str(mark)[:80]}.")
    x1, y1, x2, y2 = data
    return {"x": min(x1, x2), "y": min(y1, y2), "width": abs(x2 - x1), "height": abs(y2 - y1)}
