"""CVAT and X-AnyLabeling against the real server over real HTTP, sending exactly what their sources send.

CVAT (cvat-ai/cvat, commit e4c12a27), `cvat/apps/lambda_manager/views.py`:
`LambdaGateway._http` (lines 87-106) sends every call with
`requests.Session.request(method, url, headers=extra_headers, timeout=...,
json=data)`, then `raise_for_status()` and `reply.json()`; `list` (110-114)
is `GET /api/functions`; `_invoke_via_dashboard` (131-137) is `POST
/api/function_invocations` with `x-nuclio-function-name`; the body is
`LambdaFunction.invoke`'s interactor payload.

X-AnyLabeling (CVHub520/X-AnyLabeling, commit 87da3399),
`anylabeling/services/auto_labeling/remote_server.py`: headers (lines 44-47),
`GET {server_url}/v1/models` (91-97), and `POST {server_url}/v1/predict`
(204-238) with `requests.post(url, json=payload, headers, timeout)`; marks as
`canvas.py` `update_auto_labeling_marks` (line 4853) makes them.

The masks are compared with CAP's WebSocket answer for the same prompt
(harness/client.py).
"""

from __future__ import annotations

import base64
import threading

import numpy as np
import pytest
import requests
from pycocotools import mask as mask_utils

from harness import image_files
from harness.client import exchange
from harness.ports import free_port
from harness.waiting import wait_for
from tests.conftest import ws_url

PNG = image_files.png_rgb(64, 48)
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode("utf-8")
TERMINAL = {"finished", "interrupted", "failed"}


def nuclio(port: int, method: str, url: str, data=None, headers=None) -> requests.Response:
    """views.py `LambdaGateway._http`, lines 80-106, with CVAT's default NUCLIO settings."""
    extra_headers = {
        "x-nuclio-project-name": "cvat",
        "x-nuclio-function-namespace": "nuclio",
        "x-nuclio-invoke-via": "domain-name",
        "X-Nuclio-Invoke-Timeout": "120s",
    }
    extra_headers.update(headers or {})
    with requests.Session() as session:
        return session.request(method, f"http://127.0.0.1:{port}{url}", headers=extra_headers, timeout=120, json=data)


def invoke(port: int, function: str, pos_points, neg_points, image: bytes = PNG) -> requests.Response:
    """views.py `_invoke_via_dashboard` (131-137) with the interactor payload of `LambdaFunction.invoke`."""
    payload = {
        "image": base64.b64encode(image).decode("utf-8"),  # LambdaFunction._get_image
        "pos_points": pos_points,
        "neg_points": neg_points,
        "obj_bbox": None,
    }
    return nuclio(port, "post", "/api/function_invocations", payload, {"x-nuclio-function-name": function, "x-nuclio-path": "/"})


def websocket_answer(app, prompt: dict, output: list[str], multimask: bool, token: str | None = None) -> dict:
    url = ws_url(app) + (f"?token={token}" if token else "")
    answer = exchange(url, {"image_url": DATA_URL, "prompts": [prompt], "multimask": multimask, "output": output})
    assert answer.last["type"] == "result", answer.last
    return answer.last


def records_of(app, client: str) -> list[dict]:
    return [record for record in app.store.records() if record.get("client") == client]


@pytest.fixture
def cvat_app(start_app):
    return start_app(cvat_port=free_port())


def test_cvat_lists_cap_and_gets_the_websockets_best_mask_then_a_decoder_only_click(cvat_app):
    app = cvat_app
    port = app.cvat_port.port
    listed = nuclio(port, "get", "/api/functions")
    listed.raise_for_status()
    (name,) = listed.json()
    assert listed.json()[name]["metadata"]["annotations"]["type"] == "interactor"

    clicked = invoke(port, name, [[20, 15], [30.5, 22]], [[5, 40]])
    clicked.raise_for_status()
    mask = np.array(clicked.json()["mask"], dtype=np.uint8)

    prompt = {"points": [{"x": 20, "y": 15, "label": 1}, {"x": 30.5, "y": 22, "label": 1}, {"x": 5, "y": 40, "label": 0}]}
    candidates = websocket_answer(app, prompt, ["rle"], multimask=True)["masks"][0]
    best = max(candidates, key=lambda candidate: candidate["score"])
    segmentation = best["segmentation"]
    expected = mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()})
    assert mask.shape == (48, 64)
    assert np.array_equal(mask, expected)

    invoke(port, name, [[40, 10]], []).raise_for_status()
    records = records_of(app, "cvat")
    assert len(records) == 2 and {record["status"] for record in records} <= TERMINAL
    second = max(records, key=lambda record: record["createdAt"])
    assert app.store.get_output(second["id"])["cachedEmbedding"] is True
    assert second["imageUrl"] == f"cvat upload, {len(PNG)} bytes"


def test_cvat_bad_input_gets_its_status_and_every_record_ends(cvat_app):
    app = cvat_app
    port = app.cvat_port.port
    (name,) = nuclio(port, "get", "/api/functions").json()
    outside = invoke(port, name, [[500, 500]], [])  # outside the 64x48 image
    assert outside.status_code == 400
    with pytest.raises(requests.HTTPError) as shown:  # what CVAT's lambda_manager shows the person
        outside.raise_for_status()
    assert "lies outside the 64x48 image" in str(shown.value), str(shown.value)
    assert invoke(port, name, [[1, 1]], [], image=b"not an image").status_code == 400
    assert invoke(port, "pth-facebookresearch-sam2-vit-h", [[1, 1]], []).status_code == 404
    refused = nuclio(port, "post", "/api/function_invocations", {"image": "@@", "pos_points": [[1, 1]], "neg_points": []},
                     {"x-nuclio-function-name": name})
    assert refused.status_code == 400 and "base64" in refused.json()["error"]
    assert all(record["status"] in TERMINAL for record in app.store.records())


