"""Limits, secrets, logs and a dying processor, against a real in-process server."""

import contextlib
import json
import logging
import socket
import threading
import time

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from harness.client import exchange
from harness.waiting import wait_for
from server import logs
from server.models.sam1 import SamModel
from server.store.sqlite import SQLiteStore
from tests.conftest import ModelGate, ws_url
from tests.support.http_client import get

BOX = {"x": 2, "y": 2, "width": 20, "height": 20}


def test_max_connections_refuses_with_503_before_starting_a_thread(start_app):
    """Past MAX_CONNECTIONS, an upgrade gets 503 at the handshake while /ping still answers; past
    MAX_CONNECTIONS + PLAIN_HTTP_ROOM sockets, the accept loop itself refuses, before a thread starts."""
    app = start_app(max_connections=3, request_timeout=60)  # the held sockets stay quiet throughout
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(ws_url(app))) for _ in range(3)]
        assert wait_for(lambda: app.connections == 3)  # each one's handler thread is running
        refuse_past_the_limit_then_admit_again(app, held, stack)


def refuse_past_the_limit_then_admit_again(app, held, stack):
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(app), open_timeout=5)
    assert refused.value.response.status_code == 503
    assert b"MAX_CONNECTIONS" in refused.value.response.body
    assert get(app.port, "/ping") == (200, b"pong")  # plain HTTP has room of its own

    from server.listener import PLAIN_HTTP_ROOM

    silent = [stack.enter_context(socket.create_connection(("127.0.0.1", app.port))) for _ in range(PLAIN_HTTP_ROOM)]
    assert wait_for(lambda: app.listener.open == 3 + len(silent), 5)  # each one is in a handshake thread
    threads_before = threading.active_count()
    started = time.perf_counter()
    raw = socket.create_connection(("127.0.0.1", app.port), timeout=5)
    raw.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.recv(100).startswith(b"HTTP/1.1 503")
    elapsed_ms = (time.perf_counter() - started) * 1000
    raw.close()
    assert app.listener.refused == 1
    assert threading.active_count() == threads_before  # no handler thread was started for it
    print(f"\nrefused past MAX_CONNECTIONS=3 + {PLAIN_HTTP_ROOM} sockets in {elapsed_ms:.1f} ms")
    for sock in silent:
        sock.close()

    held.pop().close()
    assert wait_for(lambda: app.connections < 3, 5)  # the freed place comes back once its handler ends
    with connect(ws_url(app)) as ws:
        ws.send(json.dumps({"image_url": "http://x/", "boxes": "no"}))
        assert json.loads(ws.recv(timeout=10))["code"] == "invalid_request"


@pytest.mark.slow  # waits for a silent client
def test_a_refused_client_that_never_sends_its_request_still_gets_the_503_and_a_clean_close(start_app):
    from server.listener import PLAIN_HTTP_ROOM, REFUSAL_LINGER_SECONDS

    app = start_app(max_connections=1, request_timeout=60)
    with contextlib.ExitStack() as stack:
        for _ in range(1 + PLAIN_HTTP_ROOM):  # every socket the listener takes, in its handshake
            stack.enter_context(socket.create_connection(("127.0.0.1", app.port)))
        assert wait_for(lambda: app.listener.open == 1 + PLAIN_HTTP_ROOM, 5)
        silent = socket.create_connection(("127.0.0.1", app.port), timeout=REFUSAL_LINGER_SECONDS + 3)
        started = time.monotonic()
        answer = b""
        while chunk := silent.recv(4096):  # ends with EOF (a FIN), not ConnectionResetError
            answer += chunk
        waited = time.monotonic() - started
        silent.close()
    assert answer.startswith(b"HTTP/1.1 503") and answer.endswith(b"retry\n")
    assert REFUSAL_LINGER_SECONDS - 0.5 <= waited <= REFUSAL_LINGER_SECONDS + 2  # it waited for a request first
    print(f"\nsilent refused client answered after {waited:.2f} s")


