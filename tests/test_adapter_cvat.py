"""The CVAT interactor's translation (server/adapters/cvat.py, cvat_nuclio.py), with a small fake Segmenter.

What CVAT sends and reads is copied from cvat-ai/cvat at commit e4c12a27,
`cvat/apps/lambda_manager/views.py`: `LambdaGateway._http` (lines 87-106:
the x-nuclio headers, `requests` with `json=`, `raise_for_status`,
`reply.json()`), `list` (110-114), `get` (118-119), `_invoke_via_dashboard`
(131-137), and `LambdaFunction.__init__` / `LambdaFunction.invoke` (the
fields read, and the interactor's payload). The answer is that of
`serverless/pytorch/facebookresearch/sam2/nuclio/main.py` and
`model_handler.py` (`{"mask": best_mask.tolist()}`, multimask, best score).
"""

from __future__ import annotations

import base64
import dataclasses
import json

import numpy as np
import pytest

from server.adapters.calls import CVAT, HttpRequest
from server.adapters.cvat import CvatAdapter
from server.adapters.cvat_nuclio import STATUS_OF_CODE, mask_rows
from server.config import Settings
from server.errors import CLOSE_CODES, ClientError
from tests.support.fake_segmenter import FakeSegmenter, wire_mask

IMAGE = b"\x89PNG\r\n\x1a\n not decoded by the fake"
SETTINGS = dataclasses.replace(Settings(), cvat_port=8081)

# views.py lines 87-92 and 136: what every call to the dashboard carries (requests sends header names as given).
NUCLIO_HEADERS = {
    "x-nuclio-project-name": "cvat",
    "x-nuclio-function-namespace": "nuclio",
    "x-nuclio-invoke-via": "domain-name",
    "x-nuclio-invoke-timeout": "120s",
    "content-type": "application/json",
}


def get(adapter: CvatAdapter, path: str):
    return adapter.handle(HttpRequest("GET", path, "", dict(NUCLIO_HEADERS), b""))


def invoke(adapter: CvatAdapter, payload: dict, function: str = "cap-vit_b"):
    """views.py `_invoke_via_dashboard` (lines 131-137): POST /api/function_invocations, the function in a header."""
    headers = {**NUCLIO_HEADERS, "x-nuclio-function-name": function, "x-nuclio-path": "/"}
    return adapter.handle(HttpRequest("POST", "/api/function_invocations", "", headers, json.dumps(payload).encode()))


def interactor_payload(pos_points, neg_points, obj_bbox=None) -> dict:
    """`LambdaFunction.invoke`, the `FunctionKind.INTERACTOR` branch; the image as `_get_image` encodes it."""
    return {
        "image": base64.b64encode(IMAGE).decode("utf-8"),
        "pos_points": pos_points,
        "neg_points": neg_points,
        "obj_bbox": obj_bbox,
    }


def read_function(data: dict) -> dict:
    """What `LambdaFunction.__init__` (views.py) reads from one function, the way it reads it."""
    annotations = data["metadata"]["annotations"]
    return {
        "id": data["metadata"]["name"],
        "kind": annotations.get("type"),
        "labels": json.loads(annotations.get("spec") or "[]"),
        "description": data["spec"]["description"],
        "port": data["status"].get("httpPort"),
        "name": annotations.get("name", data["metadata"]["name"]),
        "min_pos_points": int(annotations.get("min_pos_points", 1)),
        "min_neg_points": int(annotations.get("min_neg_points", -1)),
        "startswith_box": bool(annotations.get("startswith_box", False)),
        "version": int(annotations.get("version", "1")),
        "help_message": annotations.get("help_message", ""),
    }


def test_the_function_list_is_a_dict_by_name_that_cvat_reads_as_an_interactor():
    adapter = CvatAdapter(SETTINGS, FakeSegmenter(), "vit_b")
    response = get(adapter, "/api/functions")
    assert response.status == 200
    functions = json.loads(response.body)
    assert list(functions) == ["cap-vit_b"]
    function = read_function(functions["cap-vit_b"])  # views.py `list`, line 112: `for item in data.values()`
    assert function["id"] == "cap-vit_b" and function["kind"] == "interactor" and function["labels"] == []
    assert function["min_pos_points"] == 1 and function["min_neg_points"] == 0
    assert function["startswith_box"] is False and function["version"] == 2
    assert function["port"] == 8081 and "vit_b" in function["name"] and function["help_message"]
    assert functions["cap-vit_b"]["status"]["state"] == "ready"
    assert json.loads(get(adapter, "/api/functions/cap-vit_b").body) == functions["cap-vit_b"]  # views.py `get`


def test_a_model_type_with_a_plus_gets_a_name_within_cvats_function_id_pattern():
    adapter = CvatAdapter(SETTINGS, FakeSegmenter(), "sam2.1_hiera_b+")
    (name,) = json.loads(get(adapter, "/api/functions").body)
    assert name == "cap-sam2.1_hiera_b_plus"  # FunctionViewSet.lookup_value_regex = "[a-zA-Z0-9_.-]+"
    assert get(adapter, f"/api/functions/{name}").status == 200


