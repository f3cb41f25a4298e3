"""The work and output budget (docs/protocol.md, "Output budget"): a request's mask pixels checked
at admission, before the model runs; polygon vertices and result bytes capped while the masks are
made; a result too large for the store failed once, never claimed and run again; results' memory
counted in PIXEL_BUDGET_MB.

The socket tests run a real server with the tiny SAM behind a `ModelGate` that counts the model's
calls, and read images from the real local image server.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import types
import uuid

import numpy as np
import pytest
import torch

from harness import image_files
from harness.client import exchange, session as open_session
from harness.waiting import wait_for
from server import jobs, masks
from server.budget import PixelBudget
from server.clock import utcnow
from server.config import Settings
from server.errors import ClientError
from server.models.sam1 import SamModel
from server.output_budget import RESULT_MEMORY_PER_BYTE, OutputMeter, check_work, mask_pixels, reserve_delivery
from server.request_job import RequestJob
from server.store import ItemTooLarge
from server.store.sqlite import SQLiteStore
from server.wakeups import Bell
from tests.conftest import ModelGate, ws_url

POINTS = [{"x": 20, "y": 15, "label": 1}, {"x": 40, "y": 30, "label": 0}]
BOXES = [{"x": 2 + 4 * n, "y": 3, "width": 30, "height": 20} for n in range(4)]


class LimitedSQLiteStore(SQLiteStore):
    """A real SQLite store whose every string is capped at `max_length` bytes (SQLITE_LIMIT_LENGTH),
    as a full-size one is at 1 GB: the store that refuses a result too large to keep."""

    def __init__(self, path, max_length: int):
        self.max_length = max_length
        super().__init__(path)

    def _connect(self) -> sqlite3.Connection:
        db = super()._connect()
        db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, self.max_length)
        return db


@pytest.fixture
def counted(tiny_sam) -> ModelGate:
    """The tiny SAM with an embedding cache, counting its calls (the gate stays open)."""
    return ModelGate(SamModel(tiny_sam, "tiny", cache_size=8), opened=True)


def logits(count: int, size: int = 256, seed: int = 0) -> torch.Tensor:
    """`count` ragged low-resolution logit maps (one candidate each): masks with long boundaries."""
    return torch.from_numpy(np.random.default_rng(seed).normal(0, 1, (count, 1, size, size)).astype(np.float32))


def postprocess(width: int, height: int) -> masks.Postprocess:
    scale = 1024 / max(width, height)
    return masks.Postprocess(1024, (round(height * scale), round(width * scale)), (height, width))


def meter(**limits) -> OutputMeter:
    return OutputMeter(**{"max_bytes": 10**9, "max_vertices": 10**9, **limits})


# --- the work, at admission ---------------------------------------------------------------------


def test_mask_pixels_are_prompts_times_candidates_times_image_pixels():
    assert mask_pixels(8, False, 100, 50) == 8 * 5000
    assert mask_pixels(8, True, 100, 50) == 8 * 3 * 5000
    assert mask_pixels(0, True, 7300, 5480) == 0  # preparing an image costs no masks


def test_the_defaults_refuse_the_measured_attack_and_admit_a_labelling_request():
    limit = Settings().max_mask_pixels
    with pytest.raises(ClientError) as refused:  # 8 points, multimask, 40 Mpx: 73 s and 125 MB before
        check_work(8, True, 7300, 5480, limit)
    assert refused.value.code == "result_too_large" and refused.value.close_code == 1009
    assert "MAX_MASK_PIXELS" in refused.value.message and "960,096,000" in refused.value.message
    check_work(64, False, 1024, 768, limit)  # 64 boxes on a 1024x768 image
    check_work(16, False, 4000, 3000, limit)  # 16 boxes on a 12-megapixel photo


# --- vertices and bytes, while the masks are made -----------------------------------------------


def test_polygons_past_the_vertex_cap_are_left_out_and_the_mask_says_so():
    low_res, post = logits(3), postprocess(300, 200)
    whole = masks.wire_masks(low_res, torch.zeros(3, 1), post, [{}] * 3, False, ["rle", "polygons"])
    counts = [sum(len(ring) // 2 for ring in mask["polygons"]) for mask in whole]
    assert all(counts)
    capped = masks.wire_masks(
        low_res, torch.zeros(3, 1), post, [{}] * 3, False, ["rle", "polygons"], meter(max_vertices=counts[0] + counts[2])
    )
    assert capped[0]["polygons"] == whole[0]["polygons"] and "polygons_omitted" not in capped[0]
    assert capped[1]["polygons_omitted"] is True and "polygons" not in capped[1]
    assert capped[2]["polygons"] == whole[2]["polygons"]  # a later mask that still fits keeps its polygons
    assert [mask["segmentation"] for mask in capped] == [mask["segmentation"] for mask in whole]


def test_a_result_past_the_byte_cap_stops_at_the_mask_that_crosses_it():
    low_res, post = logits(8), postprocess(400, 300)
    [first] = masks.wire_masks(low_res[:1], torch.zeros(1, 1), post, [{}], False, ["rle", "polygons"])
    capped = meter(max_bytes=1)
    with pytest.raises(ClientError) as refused:
        masks.wire_masks(low_res, torch.zeros(8, 1), post, [{}] * 8, False, ["rle", "polygons"], capped)
    assert refused.value.code == "result_too_large" and "MAX_RESULT_BYTES" in refused.value.message
    # Stopped after the first mask, not after all eight: its bytes (and its comma) and its vertices only.
    assert capped.bytes == len(json.dumps(first, separators=(",", ":"))) + 1
    assert capped.vertices_left == 10**9 - sum(len(ring) // 2 for ring in first["polygons"])


def test_a_result_holds_its_memory_while_it_is_made_and_gives_it_back():
    budget = PixelBudget(10**9)
    held = OutputMeter(max_bytes=10**9, max_vertices=10**9, budget=budget)
    masks.wire_masks(logits(2), torch.zeros(2, 1), postprocess(300, 200), [{}] * 2, False, ["rle", "polygons"], held)
    assert held.bytes > 1000
    assert budget.used == held.bytes * RESULT_MEMORY_PER_BYTE
    held.release()
    assert budget.used == 0


def test_a_delivery_waits_for_memory_to_be_given_back_and_then_takes_it():
    budget = PixelBudget(1000 * RESULT_MEMORY_PER_BYTE)
    others = budget.reserve(900 * RESULT_MEMORY_PER_BYTE)
    record = {"resultBytes": 500}
    got = []
    waiter = threading.Thread(target=lambda: got.append(reserve_delivery(budget, record, wait=30)))
    waiter.start()
    time.sleep(0.3)
    assert not got  # 500 more would be past the budget: it waits
    others.release()
    waiter.join(10)
    assert got and budget.used == 500 * RESULT_MEMORY_PER_BYTE
    with got[0]:
        pass
    assert budget.used == 0
    # A result larger than the whole budget takes the whole budget, once it is free.
    with reserve_delivery(budget, {"resultBytes": 10**6}, wait=0):
        assert budget.used == budget.limit
    # A record from before results were counted, and a budget that stays spent.
    with reserve_delivery(budget, {"resultBytes": None}, wait=0), budget.reserve(budget.limit):
        started = time.monotonic()
        with pytest.raises(ClientError) as refused:
            reserve_delivery(budget, record, wait=0.2)
        assert refused.value.code == "queue_full" and time.monotonic() - started >= 0.2


def test_sqlite_refuses_a_result_over_its_length_limit_as_too_large_not_unavailable(tmp_path):
    store = LimitedSQLiteStore(tmp_path / "small.sqlite3", max_length=1000)
    output = {"id": "a", "masks": [{"counts": "x" * 2000}], "model": "tiny", "createdAt": "t", "timings": {}}
    with pytest.raises(ItemTooLarge):
        store.put_output(output)
    assert store.get_output("a") is None
    store.put_output({**output, "masks": []})  # the store itself still works
    assert store.get_output("a")["masks"] == []


# --- over the socket ----------------------------------------------------------------------------


def test_a_request_over_the_work_budget_is_refused_before_the_model_runs(start_app, image_server, counted):
    """The attack's shape, scaled down: 8 points with multimask, RLE and polygons, on a 1600x1200 image."""
    image_server.add("/budget-large.png", image_files.png_rgb(1600, 1200))
    app = start_app(model=counted, max_mask_pixels=20_000_000)  # 8 x 3 x 1.92 Mpx = 46 M
    points = [{"points": [{"x": 100 + 150 * n, "y": 600, "label": 1}]} for n in range(8)]
    request = {"image_url": image_server.url("/budget-large.png"), "prompts": points, "multimask": True,
               "output": ["rle", "polygons"]}
    started = time.monotonic()
    refused = exchange(ws_url(app), request, timeout=30)
    assert refused.types == ["error"], refused.types
    assert refused.last["code"] == "result_too_large" and refused.last["id"] is None
    assert "46,080,000" in refused.last["message"] and "MAX_MASK_PIXELS" in refused.last["message"]
    assert refused.close_code == 1009
    assert time.monotonic() - started < 10
    assert counted.calls == 0 and list(app.store.records()) == []  # never queued, never run

    # Within the budget, the same image runs; then by hash, over the budget, it is refused again.
    fits = exchange(ws_url(app), {**request, "prompts": points[:2], "multimask": False}, timeout=60)
    assert fits.types == ["queued", "status", "result"], fits.messages
    by_hash = {"image_sha256": fits.last["image"]["sha256"], "prompts": points, "multimask": True}
    assert exchange(ws_url(app), by_hash, timeout=30).last["code"] == "result_too_large"
    assert counted.calls == 1 and len(list(app.store.records())) == 1


