"""`everything` through a real server and real sockets: the answer, progress, cancel, bad parameters, records.

The model is the tiny SAM with random weights (and, where a test needs the
work to be slow or held, `ModelGate`'s wrappers around it). The masks are
compared with the reference generator's on the same tiny model; never with
what a mask "should" look like.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image
from segment_anything import SamAutomaticMaskGenerator
from websockets.sync.client import connect

from harness import image_files
from harness.client import exchange, session as open_session
from harness.waiting import wait_for
from server import jobs, masks
from tests.conftest import ModelGate, ws_url

PNG = image_files.png_rgb(64, 48)
SHA = hashlib.sha256(PNG).hexdigest()
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
KEEP_ALL = {"points_per_side": 8, "pred_iou_thresh": 0, "stability_score_thresh": 0, "box_nms_thresh": 1.0}


class SlowModel(ModelGate):
    """The tiny SAM, each encoder pass taking `embed_s` and each decoder call `decode_s` longer; counts decoder calls.
    `hold` blocks the decoder call after `hold_after` of them until `release` is set."""

    def __init__(self, model, embed_s=0.0, decode_s=0.0, hold_after=None):
        super().__init__(model, opened=True)
        self.embed_s, self.decode_s, self.hold_after = embed_s, decode_s, hold_after
        self.decodes, self.embeds = 0, 0
        self.held, self.release = threading.Event(), threading.Event()

    def embed(self, images):
        self.embeds += 1
        time.sleep(self.embed_s)
        return super().embed(images)

    def decode(self, embedding, prompts, multimask, per_call=None, score_floor=None):
        if self.hold_after is not None and self.decodes == self.hold_after:
            self.held.set()
            assert self.release.wait(60), "the test never released the decoder"
        self.decodes += 1
        time.sleep(self.decode_s)
        return super().decode(embedding, prompts, multimask, per_call, score_floor)


@pytest.fixture
def slow(tiny_sam):
    from server.models.sam1 import SamModel

    return lambda **kwargs: SlowModel(SamModel(tiny_sam, "tiny", 4), **kwargs)


def test_everything_answers_the_reference_generators_masks_and_the_record_keeps_its_parameters(start_app, tiny_sam):
    app = start_app()
    outcome = exchange(ws_url(app), {"image_url": DATA_URL, "everything": KEEP_ALL, "client_ref": "e1"})
    assert outcome.types[:3] == ["queued", "status", "progress"] and outcome.types[-1] == "result", outcome.types
    assert all(m["client_ref"] == "e1" for m in outcome.messages)
    progress = [m for m in outcome.messages if m["type"] == "progress"]
    assert progress[0]["done"] == 0 and {m["total"] for m in progress} == {64}
    result = outcome.last
    pixels = np.asarray(Image.open(io.BytesIO(PNG)).convert("RGB"))
    reference = SamAutomaticMaskGenerator(tiny_sam, output_mode="coco_rle", **KEEP_ALL).generate(pixels)
    assert len(result["masks"]) == len(reference) == 192
    for mine, theirs in zip(result["masks"], reference):  # in the reference's order
        ours, its = masks.decode(mine["segmentation"]).astype(bool), masks.decode(theirs["segmentation"]).astype(bool)
        assert (ours & its).sum() >= 0.99 * (ours | its).sum()
        assert mine["score"] == pytest.approx(theirs["predicted_iou"], abs=1e-3)
        assert mine["point"] == pytest.approx(dict(zip("xy", theirs["point_coords"][0])), abs=0.01)
        assert mine["crop_box"] == theirs["crop_box"] and mine["area"] == theirs["area"]
    [record] = app.store.records()
    assert record["everything"] == KEEP_ALL and record["status"] == "finished"
    assert record["progress"]["total"] == 64


def test_polygons_when_asked(start_app):
    app = start_app()
    result = exchange(ws_url(app), {"image_url": DATA_URL, "everything": KEEP_ALL, "output": ["polygons"]}).last
    assert result["type"] == "result" and result["masks"]
    for mask in result["masks"]:
        assert "segmentation" not in mask and mask["polygons"] and mask["area"] > 0
        assert set(mask) >= {"bbox", "score", "stability_score", "point", "crop_box"}


def test_an_open_image_is_not_encoded_again(start_app, slow):
    model = slow()
    app = start_app(model=model)
    with open_session(ws_url(app)) as session:
        assert session.ask({"image_url": DATA_URL, "prompts": []})["type"] == "result"
        encoded = model.embeds
        result = session.ask({"image_sha256": SHA, "everything": {"points_per_side": 4}})
    assert result["type"] == "result" and result["cached_embedding"] is True
    assert model.embeds == encoded


def test_progress_comes_at_most_four_times_a_second_and_at_least_every_two_seconds(start_app, slow):
    app = start_app(model=slow(embed_s=2.6, decode_s=0.15))
    received = []
    with connect(ws_url(app), open_timeout=10, max_size=None) as ws:
        ws.send(json.dumps({"image_url": DATA_URL, "everything": {**KEEP_ALL, "points_per_side": 16}}))
        while not received or received[-1][1]["type"] not in ("result", "error"):
            message = json.loads(ws.recv(timeout=60))
            received.append((time.monotonic(), message))
    types = [message["type"] for _, message in received]
    assert types[-1] == "result", types
    since_status = received[types.index("status"):]
    gaps = [later - earlier for (earlier, _), (later, _) in zip(since_status, since_status[1:])]
    assert max(gaps) < 2.0, gaps  # while the encoder runs (2.6 s) too
    progress = [(at, m) for at, m in received if m["type"] == "progress"]
    # At most 4 a second: the server spaces them 0.25 s apart; their arrival here may jitter a little.
    assert min(later - earlier for (earlier, _), (later, _) in zip(progress, progress[1:])) >= 0.15
    assert len(progress) <= 4 * (progress[-1][0] - progress[0][0]) + 1
    done = [m["done"] for _, m in progress]
    assert done == sorted(done) and done[0] == 0 and max(done) > 0 and {m["total"] for _, m in progress} == {256}
    assert len(set(done[:2])) == 1, "the encoder's 2.6 s were said with an unchanged done"


@pytest.mark.parametrize("how", ["superseded", "closed"])
def test_a_superseding_request_or_a_closed_connection_stops_the_work_within_one_batch(start_app, slow, how):
    model = slow(hold_after=1)  # the second decoder batch (of 4) waits
    app = start_app(model=model)
    with open_session(ws_url(app)) as session:
        session.send({"keep_open": True, "image_url": DATA_URL, "everything": KEEP_ALL, "client_ref": "long"})
        assert model.held.wait(30)
        first = next(iter(app.store.records()))["id"]
        if how == "superseded":
            session.send({"keep_open": True, "image_sha256": SHA, "prompts": [], "client_ref": "next"})
            finals = {}
            while len(finals) < 1:
                message = session.next()
                if message["type"] in ("result", "error"):
                    finals[message["client_ref"]] = message
            assert finals["long"]["code"] == "superseded"
    assert wait_for(lambda: app.store.get(first)["status"] == jobs.INTERRUPTED)
    model.release.set()
    assert wait_for(lambda: all(jobs.is_terminal(record) for record in app.store.records()))
    time.sleep(0.5)
    assert model.decodes == 2, "the work went on after its record was interrupted"
    assert app.store.get(first)["status"] == jobs.INTERRUPTED and app.store.get_output(first) is None


@pytest.mark.parametrize(
    "request_, field",
    [
        ({"everything": {"points_per_batch": 8}}, "everything.points_per_batch"),
        ({"everything": {"brightness": 1}}, "everything.brightness"),
        ({"everything": {"points_per_side": 100}}, "everything.points_per_side"),
        ({"everything": {"crop_n_layers": -1}}, "everything.crop_n_layers"),
        ({"everything": {}, "boxes": [{"x": 0, "y": 0, "width": 5, "height": 5}]}, "exactly one of boxes, prompts and everything"),
        ({"everything": {"use_m2m": True}}, "everything.use_m2m is a SAM 2.1 parameter"),
    ],
)
def test_bad_parameters_are_an_invalid_request_naming_the_field(start_app, request_, field):
    app = start_app()
    outcome = exchange(ws_url(app), {"image_url": DATA_URL, **request_})
    assert outcome.last["type"] == "error" and outcome.last["code"] == "invalid_request"
    assert field in outcome.last["message"]
    assert all(jobs.is_terminal(record) for record in app.store.records())


def test_small_regions_are_removed_as_the_reference_removes_them(start_app, tiny_sam):
    app = start_app()
    sent = {**KEEP_ALL, "points_per_side": 4, "min_mask_region_area": 40}
    result = exchange(ws_url(app), {"image_url": DATA_URL, "everything": sent}).last
    pixels = np.asarray(Image.open(io.BytesIO(PNG)).convert("RGB"))
    reference = SamAutomaticMaskGenerator(tiny_sam, output_mode="coco_rle", **sent).generate(pixels)
    assert result["type"] == "result" and len(result["masks"]) == len(reference) == 48
    ours = sorted(masks.decode(m["segmentation"]).tobytes() for m in result["masks"])  # the order of ties may differ
    theirs = sorted(masks.decode(m["segmentation"]).tobytes() for m in reference)
    assert ours == theirs
