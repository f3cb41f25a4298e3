"""End to end: a real server, a real image HTTP server, a real WebSocket client.

The model is the tiny real SAM (random weights): these tests check shapes,
encoding, orientation, lifecycle and errors, never mask quality.
"""

import json
import math
import threading

import numpy as np
import pytest
from websockets.sync.client import connect

from harness import image_files
from harness.client import exchange
from harness.waiting import wait_for
from server import image_layout, masks
from server.models.sam1 import SamModel
from server.store.sqlite import SQLiteStore
from tests.conftest import ModelGate, processor_is_waiting, ws_url


def box(x, y, width, height):
    return {"x": x, "y": y, "width": width, "height": height}


def request_for(url, *boxes, **extra):
    return {"image_url": url, "boxes": list(boxes) or [box(4, 4, 20, 20)], **extra}


def assert_result(outcome, width, height, count, multimask=False):
    assert outcome.types == ["queued", "status", "result"], outcome.messages
    queued, status, result = outcome.messages
    assert queued["position"] >= 1 and queued["id"] == status["id"] == result["id"]
    assert status["status"] == "processing"
    assert outcome.close_code == 1000
    assert result["image"] == {"width": width, "height": height}  # protocol 1: exactly as before
    assert len(result["masks"]) == count
    for answer in result["masks"]:
        for mask in answer if multimask else [answer]:
            assert mask["segmentation"]["size"] == [height, width]
            decoded = masks.decode(mask["segmentation"])
            assert decoded.shape == (height, width)
            assert int(decoded.sum()) == mask["area"]
            assert type(mask["score"]) is float and math.isfinite(mask["score"])
            assert mask["score"] == round(mask["score"], 4)  # four decimals on the wire
    assert set(result["timings"]) == {"queue_ms", "download_ms", "encode_ms", "decode_ms", "rle_ms", "total_ms"}
    assert isinstance(result["cached_embedding"], bool)
    return result


def test_one_box_end_to_end(start_app, image_server):
    app = start_app()
    outcome = exchange(ws_url(app), request_for(image_server.url("/rgb.png"), box(4, 4, 20, 20)))
    result = assert_result(outcome, 64, 48, 1)
    assert result["masks"][0]["box"] == box(4.0, 4.0, 20.0, 20.0)

    job_id = result["id"]
    record = app.store.get(job_id)
    assert record["status"] == "finished" and record["finished"] is not None
    assert record["imageUrl"] == image_server.url("/rgb.png") and len(record["imageSha256"]) == 64
    assert (record["width"], record["height"], record["attempts"]) == (64, 48, 1)
    assert app.store.get_output(job_id)["masks"] == result["masks"]
    # The processor keeps the image's file just after it hands the result over.
    assert wait_for(lambda: image_layout.find(app.settings.image_dir, record["imageSha256"]) == image_layout.kept_path(
        app.settings.image_dir, record["imageSha256"]
    ))


class OutputReadsCounted(SQLiteStore):
    """A real SQLite store that counts reads of SAMOutput."""

    output_reads = 0

    def get_output(self, job_id):
        self.output_reads += 1
        return super().get_output(job_id)


def test_a_result_reaches_its_connection_in_memory_not_read_back_from_the_store(start_app, image_server, tmp_path):
    """The processor hands the SAMOutput item it stored to the waiting connection: the store is written once
    and not read back, and what the client gets is what the store holds."""
    store = OutputReadsCounted(tmp_path / "counted.sqlite3")
    app = start_app(store=store)
    result = assert_result(exchange(ws_url(app), request_for(image_server.url("/rgb.png"), box(4, 4, 20, 20))), 64, 48, 1)
    assert store.output_reads == 0
    assert store.get_output(result["id"])["masks"] == result["masks"]
    assert store.output_reads == 1
    assert wait_for(lambda: app.budget.used == 0)  # the result's memory, handed over with it, was given back


