"""X-AnyLabeling's remote server translation (server/adapters/x_anylabeling.py, x_anylabeling_schema.py), with a fake Segmenter.

What the desktop client sends and reads is copied from CVHub520/X-AnyLabeling
at commit 87da3399: `anylabeling/services/auto_labeling/remote_server.py`
(lines 44-47: headers `Content-Type` and `Token`; 91-97: `GET v1/models`,
`result.get("data")`; 189 and 202: the image as a data: URL; 204-225: the
payload `{model, image, params: {conf_threshold, iou_threshold,
epsilon_factor, marks}}`; 233-262: `raise_for_status`, then
`data["shapes"]`), and the marks from
`anylabeling/views/labeling/widgets/canvas.py` `update_auto_labeling_marks`
(line 4853). The server's answers are CVHub520/X-AnyLabeling-Server's at
commit 70599dc4: `app/schemas/response.py`, `app/api/predict.py` (lines
35, 51, 71), `app/core/middleware.py` (lines 45-49),
`app/models/segment_anything_2.py` (lines 168, 367-370).
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from server.adapters.calls import X_ANYLABELING, HttpRequest
from server.adapters.x_anylabeling import XAnyLabelingAdapter
from server.adapters.x_anylabeling_schema import ANSWER_OF_CODE
from server.config import Settings
from server.errors import CLOSE_CODES, ClientError
from server.tokens import scope_of
from tests.support.fake_segmenter import FakeSegmenter, wire_mask

IMAGE = b"\x89PNG\r\n\x1a\n not decoded by the fake"
DATA_URL = "data:image/png;base64," + base64.b64encode(IMAGE).decode("utf-8")  # remote_server.py line 202
SQUARE = [2, 1, 4, 1, 4, 3, 2, 3]  # a ring as CAP writes it: flat, not closed


def client_headers(api_key: str | None = None) -> dict[str, str]:
    """remote_server.py lines 44-47; `requests` leaves out a header whose value is None (no API key set)."""
    headers = {"content-type": "application/json"}
    if api_key is not None:
        headers["token"] = api_key
    return headers


def marks(*items) -> list[dict]:
    """canvas.py `update_auto_labeling_marks` (line 4853): integer pixels, points and rectangles labelled 1 or 0."""
    return [
        {"type": "point", "data": list(item[1:]), "label": item[0]}
        if len(item) == 3
        else {"type": "rectangle", "data": list(item[1:]), "label": item[0]}
        for item in items
    ]


def predict(adapter, the_marks, *, model="cap-vit_b", image=DATA_URL, api_key=None):
    """remote_server.py `predict_shapes`, lines 204-238."""
    params = {"conf_threshold": 0.0, "iou_threshold": 0.0, "epsilon_factor": 0.001}
    if the_marks:
        params["marks"] = the_marks
    payload = {"model": model, "image": image, "params": params}
    return adapter.handle(
        HttpRequest("POST", "/x-anylabeling/v1/predict", "", client_headers(api_key), json.dumps(payload).encode())
    )


def adapter_with(segmenter, api_token=None, model_type="vit_b"):
    return XAnyLabelingAdapter(Settings(api_token=api_token), segmenter, model_type)


def test_models_lists_one_model_with_the_widgets_for_points_and_boxes():
    response = adapter_with(FakeSegmenter()).handle(HttpRequest("GET", "/x-anylabeling/v1/models", "", client_headers(), b""))
    assert response.status == 200
    models = json.loads(response.body)["data"]  # remote_server.py line 97
    assert list(models) == ["cap-vit_b"]
    entry = models["cap-vit_b"]
    assert "vit_b" in entry["display_name"] and entry["batch_processing_mode"] == "default"
    widgets = {widget["name"] for widget in entry["widgets"]}
    assert {"button_add_point", "button_remove_point", "button_add_rect", "button_clear", "button_finish_object"} == widgets


def test_with_api_token_every_route_needs_it_in_the_token_header():
    segmenter = FakeSegmenter([wire_mask(np.ones((2, 2), bool), 0.5, [SQUARE])])
    adapter = adapter_with(segmenter, api_token="old,new")
    for api_key in (None, "", "wrong"):
        for response in (
            adapter.handle(HttpRequest("GET", "/x-anylabeling/v1/models", "", client_headers(api_key), b"")),
            predict(adapter, marks((1, 3, 2)), api_key=api_key),
        ):
            assert response.status == 401
            assert json.loads(response.body)["error"]["code"] == "UNAUTHORIZED"  # middleware.py lines 45-49
    assert segmenter.asked == []
    assert json.loads(predict(adapter, marks((1, 3, 2)), api_key="new").body)["success"] is True
    assert segmenter.asked[0][1] == scope_of(b"new")


def test_points_become_one_prompt_and_the_answer_is_closed_polygons_labelled_autolabel_object():
    segmenter = FakeSegmenter([wire_mask(np.ones((2, 2), bool), 1.02, [SQUARE, [0, 0, 1, 0, 1, 1]])])
    response = predict(adapter_with(segmenter), marks((1, 3, 2), (0, 7, 8)))

    assert response.status == 200
    answer = json.loads(response.body)
    assert answer["success"] is True and answer["data"]["description"] == ""
    first, second = answer["data"]["shapes"]
    assert first["label"] == "AUTOLABEL_OBJECT" and first["shape_type"] == "polygon"
    assert first["points"] == [[2.0, 1.0], [4.0, 1.0], [4.0, 3.0], [2.0, 3.0], [2.0, 1.0]]  # segment_anything_2.py line 367
    assert second["points"] == [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    assert first["score"] == 1.0  # the server's Shape holds a score within [0, 1]
    ((ask, scope),) = segmenter.asked
    assert ask.body == {
        "prompts": [{"points": [{"x": 3, "y": 2, "label": 1}, {"x": 7, "y": 8, "label": 0}]}],
        "multimask": False,
        "output": ["polygons"],
    }
    assert (ask.client, ask.image, ask.image_name, scope) == (X_ANYLABELING, IMAGE, f"x-anylabeling upload, {len(IMAGE)} bytes", None)


def test_each_rectangle_is_a_prompt_with_every_point():
    """segment_anything_2.py line 168 on: one box per rectangle, the points repeated for each box."""
    segmenter = FakeSegmenter([wire_mask(np.ones((2, 2), bool), 0.5, [SQUARE])] * 2)
    predict(adapter_with(segmenter), marks((1, 30, 40, 10, 20), (1, 5, 5), (1, 0, 0, 2, 2)))
    ((ask, _),) = segmenter.asked
    point = [{"x": 5, "y": 5, "label": 1}]
    assert ask.body["prompts"] == [
        {"points": point, "box": {"x": 10, "y": 20, "width": 20, "height": 20}},
        {"points": point, "box": {"x": 0, "y": 0, "width": 2, "height": 2}},
    ]


def test_multimask_output_takes_the_best_scoring_candidate():
    candidates = [wire_mask(np.ones((2, 2), bool), score, [[0, 0, index + 1, 0, 0, 1]]) for index, score in enumerate((0.3, 0.8, 0.1))]
    segmenter = FakeSegmenter([candidates])
    adapter = adapter_with(segmenter)
    payload = {"model": "cap-vit_b", "image": DATA_URL, "params": {"marks": marks((1, 1, 1)), "multimask_output": True}}
    response = adapter.handle(HttpRequest("POST", "/x-anylabeling/v1/predict", "", client_headers(), json.dumps(payload).encode()))
    (shape,) = json.loads(response.body)["data"]["shapes"]
    assert shape["points"][1] == [2.0, 0.0] and shape["score"] == 0.8
    assert segmenter.asked[0][0].body["multimask"] is True


def test_no_marks_prepares_the_image_and_answers_no_shapes():
    segmenter = FakeSegmenter()
    response = predict(adapter_with(segmenter), [])
    assert json.loads(response.body) == {"success": True, "data": {"shapes": [], "description": ""}}
    ((ask, _),) = segmenter.prepared
    assert ask.body == {"prompts": []} and ask.image == IMAGE and segmenter.asked == []


@pytest.mark.parametrize(
    "kwargs, code",
    [
        ({"model": "segment_anything_2"}, "MODEL_NOT_FOUND"),  # predict.py line 35
        ({"image": "data:image/png;base64,@@@@"}, "INVALID_IMAGE"),  # predict.py line 51
        ({"image": ""}, "INVALID_IMAGE"),
        ({"the_marks": [{"type": "point", "data": [1], "label": 1}]}, "INVALID_REQUEST"),
        ({"the_marks": [{"type": "point", "data": [1, 2], "label": 2}]}, "INVALID_REQUEST"),
        ({"the_marks": [{"type": "polygon", "data": [1, 2]}]}, "INVALID_REQUEST"),
        ({"the_marks": [{"type": "rectangle", "data": [1, 2, 3]}]}, "INVALID_REQUEST"),
    ],
)
def test_bad_input_gets_the_servers_error_shape_with_http_200(kwargs, code):
    segmenter = FakeSegmenter()
    kwargs.setdefault("the_marks", marks((1, 3, 2)))
    response = predict(adapter_with(segmenter), kwargs.pop("the_marks"), **kwargs)
    assert response.status == 200
    answer = json.loads(response.body)
    assert answer["success"] is False and answer["error"]["code"] == code and answer["error"]["message"]
    assert segmenter.asked == []


def test_a_body_that_is_no_json_is_400_in_the_servers_error_shape():
    adapter = adapter_with(FakeSegmenter())
    response = adapter.handle(HttpRequest("POST", "/x-anylabeling/v1/predict", "", client_headers(), b"{nope"))
    assert response.status == 400 and json.loads(response.body)["error"]["code"] == "INVALID_REQUEST"


def test_every_error_code_has_an_answer_and_a_full_queue_is_503():
    assert set(ANSWER_OF_CODE) == set(CLOSE_CODES)
    segmenter = FakeSegmenter(error=ClientError("queue_full", "The queue is full; try again shortly."))
    response = predict(adapter_with(segmenter), marks((1, 3, 2)))
    assert response.status == 503  # predict.py line 71: HTTPException, FastAPI's {"detail": ...}
    assert json.loads(response.body) == {"detail": "The queue is full; try again shortly."}
    segmenter.error = ClientError("processing_failed", "The model failed on this request.")
    answer = json.loads(predict(adapter_with(segmenter), marks((1, 3, 2))).body)
    assert answer == {"success": False, "error": {"code": "INFERENCE_ERROR", "message": "The model failed on this request."}}


def test_model_info_and_unknown_routes():
    adapter = adapter_with(FakeSegmenter())
    info = json.loads(adapter.handle(HttpRequest("GET", "/x-anylabeling/v1/models/cap-vit_b/info", "", {}, b"")).body)
    assert info["success"] is True and info["data"]["model_id"] == "cap-vit_b"
    missing = json.loads(adapter.handle(HttpRequest("GET", "/x-anylabeling/v1/models/yolo11n/info", "", {}, b"")).body)
    assert missing["error"]["code"] == "MODEL_NOT_FOUND"
    assert adapter.handle(HttpRequest("GET", "/x-anylabeling/v1/nothing", "", {}, b"")).status == 404


def test_a_server_url_ending_in_a_slash_still_reaches_the_routes():
    """remote_server.py line 41: `f"{self.server_url}/v1/predict"`, so `.../x-anylabeling/` gives `//v1/predict`."""
    segmenter = FakeSegmenter([wire_mask(np.ones((2, 2), bool), 0.5, [SQUARE])])
    adapter = adapter_with(segmenter)
    models = adapter.handle(HttpRequest("GET", "/x-anylabeling//v1/models", "", client_headers(), b""))
    assert list(json.loads(models.body)["data"]) == ["cap-vit_b"]
    payload = {"model": "cap-vit_b", "image": DATA_URL, "params": {"marks": marks((1, 3, 2))}}
    response = adapter.handle(HttpRequest("POST", "/x-anylabeling//v1/predict", "", client_headers(), json.dumps(payload).encode()))
    assert json.loads(response.body)["success"] is True
