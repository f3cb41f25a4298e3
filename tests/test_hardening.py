"""Holes an attacker found, each closed at its mechanism and proven through a real server.

Memory, deadlines, batches, replicas, health, storage faults, headers and
stopping. (Downloads and the SSRF guard are tested in test_fetch.py and
test_ssrf.py; masks' memory in test_masks.py.)
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from pathlib import Path

import pytest
from websockets.sync.client import connect

from harness import image_files
from harness.client import exchange, upgraded_socket
from server import jobs, main, protocol, routes
from server.clock import utcnow
from server.errors import ClientError
from server.models.sam1 import SamModel
from server.store.sqlite import SQLiteStore
from tests.conftest import ModelGate, ws_url

REPO = Path(__file__).resolve().parent.parent
BOX = {"x": 4, "y": 4, "width": 30, "height": 20}


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def eventually(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def foreign_record(image_url: str, *, sha256: str = "0" * 64) -> dict:
    """A queued record as another replica would have inserted it: its image is not here."""
    return jobs.new_record(
        str(uuid.uuid4()), now=utcnow(), image_url=image_url, image_sha256=sha256,
        width=64, height=48, boxes=[BOX], multimask=False,
    )


class DrippingServer:
    """Accepts connections and answers one byte of a status line every `interval` seconds, forever."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/slow.png"

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            self.connections += 1
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            for byte in b"HTTP/1.1 200 OK\r\n" * 1000:
                if self._stop.wait(self.interval):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def dripping():
    server = DrippingServer()
    yield server
    server.close()


# --- 4: the processor never waits on the network -----------------------------------------


@pytest.mark.slow  # a host dripping for seconds
def test_a_dripping_image_host_never_stalls_the_processor(start_app, dripping):
    """Another replica's record points at a host that drips: this replica's own requests go on."""
    app = start_app(download_timeout=3)
    stranger = app.store.insert(foreign_record(dripping.url))
    app.processor.wake.set()
    assert eventually(lambda: dripping.connections >= 1, 5), "the image was never fetched again"
    started = time.monotonic()
    outcome = exchange(ws_url(app), {"image_url": data_url(image_files.png_rgb(64, 48)), "boxes": [BOX]}, timeout=20)
    assert outcome.types == ["queued", "status", "result"], outcome.messages
    assert time.monotonic() - started < 2.5, "the request waited for the dripping download"
    # And the stranger's record ends, within DOWNLOAD_TIMEOUT, instead of hanging.
    assert eventually(lambda: app.store.get(stranger["id"])["status"] == jobs.FAILED, 10)
    assert "fetched again" in app.store.get(stranger["id"])["error"]["message"]


# --- 6: one bad request fails alone -------------------------------------------------------


class FailsOnOneImage(ModelGate):
    """The real model, behind a gate, raising whenever a batch holds one chosen image."""

    def __init__(self, model: SamModel, guilty_sha256: str):
        super().__init__(model)
        self.guilty = guilty_sha256

    def segment_batch(self, jobs_):
        if any(job.image_key == self.guilty for job in jobs_):
            self.calls += 1
            self.batch_sizes.append(len(jobs_))
            raise RuntimeError("this image breaks the model")
        return super().segment_batch(jobs_)


def test_a_failing_batch_is_retried_one_request_at_a_time(start_app, tiny_sam):
    guilty_png = image_files.png_rgb(50, 40)
    model = FailsOnOneImage(SamModel(tiny_sam, "tiny", cache_size=0), guilty_sha256=image_sha(guilty_png))
    app = start_app(model=model, batch_size=4)
    results: dict[str, object] = {}

    def send(name: str, png: bytes) -> None:
        results[name] = exchange(ws_url(app), {"image_url": data_url(png), "boxes": [BOX]}, timeout=60)

    first = threading.Thread(target=send, args=("first", image_files.png_rgb(64, 48)))
    first.start()
    assert model.entered.wait(10)  # the processor holds a batch of one, at the gate
    others = [
        threading.Thread(target=send, args=(name, png))
        for name, png in (("good-1", image_files.png_rgb(70, 50)), ("good-2", image_files.png_rgb(80, 60)), ("guilty", guilty_png))
    ]
    for thread in others:
        thread.start()
    assert eventually(lambda: app.store.count_queued() == 3, 10)
    model.opened.set()
    for thread in [first, *others]:
        thread.join(60)
    assert 3 in model.batch_sizes, "the three waiting requests were never batched together"
    for name in ("first", "good-1", "good-2"):
        assert results[name].types[-1] == "result", (name, results[name].messages)
    assert results["guilty"].last["code"] == "processing_failed"
    assert all(not jobs.order_violations(record) and jobs.is_terminal(record) for record in app.store.records())