def test_health_details_need_the_token(start_app):
    app = start_app(api_token="tok-123")
    assert get(app.port, "/ping") == (200, b"pong")  # /ping stays open
    status, body = get(app.port, "/health")
    assert status == 200 and json.loads(body) == {"healthy": True}
    status, body = get(app.port, "/health", {"Authorization": "Bearer tok-123"})
    assert status == 200 and set(json.loads(body)) == {
        "model_loaded", "store", "images", "images_free_mb", "queue_depth", "connections", "version", "protocol", "video"
    }
    assert set(json.loads(get(app.port, "/health?token=tok-123")[1])) >= {"model_loaded", "store"}


def test_json_logs_carry_one_line_per_request_and_never_the_token(start_app, image_server, capsys):
    token = "very-secret-token-0451"
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("websockets").level, logging.getLogger("azure").level
    logs.configure("DEBUG", "json")
    try:
        app = start_app(api_token=token)
        request = {"image_url": image_server.url("/rgb.png"), "boxes": [BOX]}
        assert exchange(ws_url(app) + f"?token={token}", request).types == ["queued", "status", "result"]
        with connect(ws_url(app), additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            ws.send("{broken")
            assert json.loads(ws.recv(timeout=10))["code"] == "invalid_json"
        with pytest.raises(InvalidStatus):
            connect(ws_url(app) + f"?token={token}x").close()
        app.stop()
    finally:
        root.handlers[:], level, websockets_level, azure_level = saved
        root.setLevel(level)
        logging.getLogger("websockets").setLevel(websockets_level)
        logging.getLogger("azure").setLevel(azure_level)
    output = capsys.readouterr().err
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]  # every line is JSON
    assert token not in output
    requests = [line["message"] for line in lines if line["message"].startswith("request ")]
    assert len(requests) == 2
    assert "outcome=finished" in requests[0] and "prompts=1" in requests[0] and "encode_ms=" in requests[0]
    assert "outcome=invalid_json" in requests[1]
    print(f"\n{len(lines)} JSON log lines, {len(requests)} request lines, token absent")


class ProcessorKiller(BaseException):
    """Not an Exception: escapes the processor's safety net, as a bug in a C extension might."""


def test_a_dead_processor_turns_health_red_and_ends_the_process(start_app, image_server, tiny_sam):
    class DeadlyModel(ModelGate):
        """The real model's interface, whose segmentation kills the thread."""

        def segment_batch(self, jobs):
            raise ProcessorKiller()

    app = start_app(model=DeadlyModel(SamModel(tiny_sam, "tiny"), opened=True))
    waiter = threading.Thread(target=app.wait)
    waiter.start()
    outcomes = []
    client = threading.Thread(
        target=lambda: outcomes.append(exchange(ws_url(app), {"image_url": image_server.url("/rgb.png"), "boxes": [BOX]}))
    )
    client.start()
    waiter.join(20)
    assert not waiter.is_alive() and app.fatal is not None  # serve_forever would now exit non-zero
    status, body = get(app.port, "/health")
    assert status == 503 and json.loads(body)["model_loaded"] is False
    app.stop()  # what serve_forever does next: the waiting client is told, and its record ends
    client.join(20)
    assert outcomes[0].last["code"] == "shutting_down"
    assert [r["status"] for r in SQLiteStore(app.settings.sqlite_path).records()] == ["interrupted"]


def test_two_tokens_during_a_rotation(start_app):
    app = start_app(api_token="new-token, old-token")
    for token in ("new-token", "old-token"):
        with connect(ws_url(app) + f"?token={token}") as ws:
            ws.send("{")
            assert json.loads(ws.recv(timeout=10))["code"] == "invalid_json"
    for wrong in ("new-token, old-token", "other", ""):
        with pytest.raises(InvalidStatus):
            connect(ws_url(app), additional_headers={"Authorization": f"Bearer {wrong}"}).close()
