"""CAP behind the real Label Studio 1.23.2: its masks, decoded by label-studio-sdk, are CAP's WebSocket masks.

Label Studio runs from .venv-label-studio/ (harness/label_studio.py); CAP is
the real server with the tiny SAM (the `start_app` fixture), with API_TOKEN
set, LABEL_STUDIO_URL pointing at that Label Studio and ALLOW_PRIVATE_URLS
off, so that the task image on loopback is read only because it is Label
Studio's. Through Label Studio's REST API, as its frontend does: a project
with smart KeyPointLabels and RectangleLabels and a BrushLabels tag, an
uploaded image (the task's URL is Label Studio's own /data/upload/...), CAP
connected as its ML backend with basic auth (POST /api/ml), and clicks sent
to POST /api/ml/{id}/interactive-annotating (label_studio/ml/api.py,
MLBackendInteractiveAnnotating). label-studio-sdk's own decoder
(converter/brush.py decode_rle) runs in Label Studio's environment.
"""

from __future__ import annotations

import base64
import json
import subprocess

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from harness import image_files
from harness.client import exchange
from harness.label_studio import VENV, LabelStudio
from harness.waiting import wait_for
from server.adapters.brush_rle import mask_to_brush_rle

CAP_TOKEN = "cap-label-studio-test-token"
WIDTH, HEIGHT = 96, 64
CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<BrushLabels name="brush" toName="image"><Label value="cat"/></BrushLabels>'
    '<KeyPointLabels name="kp" toName="image" smart="true"><Label value="cat" smart="true"/></KeyPointLabels>'
    '<RectangleLabels name="rect" toName="image" smart="true"><Label value="cat" smart="true"/></RectangleLabels></View>'
)


def sdk(script: str, payload: object) -> object:
    """Run `script` with label-studio-sdk in Label Studio's own environment: JSON `payload` in, JSON out."""
    done = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", script], input=json.dumps(payload), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


SDK_DECODE = """
import json, sys
from label_studio_sdk.converter.brush import decode_rle
regions = json.load(sys.stdin)
print(json.dumps([(decode_rle(r["rle"]).reshape(r["height"], r["width"], 4)[:, :, 3] > 0).astype(int).tolist()
                  for r in regions]))
"""


def sdk_masks(regions: list[dict]) -> list[np.ndarray]:
    """Each brush region's mask as label-studio-sdk's decode_rle reads it (the alpha channel)."""
    payload = [{"rle": r["value"]["rle"], "width": r["original_width"], "height": r["original_height"]} for r in regions]
    return [np.array(mask, dtype=np.uint8) for mask in sdk(SDK_DECODE, payload)]


def test_the_brush_rle_is_label_studio_sdks_byte_for_byte():
    rng = np.random.default_rng(0)
    masks = [np.zeros((5, 7), np.uint8), np.ones((5, 7), np.uint8), (rng.random((40, 50)) > 0.5).astype(np.uint8),
             np.ones((300, 400), np.uint8), np.zeros((1, 2), np.uint8)]  # 480,000 bytes in one run: cut in tokens
    masks[3][10:200, 50:390] = 0
    script = (
        "import json, sys, numpy as np\n"
        "from label_studio_sdk.converter.brush import mask2rle\n"
        "print(json.dumps([mask2rle(np.array(m, dtype=np.uint8) * 255) for m in json.load(sys.stdin)]))\n"
    )
    assert sdk(script, [mask.tolist() for mask in masks]) == [mask_to_brush_rle(mask) for mask in masks]


def prepare_project(label_studio: LabelStudio, image: bytes, config: str = CONFIG) -> tuple[int, dict]:
    """A project with `config` and one uploaded image; its id and the task."""
    project = label_studio.api("POST", "/api/projects", 201, json={"title": "CAP", "label_config": config})
    label_studio.api("POST", f"/api/projects/{project['id']}/import", 201, files={"file": ("cat.png", image, "image/png")})
    (task,) = label_studio.api("GET", f"/api/tasks?project={project['id']}")["tasks"]
    assert task["data"]["image"].startswith("/data/upload/")
    return project["id"], task