def test_polygons_past_max_polygon_vertices_come_back_omitted_with_their_rle(start_app, image_server, counted):
    app = start_app(model=counted, max_polygon_vertices=1)
    request = {"image_url": image_server.url("/rgb.png"), "prompts": [{"box": box} for box in BOXES],
               "multimask": True, "output": ["rle", "polygons"]}
    capped = exchange(ws_url(app), request).last
    assert capped["type"] == "result", capped
    entries = [mask for group in capped["masks"] for mask in group]
    assert any(mask["area"] > 0 for mask in entries)
    for mask in entries:  # a ring has at least 4 vertices: no mask with pixels keeps its polygons
        if mask["area"] > 0:
            assert mask["polygons_omitted"] is True and "polygons" not in mask
        else:
            assert mask["polygons"] == [] and "polygons_omitted" not in mask
        assert "segmentation" in mask
    whole = exchange(ws_url(start_app(model=counted)), request).last
    assert [m["segmentation"] for g in whole["masks"] for m in g] == [m["segmentation"] for m in entries]


def test_a_result_past_max_result_bytes_fails_once_and_the_session_goes_on(start_app, image_server, counted):
    app = start_app(model=counted, max_result_bytes=100, lease_seconds=1, poll_interval=0.2)
    with open_session(ws_url(app)) as session:
        session.send({"keep_open": True, "image_url": image_server.url("/rgb.png"), "prompts": [{"box": BOXES[0]}]})
        answer = session.answer()
        error = answer[-1]
        assert error["type"] == "error" and error["code"] == "result_too_large", answer
        assert "MAX_RESULT_BYTES" in error["message"]
        time.sleep(2.5)  # past the lease: a record left processing would be claimed and run again
        record = app.store.get(error["id"])
        assert record["status"] == jobs.FAILED and record["error"]["code"] == "result_too_large"
        assert record["attempts"] == 1 and counted.calls == 1
        assert app.store.get_output(error["id"]) is None
        # The session goes on: a request with no masks has an empty result.
        prepared = session.ask({"image_sha256": record["imageSha256"], "prompts": []})
        assert prepared["type"] == "result" and prepared["masks"] == []
    assert wait_for(lambda: app.budget.used == 0)