def test_cvats_routes_are_not_on_the_main_port(cvat_app):
    assert nuclio(cvat_app.port, "get", "/api/functions").status_code == 404


def x_anylabeling(app, method: str, route: str, api_key: str | None, payload=None, slash="") -> requests.Response:
    """remote_server.py lines 36-47 and 91-97 / 233-238; server_url is CAP's /x-anylabeling (`slash`: as README writes it)."""
    server_url = f"http://127.0.0.1:{app.port}/x-anylabeling{slash}"
    headers = {"Content-Type": "application/json", "Token": api_key}  # requests leaves out a None header
    if method == "get":
        return requests.get(url=f"{server_url}{route}", headers=headers, timeout=180)
    return requests.post(url=f"{server_url}{route}", json=payload, headers=headers, timeout=180)


def predict_payload(model: str, marks: list[dict]) -> dict:
    """remote_server.py `predict_shapes`, lines 204-225, with an image file (line 189)."""
    params = {"conf_threshold": 0.0, "iou_threshold": 0.0, "epsilon_factor": 0.001, "marks": marks}
    return {"model": model, "image": DATA_URL, "params": params}


def test_x_anylabeling_gets_the_websockets_polygons_then_a_decoder_only_mark(start_app):
    app = start_app(api_token="xal-key")
    assert x_anylabeling(app, "get", "/v1/models", None).status_code == 401
    models = x_anylabeling(app, "get", "/v1/models", "xal-key")
    models.raise_for_status()
    (model,) = models.json()["data"]

    marks = [{"type": "point", "data": [20, 15], "label": 1}, {"type": "point", "data": [5, 40], "label": 0},
             {"type": "rectangle", "data": [30, 30, 8, 4], "label": 1}]
    predicted = x_anylabeling(app, "post", "/v1/predict", "xal-key", predict_payload(model, marks))
    predicted.raise_for_status()
    shapes = predicted.json()["data"]["shapes"]

    prompt = {"points": [{"x": 20, "y": 15, "label": 1}, {"x": 5, "y": 40, "label": 0}],
              "box": {"x": 8, "y": 4, "width": 22, "height": 26}}
    (mask,) = websocket_answer(app, prompt, ["polygons"], multimask=False, token="xal-key")["masks"]
    rings = [[[float(x), float(y)] for x, y in zip(ring[0::2], ring[1::2])] for ring in mask["polygons"]]
    assert [shape["points"] for shape in shapes] == [ring + ring[:1] for ring in rings]
    assert all(shape["label"] == "AUTOLABEL_OBJECT" and shape["shape_type"] == "polygon" for shape in shapes)

    more = marks + [{"type": "point", "data": [40, 10], "label": 1}]
    x_anylabeling(app, "post", "/v1/predict", "xal-key", predict_payload(model, more)).raise_for_status()
    records = records_of(app, "x-anylabeling")
    assert len(records) == 2 and {record["status"] for record in records} <= TERMINAL
    second = max(records, key=lambda record: record["createdAt"])
    assert app.store.get_output(second["id"])["cachedEmbedding"] is True


def test_x_anylabeling_bad_input_gets_the_servers_error_shape_and_every_record_ends(start_app):
    app = start_app()
    (model,) = x_anylabeling(app, "get", "/v1/models", None, slash="/").json()["data"]
    outside = x_anylabeling(app, "post", "/v1/predict", None, predict_payload(model, [{"type": "point", "data": [900, 9], "label": 1}]))
    assert outside.status_code == 200 and outside.json()["error"]["code"] == "INVALID_REQUEST"
    unknown = x_anylabeling(app, "post", "/v1/predict", None, predict_payload("segment_anything_2", []))
    assert unknown.json() == {"success": False, "error": {"code": "MODEL_NOT_FOUND", "message": unknown.json()["error"]["message"]}}
    broken = {**predict_payload(model, [{"type": "point", "data": [1, 1], "label": 1}]), "image": "data:image/png;base64,AAAA"}
    assert x_anylabeling(app, "post", "/v1/predict", None, broken).json()["error"]["code"] == "INVALID_IMAGE"
    assert all(record["status"] in TERMINAL for record in app.store.records())


def test_a_full_queue_is_503_for_both_tools(start_app, gate):
    """X-AnyLabeling-Server's predict.py line 71 answers a full queue 503; CVAT passes any status on (views.py `return_response`)."""
    app = start_app(model=gate, max_queue=1, cvat_port=free_port())
    request = {"image_url": DATA_URL, "prompts": [{"points": [{"x": 1, "y": 1, "label": 1}]}]}
    waiting = [threading.Thread(target=exchange, args=(ws_url(app), request)) for _ in range(2)]
    try:
        waiting[0].start()
        assert gate.entered.wait(30)  # the first is being processed, not queued
        waiting[1].start()
        assert wait_for(lambda: app.store.count_queued() == 1)
        (model,) = x_anylabeling(app, "get", "/v1/models", None).json()["data"]
        marks = [{"type": "point", "data": [1, 1], "label": 1}]
        busy = x_anylabeling(app, "post", "/v1/predict", None, predict_payload(model, marks))
        assert busy.status_code == 503 and "try again" in busy.json()["detail"]
        (name,) = nuclio(app.cvat_port.port, "get", "/api/functions").json()
        refused = invoke(app.cvat_port.port, name, [[1, 1]], [])
        assert refused.status_code == 503 and refused.json()["code"] == "queue_full"
    finally:
        gate.opened.set()
        for thread in waiting:
            if thread.ident is not None:  # started
                thread.join(30)
    assert all(record["status"] in TERMINAL for record in app.store.records())