def test_a_result_handed_over_in_memory_stays_counted_in_the_budget_until_it_is_sent(start_app, image_server):
    """The processor's reservation for the masks it made travels with them: while the connection holds a
    result it has not sent, the pixel budget counts it, and gives it back once sent."""
    app = start_app()
    seen: list[int] = []
    original = app.intake.handed_output

    def handed_output(job_id):
        handed = original(job_id)
        seen.append(app.budget.used)  # the result is handed over: its memory still counted
        return handed

    app.intake.handed_output = handed_output
    result = assert_result(exchange(ws_url(app), request_for(image_server.url("/rgb.png"), box(4, 4, 20, 20))), 64, 48, 1)
    assert seen and seen[0] >= len(json.dumps(result["masks"])) and wait_for(lambda: app.budget.used == 0)


def test_sixteen_boxes(start_app, image_server):
    app = start_app()
    boxes = [box(2 * i, i, 10 + i, 8) for i in range(16)]
    result = assert_result(exchange(ws_url(app), request_for(image_server.url("/photo.jpg"), *boxes)), 320, 240, 16)
    assert [m["box"] for m in result["masks"]] == [{k: float(v) for k, v in b.items()} for b in boxes]
    assert image_layout.find(app.settings.image_dir, app.store.get(result["id"])["imageSha256"]) is not None


def test_multimask_gives_three_masks_per_box(start_app, image_server):
    app = start_app()
    outcome = exchange(ws_url(app), request_for(image_server.url("/rgb.png"), box(0, 0, 9, 9), box(9, 9, 9, 9), multimask=True))
    result = assert_result(outcome, 64, 48, 2, multimask=True)
    assert [len(group) for group in result["masks"]] == [3, 3]


def test_boxes_are_clipped_to_the_image(start_app, image_server):
    app = start_app()
    outcome = exchange(ws_url(app), request_for(image_server.url("/rgb.png"), box(-10, 40, 30, 30)))
    assert assert_result(outcome, 64, 48, 1)["masks"][0]["box"] == box(0.0, 40.0, 20.0, 8.0)


def test_a_box_wholly_outside_the_image_is_refused_before_queueing(start_app, image_server):
    app = start_app()
    outcome = exchange(ws_url(app), request_for(image_server.url("/rgb.png"), box(1, 1, 5, 5), box(64, 0, 5, 5)))
    assert outcome.types == ["error"] and outcome.last["code"] == "invalid_request"
    assert "boxes[1]" in outcome.last["message"] and outcome.close_code == 1008
    assert list(app.store.records()) == []


def test_exif_orientation_is_applied_before_boxes(start_app, image_server, gate):
    """Stored 64 wide and 32 tall with Orientation 6: displayed 32 wide and 64 tall."""
    gate.opened.set()
    app = start_app(model=gate)
    image_server.add("/exif.jpg", image_files.jpeg_exif_rotated(64, 32), content_type="image/jpeg")
    # y 40..60 exists only in the displayed orientation.
    outcome = exchange(ws_url(app), request_for(image_server.url("/exif.jpg"), box(2, 40, 20, 20)))
    assert_result(outcome, 32, 64, 1)
    [seen] = gate.pixels_seen
    assert seen.shape == (64, 32, 3)
    assert seen[:28, :12].min() > 200 and seen[40:, 20:].max() < 90  # white block at the displayed top-left


@pytest.mark.parametrize(
    "name, make",
    [
        ("rgba.png", lambda: image_files.png_rgba(40, 30)),
        ("gray.png", lambda: image_files.png_gray(40, 30)),
        ("cmyk.jpg", lambda: image_files.jpeg_cmyk(40, 30)),
        ("gray16.png", lambda: image_files.png_gray16(40, 30)),
    ],
)
def test_image_modes(start_app, image_server, gate, name, make):
    gate.opened.set()
    app = start_app(model=gate)
    image_server.add(f"/modes/{name}", make())
    assert_result(exchange(ws_url(app), request_for(image_server.url(f"/modes/{name}"), box(1, 1, 30, 20))), 40, 30, 1)
    [seen] = gate.pixels_seen
    assert seen.shape == (30, 40, 3) and seen.dtype == np.uint8


