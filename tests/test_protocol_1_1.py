"""Protocol 1.1 through a real server and real sockets: prompts, refinement, images by hash,
polygons, client_ref, and sessions with superseding (docs/protocol.md).

The model is the tiny SAM with random weights: the tests compare the server's
masks with the model's own answer for the same prompt, never with what a mask
"should" look like.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from harness import image_files
from harness.client import exchange, session as open_session
from harness.waiting import wait_for
from server import jobs, masks
from server.models.sam1 import SamModel
from server.prompts import Point, Prompt
from tests.conftest import ws_url
from tests.support.mask_shapes import filled, iou, rasterised

PNG = image_files.png_rgb(64, 48)
SHA = hashlib.sha256(PNG).hexdigest()
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
POINTS = [{"x": 20, "y": 15, "label": 1}, {"x": 40, "y": 30, "label": 0}]


def all_terminal(app) -> bool:
    return all(jobs.is_terminal(record) and not jobs.order_violations(record) for record in app.store.records())


def mask_of(answer: dict) -> np.ndarray:
    return masks.decode(answer["segmentation"]).astype(bool)


def test_points_box_and_both_come_back_in_order_with_their_prompts(start_app, tiny_sam):
    app = start_app()
    prompts = [
        {"box": {"x": 4, "y": 4, "width": 30, "height": 20}},
        {"points": POINTS},
        {"box": {"x": -10, "y": 2, "width": 40, "height": 30}, "points": POINTS[:1]},
    ]
    outcome = exchange(ws_url(app), {"image_url": DATA_URL, "prompts": prompts})
    assert outcome.types == ["queued", "status", "result"], outcome.messages
    result = outcome.last
    assert result["image"] == {"width": 64, "height": 48, "sha256": SHA}
    assert [mask["prompt"] for mask in result["masks"]] == [
        prompts[0], prompts[1], {"box": {"x": 0.0, "y": 2.0, "width": 30.0, "height": 30.0}, "points": POINTS[:1]},
    ]
    # Each mask is the model's own answer for that prompt alone, through the same arithmetic.
    model = SamModel(tiny_sam, "tiny")
    pixels = np.asarray(Image.open(io.BytesIO(PNG)).convert("RGB"))
    alone = model.segment(pixels, [Prompt(points=(Point(20, 15, 1), Point(40, 30, 0)))], False)
    wire = masks.wire_masks(alone.low_res, alone.scores, alone.postprocess, [{}], False)[0]
    assert result["masks"][1]["segmentation"] == wire["segmentation"]
    assert result["masks"][1]["score"] == wire["score"]
    assert all_terminal(app)


def test_a_record_keeps_the_prompts_and_the_boxes_of_those_that_have_one(start_app):
    app = start_app()
    exchange(ws_url(app), {"image_url": DATA_URL, "prompts": [{"points": POINTS}, {"box": {"x": 1, "y": 1, "width": 9, "height": 9}}], "output": ["polygons"]})
    [record] = list(app.store.records())
    assert record["prompts"] == [{"points": POINTS}, {"box": {"x": 1.0, "y": 1.0, "width": 9.0, "height": 9.0}}]
    assert record["boxes"] == [{"x": 1.0, "y": 1.0, "width": 9.0, "height": 9.0}]
    assert record["output"] == ["polygons"]
    v1 = exchange(ws_url(app), {"image_url": DATA_URL, "boxes": [{"x": 1, "y": 1, "width": 9, "height": 9}]})
    assert "prompt" not in v1.last["masks"][0] and v1.last["masks"][0]["box"] == {"x": 1.0, "y": 1.0, "width": 9.0, "height": 9.0}
    assert app.store.get(v1.last["id"])["prompts"] is None


def test_an_image_by_hash_reads_nothing_when_its_embedding_is_cached(start_app, image_server):
    image_server.add("/by-hash.png", PNG)
    app = start_app()
    first = exchange(ws_url(app), {"image_url": image_server.url("/by-hash.png"), "prompts": []})
    assert first.last["masks"] == [] and first.last["image"]["sha256"] == SHA  # prepared
    hits = image_server.hits["/by-hash.png"]
    second = exchange(ws_url(app), {"image_sha256": SHA, "prompts": [{"points": POINTS[:1]}]})
    assert second.types == ["queued", "status", "result"], second.messages
    assert second.last["cached_embedding"] is True and len(second.last["masks"]) == 1
    assert image_server.hits["/by-hash.png"] == hits  # not fetched again
    record = app.store.get(second.last["id"])
    assert record["imageSha256"] == SHA and record["imageUrl"] == image_server.url("/by-hash.png")


def test_an_image_by_hash_after_a_restart_comes_from_its_saved_file(start_app, tmp_path):
    first_app = start_app()
    exchange(ws_url(first_app), {"image_url": DATA_URL, "prompts": []})
    first_app.stop()
    again = start_app()  # same SQLite file and IMAGE_DIR, an empty embedding cache
    outcome = exchange(ws_url(again), {"image_sha256": SHA, "prompts": [{"points": POINTS}]})
    assert outcome.last["type"] == "result" and outcome.last["cached_embedding"] is False
    assert again.store.get(outcome.last["id"])["imageUrl"] == f"sha256:{SHA}"  # inline: only its hash names it


def test_an_unknown_image_hash_is_image_unknown(start_app):
    app = start_app()
    outcome = exchange(ws_url(app), {"image_sha256": "f" * 64, "prompts": []})
    assert outcome.types == ["error"] and outcome.last["code"] == "image_unknown" and outcome.close_code == 1008
    assert "image_url" in outcome.last["message"]


def test_mask_input_refines_an_earlier_mask_and_bad_references_are_refused(start_app):
    app = start_app()
    with open_session(ws_url(app)) as session:
        plain = session.ask({"image_url": DATA_URL, "prompts": [{"points": POINTS[:1]}]})
        several = session.ask({"image_sha256": SHA, "prompts": [{"points": POINTS[:1]}], "multimask": True})
        refined = session.ask({"image_sha256": SHA, "prompts": [{"points": POINTS, "mask_input": {"id": plain["id"], "index": 0}}]})
        assert refined["type"] == "result", refined
        assert refined["masks"][0]["prompt"]["mask_input"] == {"id": plain["id"], "index": 0}
        from_candidate = session.ask({"image_sha256": SHA, "prompts": [
            {"points": POINTS, "mask_input": {"id": several["id"], "index": 0, "candidate": 2}}]})
        assert from_candidate["type"] == "result"
        cases = [
            ({"id": plain["id"], "index": 1}, "invalid_request", "has 1 masks"),
            ({"id": plain["id"], "index": 0, "candidate": 1}, "invalid_request", "not multimask"),
            ({"id": several["id"], "index": 0}, "invalid_request", "needs a candidate"),
            ({"id": several["id"], "index": 0, "candidate": 3}, "invalid_request", "3 candidates"),
            ({"id": "no-such-result", "index": 0}, "mask_unknown", "no longer keeps"),
        ]
        for ref, code, words in cases:
            error = session.ask({"image_sha256": SHA, "prompts": [{"points": POINTS, "mask_input": ref}]})
            assert error["type"] == "error" and error["code"] == code and words in error["message"], (ref, error)
        other = session.ask({"image_url": "data:image/png;base64," + base64.b64encode(image_files.png_rgb(50, 40)).decode(),
                             "prompts": [{"points": POINTS[:1], "mask_input": {"id": plain["id"], "index": 0}}]})
        assert other["code"] == "invalid_request" and "another image" in other["message"]
    assert wait_for(lambda: all_terminal(app))


def test_the_logits_a_mask_input_names_reach_the_model(start_app, tiny_sam):
    """A refined mask is the model's own answer for its prompt with the earlier mask's logits, which differs
    from its answer without them: the server hands the logits it kept to the model."""
    model = SamModel(tiny_sam, "tiny")
    pixels = np.asarray(Image.open(io.BytesIO(PNG)).convert("RGB"))
    earlier = model.segment(pixels, [Prompt(points=(Point(20, 15, 1),))], False)
    expected = {}
    for name, logits in (("with", earlier.mask_input(0)), ("without", None)):
        alone = model.segment(pixels, [Prompt(points=(Point(20, 15, 1), Point(40, 30, 0)), mask_input=logits)], False)
        expected[name] = masks.wire_masks(alone.low_res, alone.scores, alone.postprocess, [{}], False)[0]
    assert expected["with"] != expected["without"], "the tiny model ignores a mask input: this test would prove nothing"
    app = start_app()
    with open_session(ws_url(app)) as session:
        plain = session.ask({"image_url": DATA_URL, "prompts": [{"points": POINTS[:1]}]})
        refined = session.ask({"image_sha256": SHA, "prompts": [{"points": POINTS, "mask_input": {"id": plain["id"], "index": 0}}]})
    assert refined["type"] == "result", refined
    assert refined["masks"][0]["score"] == expected["with"]["score"]
    assert refined["masks"][0]["segmentation"] == expected["with"]["segmentation"]


def test_polygons_cover_the_mask_and_polygons_alone_leave_out_the_rle(start_app):
    app = start_app()
    both = exchange(ws_url(app), {"image_url": DATA_URL, "prompts": [{"points": POINTS}], "output": ["rle", "polygons"]}).last
    only = exchange(ws_url(app), {"image_sha256": SHA, "prompts": [{"points": POINTS}], "output": ["polygons"]}).last
    answer = both["masks"][0]
    assert set(only["masks"][0]) == {"prompt", "score", "area", "bbox", "polygons"}
    assert only["masks"][0]["polygons"] == answer["polygons"]
    mask = mask_of(answer)
    for ring in answer["polygons"]:
        assert len(ring) >= 6 and all(0 <= v <= (64 if i % 2 == 0 else 48) for i, v in enumerate(ring))
    assert iou(rasterised(answer["polygons"], 48, 64), filled(mask)) >= 0.9


@pytest.mark.parametrize(
    "request_, words",
    [
        ({"image_url": DATA_URL, "prompts": [{"points": [{"x": 65, "y": 1, "label": 1}]}]}, "prompts[0].points[0]"),
        ({"image_url": DATA_URL, "prompts": [{"points": [{"x": 5, "y": 1, "label": 3}]}]}, "label"),
        ({"image_url": DATA_URL, "prompts": [{}]}, "neither a box nor a point"),
        ({"image_url": DATA_URL, "prompts": [], "boxes": [{"x": 1, "y": 1, "width": 2, "height": 2}]}, "exactly one of boxes, prompts and everything"),
        ({"image_url": DATA_URL, "image_sha256": SHA, "prompts": []}, "exactly one of image_url and image_sha256"),
    ],
)
def test_bad_1_1_requests_get_invalid_request_naming_the_prompt(start_app, request_, words):
    app = start_app()
    outcome = exchange(ws_url(app), request_)
    assert outcome.types == ["error"] and outcome.last["code"] == "invalid_request" and words in outcome.last["message"]
    assert list(app.store.records()) == []


def test_client_ref_is_echoed_in_every_message_about_its_request(start_app):
    app = start_app()
    ok = exchange(ws_url(app), {"image_url": DATA_URL, "prompts": [], "client_ref": "page-3"})
    assert [m["client_ref"] for m in ok.messages] == ["page-3"] * 3
    refused = exchange(ws_url(app), {"image_url": DATA_URL, "prompts": [{}], "client_ref": "page-4"})
    assert refused.last["client_ref"] == "page-4"


# --- sessions ---------------------------------------------------------------------------------


def test_a_session_carries_many_requests_each_with_its_own_record(start_app):
    app = start_app()
    with open_session(ws_url(app)) as session:
        ids = [session.ask({"image_url": DATA_URL, "prompts": []})["id"]]
        for _ in range(3):
            answer = session.ask({"image_sha256": SHA, "prompts": [{"points": POINTS[:1]}]})
            assert answer["type"] == "result" and answer["cached_embedding"] is True
            ids.append(answer["id"])
        error = session.ask({"image_sha256": SHA, "prompts": [{}]})  # one request's error: the session goes on
        assert error["code"] == "invalid_request"
        session.ws.send("{not json")
        assert session.answer()[-1]["code"] == "invalid_json"
        session.send({"image_sha256": SHA, "prompts": []})  # no keep_open: answered, then closed
        assert session.answer()[-1]["type"] == "result"
        assert session.closed() == (1000, "")
    assert len(set(ids)) == 4
    assert [app.store.get(i)["status"] for i in ids] == ["finished"] * 4


def test_a_second_message_without_a_session_keeps_protocol_1s_rule(start_app, gate):
    app = start_app(model=gate)
    with open_session(ws_url(app)) as session:
        session.send({"image_url": DATA_URL, "prompts": []})
        assert session.next()["type"] == "queued"
        session.send({"image_sha256": SHA, "prompts": []})
        messages = session.answer()
        assert messages[-1]["code"] == "invalid_request" and "keep_open" in messages[-1]["message"]
        assert session.closed()[0] == 1008
    gate.opened.set()
    assert wait_for(lambda: all_terminal(app))


def test_an_idle_session_is_closed_with_1000_idle_and_no_message(start_app):
    app = start_app(session_idle_seconds=0.5)
    with open_session(ws_url(app)) as session:
        assert session.ask({"image_url": DATA_URL, "prompts": []})["type"] == "result"
        started = time.monotonic()
        assert session.closed() == (1000, "idle")
        assert 0.4 < time.monotonic() - started < 3
    assert wait_for(lambda: app.connections == 0)


def test_ten_requests_20_ms_apart_give_one_result_and_nine_superseded(start_app, gate):
    app = start_app(model=gate)
    gate.opened.set()
    with open_session(ws_url(app)) as session:
        assert session.ask({"image_url": DATA_URL, "prompts": []})["type"] == "result"
        gate.opened.clear()  # the next request is held in the model while the others arrive
        for n in range(10):
            session.send({"keep_open": True, "image_sha256": SHA, "prompts": [{"points": POINTS[:1]}], "client_ref": f"c{n}"})
            time.sleep(0.02)
        finals: dict[str, dict] = {}
        while len(finals) < 9:
            message = session.next()
            if message["type"] in ("result", "error"):
                finals[message["client_ref"]] = message
        gate.opened.set()
        while len(finals) < 10:
            message = session.next()
            if message["type"] in ("result", "error"):
                finals[message["client_ref"]] = message
    assert [finals[f"c{n}"]["code"] for n in range(9)] == ["superseded"] * 9
    assert finals["c9"]["type"] == "result"
    assert wait_for(lambda: all_terminal(app))
    statuses = sorted(record["status"] for record in app.store.records())
    assert statuses.count("finished") == 2 and statuses.count("interrupted") == 9


# --- images by hash across replicas ------------------------------------------------------------


def test_an_image_by_hash_across_two_replicas_is_fetched_again_left_or_unknown(start_app, gate, image_server, tmp_path):
    """Two servers on one SQLite file, each with its own IMAGE_DIR and embedding cache."""
    from server.store.sqlite import SQLiteStore
    from tests.support.watched_store import WatchedStore


    image_server.add("/shared.png", image_files.png_rgb(40, 30))
    shared_sha = hashlib.sha256(image_files.png_rgb(40, 30)).hexdigest()
    a = start_app(model=gate, store=SQLiteStore(tmp_path / "cap.sqlite3"))
    b_store = WatchedStore(tmp_path / "cap.sqlite3")
    b = start_app(store=b_store, image_dir=tmp_path / "b-images", poll_interval=0.1)
    gate.opened.set()
    assert exchange(ws_url(a), {"image_url": image_server.url("/shared.png"), "prompts": []}).last["type"] == "result"
    assert exchange(ws_url(a), {"image_url": DATA_URL, "prompts": []}).last["type"] == "result"

    # Brought by an http URL: the replica without it fetches it again, through the same guard.
    hits = image_server.hits["/shared.png"]
    fetched = exchange(ws_url(b), {"image_sha256": shared_sha, "prompts": [{"points": POINTS[:1]}]}, timeout=30)
    assert fetched.last["type"] == "result" and image_server.hits["/shared.png"] == hits + 1

    # Sent inline to A: B cannot fetch it, and says so at once.
    unknown = exchange(ws_url(b), {"image_sha256": SHA, "prompts": []}, timeout=30)
    assert unknown.last["code"] == "image_unknown" and "inline" in unknown.last["message"]

    # Asked of A while A's model is busy: B's processor sees the record and leaves it to A.
    gate.opened.clear()
    gate.entered.clear()
    held = threading.Thread(target=lambda: exchange(ws_url(a), {"image_url": DATA_URL, "boxes": [{"x": 1, "y": 1, "width": 9, "height": 9}]}))
    held.start()
    assert gate.entered.wait(10)
    outcome: list = []
    by_hash = threading.Thread(target=lambda: outcome.append(exchange(ws_url(a), {"image_sha256": SHA, "prompts": [{"points": POINTS[:1]}]}, timeout=30)))
    by_hash.start()
    assert wait_for(lambda: a.store.count_queued() == 1)
    seen = b_store.saw_queued
    assert wait_for(lambda: b_store.saw_queued >= seen + 3)  # three of B's polls found it
    assert a.store.count_queued() == 1, "B took a record whose image it does not have"
    gate.opened.set()
    held.join(30)
    by_hash.join(30)
    assert outcome[0].last["type"] == "result"
    assert {r["serverId"] for r in a.store.records() if r["imageSha256"] == SHA and r["status"] == "finished"} == {a.server_id}
    assert wait_for(lambda: all_terminal(a))


@pytest.mark.slow  # waits out the 2 s affinity
def test_a_click_is_left_to_the_replica_holding_its_embedding_until_it_proves_busy(start_app, tiny_sam, image_server, tmp_path):
    """Affinity: B leaves A's click to A for AFFINITY_SECONDS, then takes it (A still busy), fetching the image again."""
    from server import claims
    from server.store.sqlite import SQLiteStore
    from tests.conftest import ModelGate

    gate = ModelGate(SamModel(tiny_sam, "tiny", cache_size=4))
    image_server.add("/affinity.png", image_files.png_rgb(40, 30))
    sha = hashlib.sha256(image_files.png_rgb(40, 30)).hexdigest()
    a = start_app(model=gate, store=SQLiteStore(tmp_path / "cap.sqlite3"))
    b = start_app(store=SQLiteStore(tmp_path / "cap.sqlite3"), image_dir=tmp_path / "b-images", poll_interval=0.1)
    gate.opened.set()
    assert exchange(ws_url(a), {"image_url": image_server.url("/affinity.png"), "prompts": []}).last["type"] == "result"
    gate.opened.clear()
    gate.entered.clear()
    held = threading.Thread(target=lambda: exchange(ws_url(a), {"image_url": DATA_URL, "prompts": []}, timeout=60))
    held.start()
    assert gate.entered.wait(10)  # A's model is busy
    started = time.monotonic()
    click = exchange(ws_url(a), {"image_sha256": sha, "prompts": [{"points": [{"x": 5, "y": 5, "label": 1}]}]}, timeout=30)
    waited = time.monotonic() - started
    assert click.last["type"] == "result", click.messages
    record = a.store.get(click.last["id"])
    assert record["preferredServer"] == a.server_id and record["serverId"] == b.server_id
    assert waited >= claims.AFFINITY_SECONDS, f"B took A's click after {waited:.2f} s"
    gate.opened.set()
    held.join(30)
    assert wait_for(lambda: all_terminal(a))
