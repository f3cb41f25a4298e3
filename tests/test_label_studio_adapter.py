"""The Label Studio adapter's rules, fast: routes, auth, the click as a prompt, the answer's shape, errors.

A small segmenter stands in for CAP here (it records the asks and answers a
fixed mask); tests/test_label_studio.py runs the real server behind the real
Label Studio. The requests are shaped as Label Studio 1.23.2 sends them
(label_studio/ml/api_connector.py: `_prep_prediction_req`, `setup`; its
frontend's smart tools for the context).
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from server.adapters.calls import LABEL_STUDIO, HttpRequest
from server.adapters.label_studio import LabelStudioAdapter
from server.config import Settings
from server.errors import ClientError

LS_URL = "http://10.0.0.7:8080"
KEY = "legacy0123456789abcdef"
CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<BrushLabels name="brush" toName="image"><Label value="cat"/></BrushLabels>'
    '<KeyPointLabels name="kp" toName="image" smart="true"><Label value="cat"/></KeyPointLabels>'
    '<RectangleLabels name="rect" toName="image" smart="true"><Label value="cat"/></RectangleLabels></View>'
)
POLYGON_CONFIG = CONFIG.replace("BrushLabels", "PolygonLabels")
MASK = np.zeros((30, 40), np.uint8)
MASK[5:12, 8:20] = 1


class RecordingSegmenter:
    """Answers every ask with MASK as CAP's result message; or raises `error` when given one."""

    def __init__(self, error: ClientError | None = None):
        self.asks, self.prepared, self.error = [], [], error

    def segment(self, ask, scope):
        self.asks.append((ask, scope))
        if self.error:
            raise self.error
        rle = mask_utils.encode(np.asfortranarray(MASK))
        mask = {"score": 0.875, "area": int(MASK.sum()), "bbox": [8, 5, 12, 7],
                "segmentation": {"size": [30, 40], "counts": rle["counts"].decode()}}
        if "polygons" in ask.body["output"]:
            del mask["segmentation"]
            mask["polygons"] = [[8, 5, 20, 5, 20, 12, 8, 12]]
        return {"type": "result", "id": "r1", "image": {"width": 40, "height": 30, "sha256": "0" * 64},
                "masks": [mask], "cached_embedding": False}

    def prepare(self, ask, scope):
        self.prepared.append((ask, scope))


def adapter(segmenter=None, **settings) -> LabelStudioAdapter:
    values = {"label_studio_url": LS_URL, "label_studio_api_key": KEY, "sam_model_type": "vit_b", **settings}
    return LabelStudioAdapter(Settings(**values), segmenter or RecordingSegmenter())


def call(target, path, body=None, method="POST", password=None, raw=None):
    headers = {}
    if password is not None:
        headers["authorization"] = "Basic " + base64.b64encode(f"label-studio:{password}".encode()).decode()
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    response = target.handle(HttpRequest(method, path, "", headers, data))
    return response.status, json.loads(response.body), dict(response.headers)


def predict_body(context=None, image="/data/upload/1/cat.png", config=CONFIG):
    return {"tasks": [{"id": 1, "data": {"image": image}}], "project": "1.1700000000",
            "label_config": config, "params": {"login": None, "password": None, "context": context}}


def click(*regions):
    return {"result": list(regions)}


def point(x, y, positive=True, label="cat"):
    return {"type": "keypointlabels", "is_positive": positive, "original_width": 40, "original_height": 30,
            "value": {"x": x, "y": y, "width": 1, "keypointlabels": [label] if label else []}}