def test_a_result_the_store_refuses_fails_the_first_time_and_the_model_runs_once(
    start_app, image_server, counted, tmp_path
):
    store = LimitedSQLiteStore(tmp_path / "limited.sqlite3", max_length=1500)
    app = start_app(model=counted, store=store, lease_seconds=1, poll_interval=0.2)
    request = {"image_url": image_server.url("/rgb.png"), "prompts": [{"box": box} for box in BOXES],
               "multimask": True, "output": ["rle", "polygons"]}
    started = time.monotonic()
    outcome = exchange(ws_url(app), request, timeout=30)
    assert outcome.last["type"] == "error" and outcome.last["code"] == "result_too_large", outcome.messages
    assert "larger than the store accepts" in outcome.last["message"]
    assert outcome.close_code == 1009 and time.monotonic() - started < 10
    time.sleep(2.5)  # past the lease: the old code claimed the record again and ran the model 3 times
    record = store.get(outcome.last["id"])
    assert record["status"] == jobs.FAILED and record["attempts"] == 1
    assert counted.calls == 1
    assert wait_for(lambda: app.budget.used == 0)


def test_a_result_handed_over_in_memory_is_sent_at_once_and_counted_until_sent(start_app, image_server, counted):
    """The masks already exist when the processor hands them over, with the reservation that counts them:
    waiting for budget would free nothing, so the result goes out at once, even with the budget spent."""
    app = start_app(model=counted)
    first = exchange(ws_url(app), {"image_url": image_server.url("/rgb.png"), "prompts": [{"box": BOXES[0]}]}).last
    assert first["type"] == "result"
    others = app.budget.reserve(app.budget.limit)  # decoded images of other requests fill the budget
    with open_session(ws_url(app)) as session:
        # By hash, with the embedding cached: no pixels, so the request is admitted; its result is made.
        session.send({"keep_open": True, "image_sha256": first["image"]["sha256"], "prompts": [{"box": BOXES[1]}]})
        answer = session.answer()
        assert [m["type"] for m in answer] == ["queued", "status", "result"], answer
        assert wait_for(lambda: app.store.get(answer[0]["id"])["status"] == jobs.FINISHED)
    assert wait_for(lambda: app.budget.used == app.budget.limit)  # the result's share given back; the others' held
    others.release()
    assert app.budget.used == 0