def test_an_unknown_function_is_404_and_runs_nothing():
    segmenter = FakeSegmenter()
    adapter = CvatAdapter(SETTINGS, segmenter, "vit_b")
    assert get(adapter, "/api/functions/pth-facebookresearch-sam2-vit-h").status == 404
    assert invoke(adapter, interactor_payload([[1, 1]], []), function="cap-vit_h").status == 404
    assert segmenter.asked == []


def test_an_invocation_is_one_multimask_prompt_and_answers_the_best_scoring_mask():
    candidates = [np.zeros((3, 4), bool) for _ in range(3)]
    candidates[0][0, 0] = candidates[1][1:, 2:] = candidates[2][2, 1] = True
    segmenter = FakeSegmenter([[wire_mask(candidates[0], 0.2), wire_mask(candidates[1], 0.9), wire_mask(candidates[2], 0.5)]])
    adapter = CvatAdapter(SETTINGS, segmenter, "vit_b")

    response = invoke(adapter, interactor_payload([[2.5, 1.0], [3, 2]], [[0, 0]]))

    assert response.status == 200 and response.content_type == "application/json"
    assert json.loads(response.body) == {"mask": candidates[1].astype(int).tolist()}
    ((ask, scope),) = segmenter.asked
    assert ask.body == {
        "prompts": [{"points": [{"x": 2.5, "y": 1.0, "label": 1}, {"x": 3, "y": 2, "label": 1}, {"x": 0, "y": 0, "label": 0}]}],
        "multimask": True,
        "output": ["rle"],
    }
    assert (ask.client, ask.image, ask.image_name, scope) == (CVAT, IMAGE, f"cvat upload, {len(IMAGE)} bytes", None)


def test_obj_bbox_becomes_the_prompts_box():
    segmenter = FakeSegmenter([[wire_mask(np.ones((2, 2), bool), 0.5)] * 3])
    invoke(CvatAdapter(SETTINGS, segmenter, "vit_b"), interactor_payload([[5, 5]], [], obj_bbox=[[30, 40], [10, 20]]))
    ((ask, _),) = segmenter.asked
    assert ask.body["prompts"] == [{"points": [{"x": 5, "y": 5, "label": 1}], "box": {"x": 10, "y": 20, "width": 20, "height": 20}}]


@pytest.mark.parametrize(
    "body, words",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({**interactor_payload([[1, 1]], []), "image": "@@@"}).encode(), "base64"),
        (json.dumps({**interactor_payload([[1, 1]], []), "image": None}).encode(), "image"),
        (json.dumps(interactor_payload([[1, True]], [])).encode(), "pos_points"),
        (json.dumps(interactor_payload([1, 2], [])).encode(), "pos_points"),
        (json.dumps(interactor_payload([[1, 1]], "none")).encode(), "neg_points"),
        (json.dumps(interactor_payload([], [])).encode(), "at least one point"),
        (json.dumps(interactor_payload([[1, 1]], [], obj_bbox=[1, 2, 3, 4])).encode(), "obj_bbox"),
        (b'{"image": "aGk=", "pos_points": [[NaN, 1]], "neg_points": []}', "pos_points"),
    ],
)
def test_a_bad_body_is_400_with_a_sentence_and_runs_nothing(body, words):
    segmenter = FakeSegmenter()
    adapter = CvatAdapter(SETTINGS, segmenter, "vit_b")
    headers = {**NUCLIO_HEADERS, "x-nuclio-function-name": "cap-vit_b"}
    response = adapter.handle(HttpRequest("POST", "/api/function_invocations", "", headers, body))
    assert response.status == 400
    assert words in json.loads(response.body)["error"]
    assert segmenter.asked == []


def test_every_error_code_has_a_status_and_cvat_gets_the_sentence():
    assert set(STATUS_OF_CODE) == set(CLOSE_CODES)
    segmenter = FakeSegmenter(error=ClientError("queue_full", "The queue is full; try again shortly."))
    response = invoke(CvatAdapter(SETTINGS, segmenter, "vit_b"), interactor_payload([[1, 1]], []))
    assert response.status == 503
    assert json.loads(response.body) == {"error": "The queue is full; try again shortly.", "code": "queue_full"}


def test_cvats_direct_invoke_method_posts_to_the_functions_port_root():
    """views.py `_invoke_directly`: `session.post(f"http://host.docker.internal:{func.port}", json=payload)`."""
    segmenter = FakeSegmenter([[wire_mask(np.eye(2, dtype=bool), 0.5)] * 3])
    adapter = CvatAdapter(SETTINGS, segmenter, "vit_b")
    response = adapter.handle(HttpRequest("POST", "/", "", {}, json.dumps(interactor_payload([[1, 1]], [])).encode()))
    assert json.loads(response.body) == {"mask": [[1, 0], [0, 1]]}


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (13, 17), (0, 3)])
def test_mask_rows_are_the_json_of_the_masks_rows(shape):
    mask = np.random.default_rng(sum(shape)).random(shape) > 0.5
    assert json.loads(mask_rows(mask)) == mask.astype(int).tolist()