@pytest.mark.parametrize(
    "path, body, content_type, code, close_code",
    [
        ("/bad/truncated.jpg", image_files.truncated_jpeg(64, 48), "image/jpeg", "unsupported_image", 1008),
        ("/bad/page.png", image_files.html_page(), "text/html", "unsupported_image", 1008),
        ("/bad/bomb.png", image_files.png_bomb(20000), "image/png", "image_too_large", 1009),
    ],
)
def test_bad_images_get_typed_errors(start_app, image_server, path, body, content_type, code, close_code):
    app = start_app(max_image_pixels=10_000_000)
    image_server.add(path, body, content_type=content_type)
    outcome = exchange(ws_url(app), request_for(image_server.url(path)))
    assert outcome.types == ["error"] and outcome.last["code"] == code, outcome.messages
    assert outcome.last["id"] is None and outcome.close_code == close_code
    assert list(app.store.records()) == []


def test_a_missing_image_is_image_download_failed(start_app, image_server):
    app = start_app()
    outcome = exchange(ws_url(app), request_for(image_server.url("/no/such/image.png")))
    assert outcome.last["code"] == "image_download_failed" and "404" in outcome.last["message"]
    assert outcome.close_code == 1008


def test_an_image_over_max_image_bytes_is_image_too_large(start_app, image_server):
    app = start_app(max_image_bytes=1000)
    outcome = exchange(ws_url(app), request_for(image_server.url("/photo.jpg")))
    assert outcome.last["code"] == "image_too_large" and outcome.close_code == 1009


def test_invalid_json_and_invalid_requests(start_app):
    app = start_app()
    outcome = exchange(ws_url(app), "{not json")
    assert (outcome.last["code"], outcome.close_code) == ("invalid_json", 1008)
    outcome = exchange(ws_url(app), {"image_url": "http://x/a.png", "boxes": [box(0, 0, 1, 1)], "multimask": 1})
    assert (outcome.last["code"], outcome.close_code) == ("invalid_request", 1008)
    outcome = exchange(ws_url(app), b"\x00binary")
    assert (outcome.last["code"], outcome.close_code) == ("invalid_request", 1008)


def test_a_message_over_the_limit_gets_a_typed_error(start_app):
    app = start_app(max_message_bytes=2000)
    outcome = exchange(ws_url(app), json.dumps(request_for("http://x/" + "a" * 3000)))
    assert outcome.types == ["error"] and outcome.last["code"] == "message_too_large"
    assert outcome.close_code == 1009


def test_a_client_that_sends_nothing_is_told_and_dropped(start_app):
    app = start_app(request_timeout=0.5)
    with connect(ws_url(app)) as ws:
        error = json.loads(ws.recv(timeout=10))
        assert error["code"] == "invalid_request" and "0.5 s" in error["message"]


def test_a_second_message_is_invalid_request_and_the_record_ends(start_app, image_server, gate):
    app = start_app(model=gate)
    with connect(ws_url(app)) as ws:
        ws.send(json.dumps(request_for(image_server.url("/rgb.png"))))
        queued = json.loads(ws.recv(timeout=10))
        assert gate.entered.wait(10)  # claimed: `status` is on its way, so the error comes second, not by chance
        ws.send("another")
        messages = [json.loads(ws.recv(timeout=10)) for _ in range(2)]
    error = messages[-1]
    assert error["type"] == "error" and error["code"] == "invalid_request" and error["id"] == queued["id"]
    gate.opened.set()
    assert wait_for(lambda: app.store.get(queued["id"])["status"] == "interrupted")