def image_sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_an_image_too_thin_to_segment_is_refused_at_decode(start_app):
    app = start_app()
    outcome = exchange(ws_url(app), {"image_url": data_url(image_files.png_rgb(1, 3000)), "boxes": [BOX]})
    assert outcome.types == ["error"] and outcome.last["code"] == "unsupported_image"
    assert "1x3000" in outcome.last["message"]
    assert list(app.store.records()) == []


# --- 7: size before parsing ----------------------------------------------------------------


def test_a_message_too_large_is_refused_before_it_is_parsed():
    """3 MB of `{},` would be about 100 MB of Python objects; refusing it must cost next to nothing."""
    message = '{"image_url": "http://images.example/a.png", "boxes": [' + "{}," * 1_000_000 + "{}]}"
    tracemalloc.start()
    try:
        with pytest.raises(ClientError) as caught:
            protocol.parse_request(
                message, max_boxes=64, max_points=32, max_message_bytes=65536, max_image_bytes=20 * 2**20
            )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.code == "message_too_large"
    assert peak < 1_000_000, f"refusing it allocated {peak:,} bytes"


def test_a_compressed_flood_of_json_gets_message_too_large(start_app):
    app = start_app()
    flood = '{"image_url": "http://images.example/a.png", "boxes": [' + "{}," * 2_000_000 + "{}]}"
    with connect(ws_url(app), compression="deflate", max_size=None) as ws:
        ws.send(flood)  # about 6 MB of JSON, a few kB on the wire
        answer = json.loads(ws.recv(timeout=20))
    assert answer["code"] == "message_too_large"


# --- 8: decoded pixels have a budget -------------------------------------------------------


def test_decoded_pixels_are_held_within_the_budget_and_given_back(start_app, gate):
    """20 MB of budget: 1000x1000 images hold 3 MB each while they wait; a decode needs 12 MB more."""
    app = start_app(model=gate, pixel_budget_mb=20, max_image_pixels=2_000_000)
    request = {"image_url": data_url(image_files.png_rgb(1000, 1000)), "boxes": [BOX]}
    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(exchange(ws_url(app), request, timeout=60))) for _ in range(3)]
    for thread in threads:
        thread.start()
        assert eventually(lambda: app.budget.used == (threads.index(thread) + 1) * 3_000_000, 10), app.budget.used
    refused = exchange(ws_url(app), request)
    assert refused.last["code"] == "queue_full" and "PIXEL_BUDGET_MB" in refused.last["message"]
    gate.opened.set()
    for thread in threads:
        thread.join(60)
    assert [o.types[-1] for o in outcomes] == ["result"] * 3
    assert eventually(lambda: app.budget.used == 0, 5), f"{app.budget.used} bytes were never given back"
    assert exchange(ws_url(app), request).types[-1] == "result"
    assert eventually(lambda: app.budget.used == 0, 5)  # given back just after the result is stored


# --- 9: a client that stops reading ------------------------------------------------------------


def big_result_request() -> dict:
    noise = image_files.noise_png(1600, 1200)
    boxes = [{"x": 10 * i, "y": 8 * i, "width": 800, "height": 600} for i in range(64)]
    return {"image_url": data_url(noise), "boxes": boxes, "multimask": True}


def silent_reader(app, request: dict) -> socket.socket:
    """A raw WebSocket client that upgrades, sends the request, and never reads again."""
    sock = upgraded_socket(app.port, receive_buffer=4096, timeout=None)
    payload = json.dumps(request).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    header = bytes([0x81, 0x80 | 127]) + len(payload).to_bytes(8, "big") + mask
    sock.sendall(header + masked)
    return sock


@pytest.mark.slow  # waits out SEND_TIMEOUT
def test_a_client_that_stops_reading_loses_its_thread_after_send_timeout(start_app):
    app = start_app(send_timeout=1, max_mask_pixels=10**9)  # a big result, on purpose
    sock = silent_reader(app, big_result_request())
    try:
        assert eventually(lambda: any(r["status"] != jobs.QUEUED for r in app.store.records()), 60)
        record_id = next(iter(app.store.records()))["id"]
        assert eventually(lambda: app.connections == 0, 60), "the conversation still holds its thread"
        assert app.store.get(record_id)["status"] == jobs.INTERRUPTED
    finally:
        sock.close()


# --- 10: records this replica cannot take never hide the ones it can -------------------------------