def test_a_result_read_back_from_the_store_waits_for_its_share_of_memory(tmp_path):
    """A result nobody handed over (its record was processed by another replica) is read back only once
    its share of the budget is free: the read would allocate it."""
    store = SQLiteStore(tmp_path / "cap.sqlite3")
    settings = Settings(sqlite_path=tmp_path / "cap.sqlite3", image_dir=tmp_path / "images", send_timeout=30)
    budget = PixelBudget(10**6)
    job_id = str(uuid.uuid4())
    record = jobs.new_record(job_id, now=utcnow(), image_url="https://example.test/a.png", image_sha256="0" * 64,
                             width=10, height=10, boxes=[{"x": 1, "y": 1, "width": 5, "height": 5}], multimask=False)
    store.insert(record)
    claimed = store.replace(jobs.claim(store.get(job_id), now=utcnow(), server_id="elsewhere", lease_seconds=60,
                                       max_attempts=3), etag=store.get(job_id)["_etag"])
    store.put_output({"id": job_id, "masks": [], "model": "vit_b", "createdAt": jobs.format_time(utcnow()),
                      "timings": {"encode_ms": 1.0, "decode_ms": 1.0, "rle_ms": 0.1}})
    processed = store.update(job_id, lambda r: jobs.mark_processed(r, now=utcnow(), result_bytes=50_000), current=claimed)
    intake = types.SimpleNamespace(store=store, settings=settings, budget=budget, handed_output=lambda job_id: None)
    job = RequestJob(intake, scope=None, bell=Bell(), client="websocket")  # type: ignore[arg-type]
    job.job_id = job_id
    others = budget.reserve(budget.limit)
    got: list[dict] = []

    def deliver() -> None:
        with job.delivery(processed):
            got.append(job.result(processed, sha256=True, client_ref=None)[0])

    waiter = threading.Thread(target=deliver)
    waiter.start()
    time.sleep(0.3)
    assert not got  # its 50,000 bytes' share is not free: not read yet
    others.release()
    waiter.join(10)
    assert got and got[0]["masks"] == [] and budget.used == 0
