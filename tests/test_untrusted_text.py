"""Untrusted text through a real server (issue 19, findings 1 and 11).

A message that made the old scan backtrack quadratically, holding the GIL
and so stopping every thread, is answered at once while `/ping` on another
connection stays fast; a lone surrogate in the request is a typed
`invalid_request`, with no traceback in the server's log.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.client import exchange, session as open_session
from harness.waiting import wait_for
from tests.conftest import ws_url

BOX = {"x": 4, "y": 4, "width": 30, "height": 20}


def hostile(repeats: int) -> str:
    """The reported message: a string never closed, full of escaped `"data:` openings."""
    return '"data:' + '\\"data:' * repeats


class PingProbe:
    """Asks `/ping` on its own connections, one after another, and keeps the slowest answer's time."""

    def __init__(self, port: int):
        self.port = port
        self.slowest = 0.0
        self.answered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PingProbe:
        self._thread.start()
        deadline = time.monotonic() + 10
        while self.answered == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                connection.request("GET", "/ping")
                assert connection.getresponse().read() == b"pong"
            finally:
                connection.close()
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.answered += 1
            time.sleep(0.02)


@pytest.mark.parametrize(
    "repeats, code, close_code",
    [
        (9_000, "invalid_json", 1008),  # 63 KB, under MAX_MESSAGE_BYTES: froze the old server 13 s
        (3_999_000, "message_too_large", 1009),  # 28 MB, just under the frame limit: weeks for the old scan
    ],
    ids=["63KB", "28MB"],
)
def test_the_hostile_literal_is_answered_at_once_while_ping_stays_fast(start_app, repeats, code, close_code):
    app = start_app()  # the default limits: MAX_MESSAGE_BYTES 64 KiB, MAX_IMAGE_BYTES 20 MiB
    message = hostile(repeats)
    with PingProbe(app.port) as probe, connect(ws_url(app), max_size=None, compression=None) as ws:
        started = time.monotonic()
        ws.send(message)
        answer = json.loads(ws.recv(timeout=120))
        took = time.monotonic() - started
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        pinged = probe.answered
        assert wait_for(lambda: probe.answered > pinged)  # and pings go on after it
    assert answer["code"] == code and closed.value.rcvd.code == close_code
    assert took < 3.0, f"the answer to {len(message):,} bytes took {took:.2f} s"
    assert probe.slowest < 1.5, f"/ping took {probe.slowest:.2f} s meanwhile"


def test_a_lone_surrogate_in_image_url_is_invalid_request_without_a_traceback(start_app, image_server, caplog):
    app = start_app()
    url = image_server.url("/\ud800.png")  # sent as the JSON escape \ud800, as in the report
    with caplog.at_level(logging.INFO):
        outcome = exchange(ws_url(app), {"image_url": url, "boxes": [BOX]}, timeout=20)
    assert outcome.types == ["error"], outcome.messages
    assert outcome.last["code"] == "invalid_request" and outcome.close_code == 1008
    assert outcome.last["message"].startswith("image_url holds a lone surrogate")
    assert not [record for record in caplog.records if record.exc_info or record.levelno >= logging.ERROR]
    assert list(app.store.records()) == []


def test_in_a_session_a_lone_surrogate_answers_that_request_only(start_app, image_server):
    app = start_app()
    with open_session(ws_url(app)) as session:
        refused = session.ask({"image_url": image_server.url("/\udc80.png"), "prompts": [], "client_ref": "r1"})
        assert refused["code"] == "invalid_request" and refused["client_ref"] == "r1"
        answered = session.ask({"image_url": image_server.url("/rgb.png"), "prompts": [], "client_ref": "r2"})
        assert answered["type"] == "result" and answered["client_ref"] == "r2"