def test_queue_full_refuses_past_max_queue(start_app, image_server, gate):
    app = start_app(model=gate, max_queue=1)
    url = ws_url(app)
    request = request_for(image_server.url("/rgb.png"))
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", exchange(url, request)))
    first.start()
    assert gate.entered.wait(10)  # the first request is being processed, not queued
    second = threading.Thread(target=lambda: results.setdefault("second", exchange(url, request)))
    second.start()
    assert wait_for(lambda: app.store.count_queued() == 1)
    third = exchange(url, request)
    assert third.types == ["error"] and third.last["code"] == "queue_full" and third.close_code == 1013
    gate.opened.set()
    first.join(30)
    second.join(30)
    assert results["first"].types == results["second"].types == ["queued", "status", "result"]
    assert results["second"].messages[0]["position"] == 1


class QueueCounts(SQLiteStore):
    """A real SQLite store that counts how often the queue is counted."""

    counts = 0

    def count_queued(self):
        self.counts += 1
        return super().count_queued()


def test_a_click_on_a_cached_image_counts_the_queue_once_and_a_full_queue_still_refuses_it(
    start_app, image_server, tiny_sam, tmp_path
):
    """An image by its hash whose embedding is cached costs nothing to read, so it is not refused early: the
    queue is counted once, at admission, which still refuses it past MAX_QUEUE. An image to download is
    refused before it is read (two counts)."""
    store = QueueCounts(tmp_path / "counted.sqlite3")
    model = ModelGate(SamModel(tiny_sam, "tiny", cache_size=8), opened=True)
    app = start_app(model=model, store=store, max_queue=1)
    url = ws_url(app)
    first = exchange(url, {"image_url": image_server.url("/rgb.png"), "prompts": [{"box": box(4, 4, 20, 20)}]}).last
    click = {"image_sha256": first["image"]["sha256"], "prompts": [{"points": [{"x": 10, "y": 10, "label": 1}]}]}
    store.counts = 0
    assert exchange(url, click).types == ["queued", "status", "result"] and store.counts == 1
    store.counts = 0
    assert exchange(url, request_for(image_server.url("/photo.jpg"))).types[-1] == "result" and store.counts == 2

    model.opened.clear()
    model.entered.clear()
    outcomes = {}
    busy = threading.Thread(target=lambda: outcomes.setdefault("busy", exchange(url, request_for(image_server.url("/rgb.png")))))
    busy.start()
    assert model.entered.wait(10)  # being processed, not queued
    waiting = threading.Thread(target=lambda: outcomes.setdefault("waiting", exchange(url, click)))
    waiting.start()
    assert wait_for(lambda: app.store.count_queued() == 1)
    refused = exchange(url, click)
    assert refused.types == ["error"] and refused.last["code"] == "queue_full"
    model.opened.set()
    busy.join(30)
    waiting.join(30)
    assert outcomes["busy"].types[-1] == outcomes["waiting"].types[-1] == "result"


def test_disconnect_mid_processing_leaves_the_record_interrupted(start_app, image_server, gate):
    app = start_app(model=gate)
    with connect(ws_url(app)) as ws:
        ws.send(json.dumps(request_for(image_server.url("/rgb.png"))))
        job_id = json.loads(ws.recv(timeout=10))["id"]
        assert json.loads(ws.recv(timeout=10))["status"] == "processing"
        assert gate.entered.is_set()
    assert wait_for(lambda: app.store.get(job_id)["status"] == "interrupted")
    gate.opened.set()  # the processor finishes the job it holds...
    assert wait_for(lambda: app.store.get_output(job_id) is not None)
    # One request after it: the processor works in order, so when that one is answered it is done with the first.
    assert exchange(ws_url(app), request_for(image_server.url("/photo.jpg"))).types == ["queued", "status", "result"]
    record = app.store.get(job_id)
    assert record["status"] == "interrupted" and record["processed"] is None and record["finished"] is None