def rectangle(x, y, w, h, label="cat"):
    return {"type": "rectanglelabels", "original_width": 40, "original_height": 30,
            "value": {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": [label] if label else []}}


def test_health_root_and_setup_answer_as_label_studio_ml_backend():
    target = adapter()
    assert call(target, "/label-studio/", method="GET")[:2] == (200, {"status": "UP", "model_class": "CAP"})
    assert call(target, "/label-studio/health", method="GET")[:2] == (200, {"status": "UP", "model_class": "CAP"})
    setup = {"project": "1.1700000000", "schema": CONFIG, "hostname": "http://evil.example", "access_token": "x"}
    assert call(target, "/label-studio/setup", setup)[:2] == (200, {"model_version": "cap-vit_b"})


def test_webhook_answers_201_for_training_events_and_200_for_others():
    target = adapter()
    assert call(target, "/label-studio/webhook", {"action": "ANNOTATION_CREATED", "project": {}})[0] == 201
    assert call(target, "/label-studio/webhook", {"action": "START_TRAINING"})[0] == 201
    assert call(target, "/label-studio/webhook", {"action": "PROJECT_UPDATED"})[:2] == (200, {"status": "Unknown event"})
    status, body, _ = call(target, "/label-studio/webhook", {"project": {}})
    assert status == 400 and "action" in body["detail"]


@pytest.mark.parametrize("path", ["/label-studio/", "/label-studio/health", "/label-studio/setup", "/label-studio/predict"])
def test_with_api_token_every_route_needs_basic_auth_carrying_it(path):
    target = adapter(RecordingSegmenter(), api_token="tok-a,tok-b")
    method = "GET" if path.endswith(("/", "health")) else "POST"
    for password in (None, "wrong", ""):
        status, body, headers = call(target, path, predict_body(), method=method, password=password)
        assert status == 401 and "API_TOKEN" in body["detail"] and headers["WWW-Authenticate"].startswith("Basic")
    assert call(target, path, predict_body(), method=method, password="tok-b")[0] == 200


def test_a_bearer_header_or_garbage_is_not_basic_auth():
    target = adapter(api_token="tok")
    for header in ("Bearer tok", "Basic !!!", "Basic " + base64.b64encode(b"no-colon-tok").decode()):
        response = target.handle(HttpRequest("GET", "/label-studio/health", "", {"authorization": header}, b""))
        assert response.status == 401


def test_a_click_is_one_prompt_in_pixels_not_rounded_and_the_answer_is_a_brush_region():
    segmenter = RecordingSegmenter()
    context = click(point(25.5, 50), point(10, 10, positive=False, label=None), rectangle(12.5, 10, 50, 60, label="dog"))
    status, body, _ = call(adapter(segmenter), "/label-studio/predict", predict_body(context))
    assert status == 200
    (ask, scope), = segmenter.asks
    assert scope is None and ask.client == LABEL_STUDIO
    assert ask.body == {"prompts": [{"box": {"x": 5.0, "y": 3.0, "width": 20.0, "height": 18.0},
                                     "points": [{"x": 10.2, "y": 15.0, "label": 1}, {"x": 4.0, "y": 3.0, "label": 0}]}],
                        "multimask": False, "output": ["rle"]}
    (prediction,) = body["results"]
    assert prediction["score"] == 0.875 and prediction["model_version"] == "cap-vit_b"
    (region,) = prediction["result"]
    assert {key: region[key] for key in ("from_name", "to_name", "type", "original_width", "original_height", "score")} == {
        "from_name": "brush", "to_name": "image", "type": "brushlabels", "original_width": 40, "original_height": 30,
        "score": 0.875}
    assert region["value"]["format"] == "rle" and region["value"]["brushlabels"] == ["dog"]  # the last one labelled
    assert all(isinstance(byte, int) and 0 <= byte < 256 for byte in region["value"]["rle"])


def test_label_studio_files_are_read_from_label_studio_with_its_key_to_that_host_only():
    segmenter = RecordingSegmenter()
    call(adapter(segmenter), "/label-studio/predict", predict_body(click(point(50, 50))))
    fetch = segmenter.asks[0][0].fetch
    assert fetch.url == LS_URL + "/data/upload/1/cat.png"
    assert fetch.headers == (("Authorization", f"Token {KEY}"),)
    jwt = ".".join(base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
                   for part in ({"alg": "HS256", "typ": "JWT"}, {"token_type": "refresh"})) + ".c2ln"
    segmenter = RecordingSegmenter()
    call(adapter(segmenter, label_studio_api_key=jwt), "/label-studio/predict",
         predict_body(click(point(50, 50)), image=LS_URL + "/data/local-files/?d=a/cat.png"))
    assert segmenter.asks[0][0].fetch.headers == (("Authorization", f"Bearer {jwt}"),)
    segmenter = RecordingSegmenter()
    call(adapter(segmenter), "/label-studio/predict", predict_body(click(point(50, 50)), image="https://img.example/cat.png"))
    ask = segmenter.asks[0][0]
    assert ask.fetch is None and ask.body["image_url"] == "https://img.example/cat.png"


def test_a_predict_without_context_answers_nothing_at_once_and_prepares_the_image():
    segmenter = RecordingSegmenter()
    for context in (None, {}, {"result": []}):
        assert call(adapter(segmenter), "/label-studio/predict", predict_body(context))[:2] == (200, {"results": []})
    assert segmenter.asks == [] and len(segmenter.prepared) == 3
    ask, _ = segmenter.prepared[0]
    assert ask.body == {"prompts": []} and ask.fetch.url == LS_URL + "/data/upload/1/cat.png"


def test_polygons_when_the_config_has_polygon_labels_and_no_brush():
    segmenter = RecordingSegmenter()
    status, body, _ = call(adapter(segmenter), "/label-studio/predict", predict_body(click(point(50, 50)), config=POLYGON_CONFIG))
    assert status == 200 and segmenter.asks[0][0].body["output"] == ["polygons"]
    (region,) = body["results"][0]["result"]
    assert region["type"] == "polygonlabels" and region["from_name"] == "brush"
    assert region["value"] == {"points": [[20.0, 100 * 5 / 30], [50.0, 100 * 5 / 30], [50.0, 40.0], [20.0, 40.0]],
                               "closed": True, "polygonlabels": ["cat"]}


@pytest.mark.parametrize("code, status", [("queue_full", 503), ("shutting_down", 503), ("invalid_request", 400),
                                          ("image_too_large", 413), ("image_download_failed", 502)])
def test_a_segmenter_error_is_an_http_status_that_fits_with_its_sentence(code, status):
    target = adapter(RecordingSegmenter(ClientError(code, "A sentence to act on.")))
    response = target.handle(HttpRequest("POST", "/label-studio/predict", "", {}, json.dumps(predict_body(click(point(50, 50)))).encode()))
    assert (response.status, json.loads(response.body)) == (status, {"status": status, "detail": "A sentence to act on.", "code": code})
    assert response.reason == "A sentence to act on."  # Label Studio shows the annotator the status line


@pytest.mark.parametrize("body, raw, words", [
    (None, b"{not json", "not valid JSON"),
    ({"tasks": []}, None, "no tasks"),
    (predict_body(click(point(50, 50)), config="<View>"), None, "well-formed"),
    (predict_body(click(point(50, 50)), config="<View>" + " " * 300_000 + "</View>"), None, "longer than 262,144"),
    (predict_body(click(point(50, 50)), config=(  # entity expansion ("billion laughs"): refused by the parser
        '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaaaaaaaa">'
        + "".join(f'<!ENTITY {b} "{("&" + a + ";") * 10}">' for a, b in zip("abcdefgh", "bcdefghi"))
        + ']><View><Image name="i" value="$image"/><BrushLabels name="b" toName="i">&i;</BrushLabels></View>'
    )), None, "well-formed"),
    (predict_body(click(point(50, 50)), config="<View><Image name='i' value='$image'/></View>"), None, "BrushLabels"),
    (predict_body(click({"type": "keypointlabels", "value": {"x": 1, "y": 2}})), None, "original_width"),
    (predict_body(click(point("a", 2))), None, "value.x must be a number"),
    (predict_body(click({"type": "brushlabels", "value": {}})), None, "smart"),
    (predict_body(click(point(1, 2)), image="s3://bucket/cat.png"), None, "scheme 's3'"),
    (predict_body(click(point(1, 2)), image="/data/upload/../../api/users"), None, "'..'"),
])
def test_bad_input_is_a_400_with_a_sentence(body, raw, words):
    segmenter = RecordingSegmenter()
    status, answer, _ = call(adapter(segmenter), "/label-studio/predict", body, raw=raw)
    assert status == 400 and words in answer["detail"] and segmenter.asks == []


def test_without_label_studio_url_its_files_are_refused_saying_what_to_set():
    status, body, _ = call(adapter(label_studio_url=None), "/label-studio/predict", predict_body(click(point(5, 5))))
    assert status == 400 and "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY" in body["detail"]


def test_unknown_routes_and_methods():
    target = adapter()
    assert call(target, "/label-studio/train", {})[0] == 404
    status, _, headers = call(target, "/label-studio/predict", method="GET")
    assert status == 405 and headers["Allow"] == "POST"


def test_the_key_is_never_in_a_repr_nor_in_an_error():
    settings = Settings(label_studio_url=LS_URL, label_studio_api_key=KEY)
    assert KEY not in repr(settings) and LS_URL in repr(settings)
    segmenter = RecordingSegmenter(ClientError("image_download_failed", "The image could not be downloaded."))
    status, body, _ = call(adapter(segmenter), "/label-studio/predict", predict_body(click(point(50, 50))))
    ask = segmenter.asks[0][0]
    assert ask.fetch.headers and KEY not in repr(ask) and KEY not in json.dumps(body)


def test_a_task_open_whose_image_cap_cannot_read_still_answers_no_prediction(caplog):
    segmenter = RecordingSegmenter()
    status, body, _ = call(adapter(segmenter, label_studio_url=None), "/label-studio/predict", predict_body(None))
    assert (status, body) == (200, {"results": []}) and segmenter.prepared == []
    assert "LABEL_STUDIO_URL" in caplog.text