def test_other_replicas_inline_images_do_not_block_this_replicas_requests(start_app):
    app = start_app()
    for _ in range(12):  # more than one page of claimable records
        app.store.insert(foreign_record("data:image/png;base64,... (70 bytes, sent inline)"))
    outcome = exchange(ws_url(app), {"image_url": data_url(image_files.png_rgb(64, 48)), "boxes": [BOX]}, timeout=20)
    assert outcome.types == ["queued", "status", "result"], outcome.messages
    assert outcome.messages[0]["position"] == 13


# --- 11: /health does not cost a database round trip per call ----------------------------------------


class CountingStore(SQLiteStore):
    """The real SQLite store, counting the calls /health makes."""

    looks = 0

    def check(self) -> None:
        CountingStore.looks += 1
        super().check()


def test_health_reuses_the_stores_state_for_callers(start_app, tmp_path):
    CountingStore.looks = 0
    app = start_app(store=CountingStore(tmp_path / "counted.sqlite3"), api_token="tok")
    started = time.monotonic()
    for _ in range(50):
        status, _ = http_get(app.port, "/health")
        assert status == 200
    elapsed = time.monotonic() - started
    assert CountingStore.looks <= 1 + elapsed / routes.HEALTH_CACHE_SECONDS + 1, CountingStore.looks


def http_get(port: int, path: str, headers: list[tuple[str, str]] = ()) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", path)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# --- 12: storage faults ----------------------------------------------------------------------------


def test_an_image_dir_that_cannot_be_written_is_reported_not_hidden(start_app, tmp_path):
    app = start_app(image_dir=tmp_path / "images")
    shutil.rmtree(tmp_path / "images", ignore_errors=True)
    (tmp_path / "images").write_text("a file where the folder was")  # as good as a read-only disk
    outcome = exchange(ws_url(app), {"image_url": data_url(image_files.png_rgb(64, 48)), "boxes": [BOX]})
    assert outcome.last["code"] == "store_unavailable" and "cannot store the image" in outcome.last["message"]
    assert list(app.store.records()) == []
    time.sleep(routes.HEALTH_CACHE_SECONDS)
    status, body = http_get(app.port, "/health")
    assert status == 503 and json.loads(body)["images"].startswith("error:")


@pytest.mark.slow  # a real `python -m server` process
@pytest.mark.parametrize("setting", ["IMAGE_DIR"])  # SQLITE_PATH: tests/test_startup_errors.py
def test_an_unwritable_folder_stops_the_start_with_one_sentence(tmp_path, setting):
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"never loaded: the folder check comes first")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file")
    env = {
        "PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "SAM_MODEL_TYPE": "vit_b",
        "SAM_CHECKPOINT": str(checkpoint), "PORT": "0", "HOST": "127.0.0.1",
        "IMAGE_DIR": str(tmp_path / "images"), "SQLITE_PATH": str(tmp_path / "cap.sqlite3"),
        setting: str(blocked / ("images" if setting == "IMAGE_DIR" else "cap.sqlite3")),
    }
    done = subprocess.run(
        [sys.executable, "-m", "server"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and setting in lines[0] and "writable" in lines[0], done.stderr


# --- 13: two Authorization headers ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/health", "/metrics", "/"])
def test_two_authorization_headers_are_refused_cleanly(start_app, path):
    app = start_app(api_token="tok")
    status, body = http_get(app.port, path, [("Authorization", "Bearer tok"), ("Authorization", "Bearer other")])
    assert status == 400 and b"one Authorization header" in body
    assert http_get(app.port, "/ping") == (200, b"pong")


# --- 14: stopping is bounded -----------------------------------------------------------------------


def test_stop_takes_at_most_the_drain_and_the_grace_while_a_batch_runs_on(start_app, gate, monkeypatch):
    monkeypatch.setattr(main, "STOP_GRACE_SECONDS", 2.0)
    app = start_app(model=gate, drain_seconds=0.5)
    outcome = []
    client = threading.Thread(
        target=lambda: outcome.append(exchange(ws_url(app), {"image_url": data_url(image_files.png_rgb(64, 48)), "boxes": [BOX]}))
    )
    client.start()
    assert gate.entered.wait(10)  # the batch is in the model, and stays there
    started = time.monotonic()
    app.stop()
    elapsed = time.monotonic() - started
    gate.opened.set()
    client.join(10)
    assert elapsed < 0.5 + 2.0 + 1.0, f"stop took {elapsed:.1f} s"
    assert outcome and outcome[0].last["code"] == "shutting_down"
