"""The adapters' front on the one port (docs/adapters.md, "The HTTP front"): POST beside the WebSocket, within bounds.

A real server on a real port, raw sockets for what no polite client sends.
The adapters are mounted by the server itself; here a small echo route is
mounted on the real front, so that the front's own rules are tested alone.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from harness.client import exchange
from harness.waiting import wait_for
from server import front as front_module
from server.adapters.calls import HttpResponse
from tests.conftest import ws_url
from tests.support.http_client import get

PROMPT = {"prompts": [{"points": [{"x": 20, "y": 15, "label": 1}]}]}


def echo(request):
    body = {"method": request.method, "path": request.path, "query": request.query, "bytes": len(request.body),
            "token": request.headers.get("token")}
    return HttpResponse(200, json.dumps(body).encode())


@pytest.fixture
def app(start_app):
    app = start_app()
    app.front.mounts["/echo/"] = echo
    return app


def raw(port: int, data: bytes, *, then: bytes = b"", timeout: float = 10) -> bytes:
    """Send `data` (then `then`, if the server has not answered yet), and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if then:
            try:
                sock.sendall(then)
            except OSError:
                pass  # the server answered and closed first
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_a_post_is_answered_by_the_front_and_the_same_port_still_serves_websockets_and_get(app, image_server):
    body = b'{"x": 1}'
    answer = raw(app.port, b"POST /echo/predict?a=1 HTTP/1.1\r\nHost: x\r\nToken: t\r\nContent-Length: 8\r\n\r\n" + body)
    assert status_of(answer) == 200
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {
        "method": "POST", "path": "/echo/predict", "query": "a=1", "bytes": 8, "token": "t"
    }
    # A GET under a mounted prefix reaches the same route through the WebSocket side's router.
    status, got = get(app.port, "/echo/health?b=2", headers={"Token": "u"})
    assert status == 200 and json.loads(got) == {"method": "GET", "path": "/echo/health", "query": "b=2", "bytes": 0, "token": "u"}
    assert get(app.port, "/ping") == (200, b"pong")
    result = exchange(ws_url(app), {"image_url": image_server.url("/rgb.png"), **PROMPT})
    assert result.last["type"] == "result"


def test_a_post_nowhere_is_404_and_a_body_over_the_limit_is_413_before_it_is_sent(app):
    assert status_of(raw(app.port, b"POST /nowhere HTTP/1.1\r\nContent-Length: 0\r\n\r\n")) == 404
    started = time.monotonic()
    # 50 MB announced, none of it sent: the answer comes from the head alone.
    answer = raw(app.port, b"POST /echo/predict HTTP/1.1\r\nContent-Length: 50000000\r\n\r\n")
    assert status_of(answer) == 413 and b"limit" in answer
    assert time.monotonic() - started < 5


def test_a_chunked_body_is_counted_as_it_comes_and_cut_at_the_limit(app):
    max_body = app.front.max_body
    chunk = b"x" * 1_000_000
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(max_body // len(chunk) + 2))
    answer = raw(app.port, b"POST /echo/p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", then=chunks)
    assert status_of(answer) == 413
    small = b"4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
    answer = raw(app.port, b"POST /echo/p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + small)
    assert status_of(answer) == 200 and json.loads(answer.split(b"\r\n\r\n", 1)[1])["bytes"] == 7


def test_a_dripped_request_is_cut_at_the_deadline_with_408(app, monkeypatch):
    monkeypatch.setattr(front_module, "REQUEST_SECONDS", 1.0)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as sock:
        sock.sendall(b"POST /echo/p HTTP/1.1\r\nContent-Length: 1000\r\n\r\n")
        answer = b""
        for _ in range(50):  # a byte every 0.1 s: each read is quick, the whole is not
            try:
                sock.sendall(b"x")
            except OSError:
                break
            time.sleep(0.1)
            sock.setblocking(False)
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            sock.setblocking(True)
            if answer:
                break
    assert status_of(answer) == 408
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    "head, status",
    [
        (b"POST /echo/p HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST /echo/p HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST /echo/p HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /echo/p HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"POST /echo/p HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),
        (b"POST /echo/p HTTP/1.1\r\nX-A: " + b"b" * 20000 + b"\r\n\r\n", 431),
        (b"POST echo HTTP/1.1\r\n\r\n", 400),
        (b"POST /echo/p HTTP/1.1\r\nbad header\r\n\r\n", 400),
        (b"POST /echo/p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    ],
    ids=["two-lengths", "length-and-chunked", "negative", "gzip", "many-headers", "long-head", "no-slash",
         "no-colon", "bad-chunk"],
)
def test_a_malformed_request_gets_its_status_and_a_sentence(app, head, status):
    answer = raw(app.port, head)
    assert status_of(answer) == status
    assert answer.split(b"\r\n\r\n", 1)[1].strip()  # a sentence, not an empty body


def test_expect_100_continue_is_answered_before_the_body(app):
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as sock:
        sock.sendall(b"POST /echo/p HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"abc")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert b" 200 " in answer.split(b"\r\n", 1)[0] and json.loads(answer.split(b"\r\n\r\n", 1)[1])["bytes"] == 3


def test_a_route_that_fails_is_a_500_with_a_sentence_and_the_server_goes_on(app):
    def broken(request):
        raise RuntimeError("a bug")

    app.front.mounts["/broken/"] = broken
    answer = raw(app.port, b"POST /broken/x HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert status_of(answer) == 500 and b"logged" in answer
    assert get(app.port, "/ping") == (200, b"pong")


def test_the_cvat_port_is_off_unless_set_and_its_routes_are_not_on_the_main_port(start_app):
    app = start_app()
    assert app.cvat_port is None
    assert status_of(raw(app.port, b"POST /api/function_invocations HTTP/1.1\r\nContent-Length: 0\r\n\r\n")) == 404
    assert get(app.port, "/api/functions")[0] == 404


def test_a_post_holds_a_connection_place_as_a_websocket_does(start_app, image_server):
    """MAX_CONNECTIONS_PER_CLIENT counts the POSTs of an address with its WebSockets."""
    from websockets.sync.client import connect

    app = start_app(max_connections_per_client=1)
    app.front.mounts["/echo/"] = echo
    with connect(ws_url(app), open_timeout=10):
        answer = raw(app.port, b"POST /echo/p HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert status_of(answer) == 429 and b"MAX_CONNECTIONS_PER_CLIENT" in answer
    wait_for(lambda: app.slots.open == 0, timeout=10)
    assert status_of(raw(app.port, b"POST /echo/p HTTP/1.1\r\nContent-Length: 0\r\n\r\n")) == 200
    wait_for(lambda: app.slots.open == 0, timeout=10)  # the POST's place was given back