def connect_cap(label_studio: LabelStudio, project: int, port: int, password: str, expected: int = 201) -> dict:
    """CAP as the project's interactive ML backend, with basic auth (any user, API_TOKEN as the password);
    without a password, with no authentication."""
    auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": "annotator", "basic_auth_pass": password} if password else {}
    return label_studio.api("POST", "/api/ml", expected, json={
        "url": f"http://127.0.0.1:{port}/label-studio/", "project": project, "title": "CAP", "is_interactive": True, **auth,
    })


def keypoint(x: float, y: float, positive: bool = True) -> dict:
    """A smart keypoint as Label Studio's frontend puts it in the context (percent of the image)."""
    return {"original_width": WIDTH, "original_height": HEIGHT, "image_rotation": 0, "id": "kp1", "from_name": "kp",
            "to_name": "image", "type": "keypointlabels", "origin": "manual", "is_positive": positive,
            "value": {"x": x, "y": y, "width": 0.6, "keypointlabels": ["cat"]}}


def rectangle(x: float, y: float, width: float, height: float) -> dict:
    return {"original_width": WIDTH, "original_height": HEIGHT, "image_rotation": 0, "id": "r1", "from_name": "rect",
            "to_name": "image", "type": "rectanglelabels", "origin": "manual",
            "value": {"x": x, "y": y, "width": width, "height": height, "rotation": 0, "rectanglelabels": ["cat"]}}


def label_studio_records(app) -> list[dict]:
    """The records Label Studio's calls made, oldest first."""
    return sorted((r for r in app.store.records() if r["client"] == "label-studio"), key=lambda r: r["createdAt"])


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    """One Label Studio for this file (it takes half a minute to start); each test makes its own project."""
    with LabelStudio(tmp_path_factory.mktemp("label-studio")) as running:
        yield running


def test_label_studio_hands_back_caps_masks_and_the_second_click_is_decoder_only(label_studio, start_app):
    image = image_files.png_rgb(WIDTH, HEIGHT)
    app = start_app(api_token=CAP_TOKEN, label_studio_url=label_studio.url, label_studio_api_key=label_studio.token,
                    allow_private_urls=False)
    project, task = prepare_project(label_studio, image)
    backend = connect_cap(label_studio, project, app.port, CAP_TOKEN)
    assert backend["state"] == "CO" and backend["model_version"] == "cap-vit_b"

    # The annotator opens the task: Label Studio asks for its predictions without a context, and CAP
    # answers none but prepares the image (label_studio/tasks/api.py: evaluate_predictions on GET).
    label_studio.api("GET", f"/api/tasks/{task['id']}")
    assert wait_for(lambda: [r["status"] in ("processed", "finished") for r in label_studio_records(app)] == [True], 120)
    (prepared,) = label_studio_records(app)
    assert prepared["prompts"] == [] and app.store.get_output(prepared["id"])["timings"]["encode_ms"] > 0

    clicks = [[keypoint(37.5, 25.0)], [keypoint(37.5, 25.0), keypoint(80.2, 70.1, positive=False), rectangle(10, 12.5, 60, 50)]]
    answers = []
    for context in clicks:
        answer = label_studio.api("POST", f"/api/ml/{backend['id']}/interactive-annotating", 200,
                                  json={"task": task["id"], "context": {"result": context}})
        assert "errors" not in answer, answer
        answers.append(answer["data"])
    records = label_studio_records(app)
    assert [r["status"] for r in records[1:]] == ["finished", "finished"]
    assert [app.store.get_output(r["id"])["timings"]["encode_ms"] for r in records[1:]] == [0, 0]  # decoder-only
    assert not any(label_studio.token in json.dumps(record) for record in records)  # the key is in no record

    data_url = "data:image/png;base64," + base64.b64encode(image).decode()
    for context, prediction in zip(clicks, answers):
        (region,) = prediction["result"]
        assert (region["type"], region["from_name"], region["to_name"]) == ("brushlabels", "brush", "image")
        assert (region["original_width"], region["original_height"]) == (WIDTH, HEIGHT)
        assert region["value"]["brushlabels"] == ["cat"] and prediction["model_version"] == "cap-vit_b"
        prompt = {"points": [{"x": r["value"]["x"] * WIDTH / 100, "y": r["value"]["y"] * HEIGHT / 100,
                              "label": int(r["is_positive"])} for r in context if r["type"] == "keypointlabels"]}
        boxes = [r["value"] for r in context if r["type"] == "rectanglelabels"]
        if boxes:
            prompt["box"] = {"x": boxes[-1]["x"] * WIDTH / 100, "y": boxes[-1]["y"] * HEIGHT / 100,
                             "width": boxes[-1]["width"] * WIDTH / 100, "height": boxes[-1]["height"] * HEIGHT / 100}
        websocket = exchange(f"ws://127.0.0.1:{app.port}/?token={CAP_TOKEN}",
                             {"image_url": data_url, "prompts": [prompt], "multimask": False}).last
        assert websocket["type"] == "result", websocket
        (expected,) = websocket["masks"]
        segmentation = expected["segmentation"]
        cap_mask = mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()})
        assert 0 < cap_mask.sum() < cap_mask.size  # a mask with something to compare (the tiny SAM's, not a good one)
        (label_studio_mask,) = sdk_masks([region])
        assert np.array_equal(label_studio_mask, cap_mask)
        assert region["score"] == expected["score"] == prediction["score"]