def test_a_record_interrupted_while_queued_is_never_processed(start_app, image_server, gate):
    app = start_app(model=gate)
    url = ws_url(app)
    holder = threading.Thread(target=exchange, args=(url, request_for(image_server.url("/rgb.png"))))
    holder.start()
    assert gate.entered.wait(10)  # the processor is busy with the first job
    with connect(url) as ws:
        ws.send(json.dumps(request_for(image_server.url("/photo.jpg"))))
        queued = json.loads(ws.recv(timeout=10))
        assert queued["type"] == "queued"
    assert wait_for(lambda: app.store.get(queued["id"])["status"] == "interrupted")
    gate.opened.set()
    holder.join(30)
    # A later request is answered only after the processor has passed the interrupted one by.
    assert exchange(url, request_for(image_server.url("/rgb.png"))).types == ["queued", "status", "result"]
    assert gate.calls == 2  # the first request and the later one: never the interrupted record
    record = app.store.get(queued["id"])
    assert record["status"] == "interrupted" and record["processing"] is None


def test_twenty_concurrent_clients_all_get_their_own_results(start_app, image_server):
    app = start_app()
    url = ws_url(app)
    outcomes = [None] * 20

    def client(index):
        boxes = [box(index, index, 10, 10 + index)] * (1 + index % 3)
        outcomes[index] = exchange(url, request_for(image_server.url("/rgb.png"), *boxes))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    ids = set()
    for index, outcome in enumerate(outcomes):
        result = assert_result(outcome, 64, 48, 1 + index % 3)
        assert all(m["box"]["height"] == 10 + index for m in result["masks"])
        ids.add(result["id"])
    assert len(ids) == 20
    assert all(record["status"] == "finished" for record in app.store.records())


def test_the_processor_is_woken_on_insert_not_by_the_poll(start_app, image_server):
    """With a 60 s poll, a request can only finish in time if the insert wakes the processor."""
    app = start_app(poll_interval=60)
    assert wait_for(lambda: processor_is_waiting(app))  # asleep in its 60 s poll wait
    outcome = exchange(ws_url(app), request_for(image_server.url("/rgb.png")), timeout=20)
    assert outcome.types == ["queued", "status", "result"]


def test_the_oldest_queued_record_is_claimed_without_a_claim_query_and_one_behind_it_by_the_query(
    start_app, image_server, gate, tmp_path
):
    """A record inserted with none queued ahead of it is claimed by the ETag it was inserted with: the claim
    query, a round trip on Cosmos DB, is not on its way. One queued behind another is found by the query."""
    from tests.support.watched_store import WatchedStore

    store = WatchedStore(tmp_path / "watched.sqlite3")
    app = start_app(model=gate, store=store, poll_interval=30, embedding_cache_size=0)
    assert wait_for(lambda: processor_is_waiting(app))  # after its first, empty claim query
    names = [f"/line-{n}.png" for n in range(3)]
    for n, name in enumerate(names):
        image_server.add(name, image_files.png_rgb(40 + n, 30))
    outcomes = {}

    def client(name):
        outcomes[name] = exchange(ws_url(app), request_for(image_server.url(name)), timeout=30)

    first = threading.Thread(target=client, args=(names[0],))
    first.start()
    assert gate.entered.wait(10)
    assert store.saw_queued == 0  # claimed, and no claim query saw it queued
    second = threading.Thread(target=client, args=(names[1],))  # none queued ahead: the first is processing
    second.start()
    assert wait_for(lambda: sum(r["status"] == "queued" for r in app.store.records()) == 1)
    third = threading.Thread(target=client, args=(names[2],))  # behind the second
    third.start()
    assert wait_for(lambda: sum(r["status"] == "queued" for r in app.store.records()) == 2)
    gate.opened.set()
    for thread in (first, second, third):
        thread.join(30)
    assert all(outcomes[name].types == ["queued", "status", "result"] for name in names), outcomes
    claimed = sorted(app.store.records(), key=lambda record: record["processing"])
    assert [record["imageUrl"] for record in claimed] == [image_server.url(name) for name in names]  # oldest first
    assert store.saw_queued == 1  # only the third was found by the query


