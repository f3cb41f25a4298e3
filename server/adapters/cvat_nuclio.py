"""CVAT's interactor, as the nuclio dashboard API speaks it: pure translation (docs/cvat.md).

CVAT's `cvat/apps/lambda_manager/views.py` lists functions
(`GET /api/functions`, a dict by name), reads one (`GET
/api/functions/<name>`), and invokes it (`POST /api/function_invocations`
with the header `x-nuclio-function-name`, body `{image, pos_points,
neg_points, obj_bbox}`). It reads `metadata.name`, `metadata.annotations`
(`type`, `spec`, `name`, `min_pos_points`, `startswith_box`, ...),
`spec.description` and `status.httpPort`. The answer is that of CVAT's
SAM 2 function (`serverless/pytorch/facebookresearch/sam2/nuclio`):
`{"mask": H×W of 0/1}`, the best-scoring of SAM's three candidates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from server.adapters.bodies import finite_number, image_of, json_object, model_title, tool_model_name
from server.adapters.calls import CVAT, Ask
from server.errors import invalid

HELP = "Click on the object (left: on it, right: not on it). CAP answers with SAM's best mask."

# The HTTP status CVAT gets for each error code. CVAT turns any status of 400 or more into its own
# error with that status (views.py, `return_response`), so the code decides what a person sees there.
STATUS_OF_CODE = {
    "invalid_json": 400,
    "invalid_request": 400,
    "image_url_forbidden": 400,
    "image_download_failed": 400,
    "unsupported_image": 400,
    "image_unknown": 400,
    "mask_unknown": 400,
    "superseded": 409,
    "message_too_large": 413,
    "image_too_large": 413,
    "result_too_large": 413,
    "queue_full": 503,
    "store_unavailable": 503,
    "shutting_down": 503,
    "job_timeout": 504,
    "processing_failed": 500,
    "internal_error": 500,
}


def describe_function(model_type: str, http_port: int | None) -> dict[str, Any]:
    """One function as the nuclio dashboard describes it, with what CVAT's `LambdaFunction` reads."""
    name = tool_model_name(model_type)
    title = model_title(model_type)
    return {
        "metadata": {
            "name": name,
            "namespace": "cvat",
            "annotations": {
                "type": "interactor",
                "name": f"CAP {title}",
                "spec": "",  # an interactor has no labels; CVAT reads `json.loads(spec or "[]")`
                "version": 2,
                "min_pos_points": 1,
                "min_neg_points": 0,
                "startswith_box": False,  # a JSON false: CVAT reads it with bool(), and bool("false") is True
                "help_message": HELP,
            },
        },
        "spec": {"description": f"Interactive segmentation by CAP with {title}"},
        "status": {"state": "ready", "httpPort": http_port},
    }


def ask_of_invocation(body: bytes, *, max_image_bytes: int) -> Ask:
    """The invocation's body as one multimask prompt on the image it carries."""
    call = json_object(body)
    image = image_of(call.get("image"), field="image", max_bytes=max_image_bytes)
    points = [_point(point, "pos_points", 1) for point in _points(call, "pos_points")]
    points += [_point(point, "neg_points", 0) for point in _points(call, "neg_points")]
    prompt: dict[str, Any] = {"points": points} if points else {}
    if call.get("obj_bbox") is not None:
        prompt["box"] = _box(call["obj_bbox"])
    if not prompt:
        raise invalid("Click at least one point on the object (pos_points is empty).")
    return Ask(
        body={"prompts": [prompt], "multimask": True, "output": ["rle"]},
        client=CVAT,
        image=image,
        image_name=f"cvat upload, {len(image)} bytes",
    )


def mask_answer(result: dict[str, Any]) -> bytes:
    """`{"mask": [[0, 1, ...], ...]}`: the best-scoring candidate, rows of the image, as CVAT's SAM 2 function answers."""
    candidates = result["masks"][0]
    best = max(candidates, key=lambda candidate: candidate["score"])  # the first of equal scores
    segmentation = best["segmentation"]
    mask = mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()})
    return b'{"mask": ' + mask_rows(mask) + b"}"


def mask_rows(mask: np.ndarray) -> bytes:
    """A 0/1 mask as JSON rows, `[[0,1,...],...]`, written as bytes in one pass (a 12-megapixel mask is 24 MB)."""
    height, width = mask.shape
    if height == 0 or width == 0:
        return b"[" + b",".join([b"[]"] * height) + b"]"
    rows = np.empty((height, 2 * width + 2), np.uint8)  # "[" d "," d "," ... d "]" ","
    rows[:, 0] = ord("[")
    rows[:, 1:-1:2] = (mask != 0).astype(np.uint8) + ord("0")
    rows[:, 2:-1:2] = ord(",")
    rows[:, -2] = ord("]")
    rows[:, -1] = ord(",")
    return b"[" + rows.tobytes()[:-1] + b"]"


def _points(call: dict[str, Any], field: str) -> list[Any]:
    points = call.get(field, [])
    if not isinstance(points, list):
        raise invalid(f"`{field}` must be a list of [x, y] points.")
    return points


def _point(point: Any, field: str, label: int) -> dict[str, Any]:
    if not (isinstance(point, list) and len(point) == 2 and all(map(finite_number, point))):
        raise invalid(f"Each of `{field}` must be [x, y], two numbers; got {str(point)[:60]}.")
    return {"x": point[0], "y": point[1], "label": label}


def _box(corners: Any) -> dict[str, Any]:
    """`obj_bbox`, [[x1, y1], [x2, y2]], as CAP's box."""
    if not (
        isinstance(corners, list)
        and len(corners) == 2
        and all(isinstance(corner, list) and len(corner) == 2 and all(map(finite_number, corner)) for corner in corners)
    ):
        raise invalid(f"`obj_bbox` must be null or [[x1, y1], [x2, y2]]; got {str(corners)[:60]}.")
    (x1, y1), (x2, y2) = corners
    return {"x": min(x1, x2), "y": min(y1, y2), "width": abs(x2 - x1), "height": abs(y2 - y1)}
