"""Protocol 1.2's `mask_scale` and `render`, through a real server (tiny SAM) and real sockets.

`mask_scale`: every mask field at floor(W·s + 0.5) × floor(H·s + 0.5), made by
SAM's own postprocessing with its last resize going to that size.
`render`: an earlier mask again, from its kept logits, at this request's
scale, without the decoder. The full-size models' equality with the
reference is in tests/test_sam_reference.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from segment_anything.modeling import Sam

from harness import image_files
from harness.client import exchange, session as open_session
from harness.waiting import wait_for
from server import jobs, masks, protocol
from server.models.sam1 import SamModel
from server.prompts import Point, Prompt
from tests.conftest import ws_url

PNG = image_files.png_rgb(64, 48)
SHA = hashlib.sha256(PNG).hexdigest()
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
CLICK = {"points": [{"x": 20, "y": 15, "label": 1}]}


def reference_mask(model: SamModel, prompt: Prompt, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """segment-anything's `Sam.postprocess_masks` on the tiny model's logits, its last resize to `size`, > 0;
    and where a logit lies so near the threshold that float rounding may decide it."""
    pixels = np.asarray(Image.open(io.BytesIO(PNG)).convert("RGB"))
    result = model.segment(pixels, [prompt], False)
    post = result.postprocess
    sam = SimpleNamespace(image_encoder=SimpleNamespace(img_size=post.encoder_size))
    logits = Sam.postprocess_masks(sam, result.low_res, post.input_size, size)[0, 0]
    near = ((logits - post.threshold).abs() <= 1e-5).numpy()
    assert near.mean() < 0.01, "the logits hug the threshold: this test would prove little"
    return (logits > post.threshold).numpy(), near


def all_terminal(app) -> bool:
    return all(jobs.is_terminal(record) and not jobs.order_violations(record) for record in app.store.records())


def test_the_masks_size_is_the_image_size_times_the_scale_rounded_half_up_at_least_one():
    assert protocol.scaled_size(4000, 3000, 0.32) == (1280, 960)
    assert protocol.scaled_size(5, 3, 0.5) == (3, 2)  # 2.5 -> 3, 1.5 -> 2
    assert protocol.scaled_size(64, 48, 0.001) == (1, 1)
    assert protocol.scaled_size(64, 48, None) == protocol.scaled_size(64, 48, 1) == (64, 48)


@pytest.mark.parametrize("scale", [0.5, 0.32, 0.07, 1])
def test_a_click_at_a_scale_is_sams_postprocess_at_that_size_in_every_field(start_app, tiny_sam, scale):
    width, height = protocol.scaled_size(64, 48, scale)
    expected, near = reference_mask(SamModel(tiny_sam, "tiny"), Prompt(points=(Point(20, 15, 1),)), (height, width))
    app = start_app()
    answer = exchange(ws_url(app), {"image_url": DATA_URL, "prompts": [CLICK], "mask_scale": scale,
                                    "output": ["rle", "polygons"]}).last
    assert answer["type"] == "result" and answer["mask_scale"] == scale, answer
    assert answer["image"] == {"width": 64, "height": 48, "sha256": SHA}  # the image's own size
    mask = answer["masks"][0]
    assert mask["prompt"] == CLICK  # in image pixels
    assert mask["segmentation"]["size"] == [height, width]
    found = masks.decode(mask["segmentation"]).astype(bool)
    np.testing.assert_array_equal(found[~near], expected[~near])
    assert mask["area"] == int(found.sum())
    if found.any():
        ys, xs = np.nonzero(found)
        assert mask["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    for ring in mask["polygons"]:
        assert all(0 <= v <= (width if i % 2 == 0 else height) for i, v in enumerate(ring))
    [record] = app.store.records()
    assert record["maskScale"] == scale


def test_mask_scale_is_allowed_with_boxes_and_left_out_of_a_full_size_answer(start_app):
    app = start_app()
    box = {"x": 4, "y": 4, "width": 40, "height": 30}
    scaled = exchange(ws_url(app), {"image_url": DATA_URL, "boxes": [box], "mask_scale": 0.25}).last
    assert scaled["masks"][0]["segmentation"]["size"] == [12, 16] and scaled["masks"][0]["box"] == box
    full = exchange(ws_url(app), {"image_url": DATA_URL, "boxes": [box]}).last
    assert "mask_scale" not in full and full["masks"][0]["segmentation"]["size"] == [48, 64]


@pytest.mark.parametrize("scale", [0, -0.5, 1.5, "0.5", True, None, [0.5], 1e400, 10**400])
def test_a_bad_mask_scale_is_invalid_request_naming_it(start_app, scale):
    app = start_app()
    outcome = exchange(ws_url(app), {"image_url": DATA_URL, "prompts": [CLICK], "mask_scale": scale})
    assert outcome.types == ["error"] and outcome.last["code"] == "invalid_request"
    assert outcome.last["message"].startswith("mask_scale must be a number greater than 0 and at most 1")
    assert list(app.store.records()) == []


def test_render_gives_an_earlier_mask_again_at_full_size_without_the_decoder(start_app):
    app = start_app()
    with open_session(ws_url(app)) as session:
        drawn = session.ask({"image_url": DATA_URL, "prompts": [CLICK], "mask_scale": 0.25})
        full = session.ask({"image_sha256": SHA, "prompts": [CLICK]})
        ref = {"id": drawn["id"], "index": 0}
        rendered = session.ask({"image_sha256": SHA, "prompts": [{"render": ref}]})
        half = session.ask({"image_sha256": SHA, "prompts": [{"render": ref}], "mask_scale": 0.5})
        half_click = session.ask({"image_sha256": SHA, "prompts": [CLICK], "mask_scale": 0.5})
        mixed = session.ask({"image_sha256": SHA, "prompts": [CLICK, {"render": ref}, CLICK]})
    assert rendered["type"] == "result" and "mask_scale" not in rendered, rendered
    assert rendered["id"] not in (drawn["id"], full["id"])
    [answer] = rendered["masks"]
    assert answer["prompt"] == {"render": ref}
    for key in ("segmentation", "area", "bbox", "score"):
        assert answer[key] == full["masks"][0][key], key
    assert rendered["timings"]["decode_ms"] == rendered["timings"]["encode_ms"] == 0  # no model ran
    assert half["mask_scale"] == 0.5 and half["masks"][0]["segmentation"] == half_click["masks"][0]["segmentation"]
    assert [m["segmentation"] for m in mixed["masks"]] == [full["masks"][0]["segmentation"]] * 3
    assert mixed["masks"][1]["prompt"] == {"render": ref}
    record = app.store.get(rendered["id"])
    assert record["prompts"] == [{"render": ref}]
    assert wait_for(lambda: all_terminal(app))


def test_bad_renders_are_refused_as_mask_input_is(start_app):
    app = start_app()
    with open_session(ws_url(app)) as session:
        plain = session.ask({"image_url": DATA_URL, "prompts": [CLICK]})
        several = session.ask({"image_sha256": SHA, "prompts": [CLICK], "multimask": True})
        cases = [
            ({"render": {"id": "no-such-result", "index": 0}}, False, "mask_unknown", "prompts[0].render"),
            ({"render": {"id": plain["id"], "index": 1}}, False, "invalid_request", "has 1 masks"),
            ({"render": {"id": several["id"], "index": 0}}, False, "invalid_request", "needs a candidate"),
            ({"render": {"id": plain["id"], "index": 0}, **CLICK}, False, "invalid_request", "alone"),
            ({"render": {"id": plain["id"], "index": 0}}, True, "invalid_request", "without multimask"),
            ({"render": {"index": 0}}, False, "invalid_request", "prompts[0].render"),
        ]
        for prompt, multimask, code, words in cases:
            error = session.ask({"image_sha256": SHA, "prompts": [prompt], "multimask": multimask})
            assert error["type"] == "error" and error["code"] == code and words in error["message"], (prompt, error)
        candidate = session.ask({"image_sha256": SHA, "prompts": [
            {"render": {"id": several["id"], "index": 0, "candidate": 2}}]})
        assert candidate["masks"][0]["segmentation"] == several["masks"][0][2]["segmentation"]
    assert wait_for(lambda: all_terminal(app))


def test_the_upsampler_at_a_scale_is_sams_postprocess_with_that_last_size():
    """Random logits, the 4000×3000 photograph at a 1280-wide canvas among them: SAM's own resizes."""
    from tests.test_masks import assert_same_as_reference, postprocess_for, random_logits

    for (height, width), scale in (((3000, 4000), 0.32), ((150, 200), 0.5), ((97, 310), 0.013), ((480, 640), 0.999)):
        post = postprocess_for(height, width).at_scale(scale)
        assert post.original_size == protocol.scaled_size(width, height, scale)[::-1]
        for shift in (0.0, 4.0):
            assert_same_as_reference(random_logits(height + width, shift), post)
    assert torch.equal(torch.tensor(postprocess_for(48, 64).at_scale(None).original_size), torch.tensor((48, 64)))