def test_a_model_that_keeps_failing_fails_the_record(start_app, image_server, tiny_sam):
    class BrokenModel(ModelGate):
        """The real model's interface, failing every segmentation."""

        def segment_batch(self, jobs):
            self.calls += 1
            raise RuntimeError("CUDA out of memory (simulated)")

    model = BrokenModel(SamModel(tiny_sam, "tiny"), opened=True)
    app = start_app(model=model, max_attempts=2)
    outcome = exchange(ws_url(app), request_for(image_server.url("/rgb.png")))
    assert outcome.types == ["queued", "status", "error"]
    assert (outcome.last["code"], outcome.close_code) == ("processing_failed", 1011)
    assert model.calls == 2
    record = app.store.get(outcome.last["id"])
    assert record["status"] == "failed" and record["error"]["code"] == "processing_failed"


@pytest.mark.parametrize("how", ["header", "query"])
def test_api_token_is_required_on_the_upgrade(start_app, image_server, how):
    from websockets.exceptions import InvalidStatus

    app = start_app(api_token="s3cret-token")
    for wrong in ({}, {"additional_headers": {"Authorization": "Bearer nope"}}):
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(app), **wrong).close()
        assert refused.value.response.status_code == 401
    with pytest.raises(InvalidStatus):
        connect(ws_url(app) + "?token=s3cret-tokeX").close()

    request = request_for(image_server.url("/rgb.png"))
    if how == "header":
        with connect(ws_url(app), additional_headers={"Authorization": "Bearer s3cret-token"}) as ws:
            ws.send(json.dumps(request))
            assert json.loads(ws.recv(timeout=10))["type"] == "queued"
    else:
        assert exchange(ws_url(app) + "?token=s3cret-token", request).types == ["queued", "status", "result"]


def test_new_boxes_on_the_same_image_reuse_its_embedding(start_app, image_server):
    app = start_app(embedding_cache_size=4)
    url = image_server.url("/rgb.png")
    first = exchange(ws_url(app), request_for(url, box(2, 2, 20, 20)))
    second = exchange(ws_url(app), request_for(url, box(10, 5, 30, 12), box(0, 0, 8, 8)))
    other = exchange(ws_url(app), request_for(image_server.url("/photo.jpg")))
    assert first.last["cached_embedding"] is False and first.last["timings"]["encode_ms"] > 0
    assert second.last["cached_embedding"] is True and second.last["timings"]["encode_ms"] == 0
    assert len(second.last["masks"]) == 2
    assert other.last["cached_embedding"] is False
    assert app.store.get_output(second.last["id"])["cachedEmbedding"] is True


def test_with_the_cache_off_every_request_runs_the_encoder(start_app, image_server):
    app = start_app(embedding_cache_size=0)
    url = image_server.url("/rgb.png")
    outcomes = [exchange(ws_url(app), request_for(url)) for _ in range(2)]
    assert [o.last["cached_embedding"] for o in outcomes] == [False, False]


def test_queued_records_are_claimed_together_up_to_batch_size(start_app, image_server, gate):
    app = start_app(model=gate, batch_size=3, embedding_cache_size=0)
    url = ws_url(app)
    for side in range(5):
        image_server.add(f"/batch-{side}.png", image_files.png_rgb(40 + side, 30))
    names = [f"/batch-{side}.png" for side in range(5)]
    outcomes = {}

    def client(name):
        outcomes[name] = exchange(url, request_for(image_server.url(name)), timeout=30)

    first = threading.Thread(target=client, args=(names[0],))
    first.start()
    assert gate.entered.wait(10)  # the processor holds the first record alone
    rest = [threading.Thread(target=client, args=(name,)) for name in names[1:]]
    for thread in rest:
        thread.start()
    assert wait_for(lambda: sum(r["status"] == "queued" for r in app.store.records()) == 4)
    gate.opened.set()
    for thread in [first, *rest]:
        thread.join(30)
    assert gate.batch_sizes == [1, 3, 1], "four waiting records: a batch of BATCH_SIZE=3, then the last"
    for name in names:
        assert outcomes[name].types == ["queued", "status", "result"], (name, outcomes[name].messages)
    assert all(record["status"] == "finished" for record in app.store.records())