def test_with_polygon_labels_and_no_brush_label_studio_hands_back_caps_polygons(label_studio, start_app):
    image = image_files.png_rgb(WIDTH, HEIGHT)
    app = start_app(label_studio_url=label_studio.url, label_studio_api_key=label_studio.token)  # no API_TOKEN
    project, task = prepare_project(label_studio, image, CONFIG.replace("BrushLabels", "PolygonLabels"))
    backend = connect_cap(label_studio, project, app.port, "")
    context = [keypoint(37.5, 25.0)]
    answer = label_studio.api("POST", f"/api/ml/{backend['id']}/interactive-annotating", 200,
                              json={"task": task["id"], "context": {"result": context}})
    assert "errors" not in answer, answer
    prompt = {"points": [{"x": 37.5 * WIDTH / 100, "y": 25.0 * HEIGHT / 100, "label": 1}]}
    data_url = "data:image/png;base64," + base64.b64encode(image).decode()
    websocket = exchange(f"ws://127.0.0.1:{app.port}/",
                         {"image_url": data_url, "prompts": [prompt], "multimask": False, "output": ["polygons"]}).last
    rings = websocket["masks"][0]["polygons"]
    assert rings and [r["type"] for r in answer["data"]["result"]] == ["polygonlabels"] * len(rings)
    for region, ring in zip(answer["data"]["result"], rings):
        assert region["from_name"] == "brush" and region["value"]["polygonlabels"] == ["cat"]
        assert region["value"]["points"] == [[ring[i] * 100 / WIDTH, ring[i + 1] * 100 / HEIGHT] for i in range(0, len(ring), 2)]


def test_an_annotator_sees_why_a_click_was_refused(label_studio, start_app):
    app = start_app(label_studio_url=label_studio.url, label_studio_api_key=label_studio.token)
    project, task = prepare_project(label_studio, image_files.png_rgb(WIDTH, HEIGHT))
    backend = connect_cap(label_studio, project, app.port, "")
    answer = label_studio.api("POST", f"/api/ml/{backend['id']}/interactive-annotating", 200,
                              json={"task": task["id"], "context": {"result": [keypoint(150.0, 25.0)]}})
    # Label Studio passes on the status line of CAP's 400, which carries CAP's sentence.
    (error,) = answer["errors"]
    assert error.startswith("400 Client Error: prompts[0].points[0] (x=144, y=16) lies outside the 96x64 image."), error


def test_a_wrong_token_is_refused_and_label_studio_says_so(label_studio, start_app):
    app = start_app(api_token=CAP_TOKEN, label_studio_url=label_studio.url, label_studio_api_key=label_studio.token)
    project, _ = prepare_project(label_studio, image_files.png_rgb(WIDTH, HEIGHT))
    refused = connect_cap(label_studio, project, app.port, "not-the-token", expected=400)
    # What Label Studio shows the person connecting the model (label_studio/ml/serializers.py, on CAP's 401).
    assert "authentication parameters were either not provided or are incorrect" in json.dumps(refused)
