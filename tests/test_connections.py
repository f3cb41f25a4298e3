"""Connections as a resource, against a real running server on real sockets: what waiting costs,
how many places one client may hold, an idle timer that errors do not reset, and /ping and
/health still answered when every WebSocket place is taken (docs/protocol.md, "Sessions" and
"Connections"; docs/operations.md).
"""

from __future__ import annotations

import base64
import contextlib
import json
import resource
import socket
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from harness import image_files
from harness.client import session as open_session
from harness.waiting import wait_for
from server import jobs
from tests.conftest import ws_url
from tests.support.http_client import get
from tests.test_malformed_traffic import TEXT, RawClient

DATA_URL = "data:image/png;base64," + base64.b64encode(image_files.png_rgb(64, 48)).decode()
OPEN = {"image_url": DATA_URL, "prompts": [], "keep_open": True}


def cpu_seconds() -> float:
    """CPU time of this whole process, every thread (the server's and the test's) together."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def open_raw_session(port: int, request: dict) -> RawClient:
    """A raw WebSocket session that has sent `request` (no client thread: its cost is the server's)."""
    client = RawClient(port)
    client.handshake()
    client.send_frame(TEXT, json.dumps(request).encode())
    return client


def next_message(client: RawClient) -> dict:
    opcode, payload = client.read_frame()
    assert opcode == TEXT, (opcode, payload)
    return json.loads(payload)


# --- waiting without burning ---------------------------------------------------------------------


@pytest.mark.slow  # about 6 s
def test_250_sessions_waiting_behind_one_encode_cost_almost_no_cpu(start_app, gate):
    """Each waiting conversation blocks on its connection's bell: no socket polling every few ms,
    and yet a newer request on a waiting session supersedes it at once (its frame rings the bell)."""
    app = start_app(model=gate, poll_interval=1.0, max_queue=300, max_connections_per_client=300)
    clients: list[RawClient] = []
    try:
        clients.append(open_raw_session(app.port, OPEN))
        assert gate.entered.wait(10)  # the model is busy with the first request: the others wait behind it
        clients += [open_raw_session(app.port, OPEN) for _ in range(249)]
        for client in clients[1:]:
            assert next_message(client)["type"] == "queued"
        assert wait_for(lambda: app.store.count_queued() == 249)
        time.sleep(0.5)  # let the admissions' own work settle

        wall, cpu = time.monotonic(), cpu_seconds()
        time.sleep(3.0)
        cores = (cpu_seconds() - cpu) / (time.monotonic() - wall)
        started = time.perf_counter()
        clients[1].send_frame(TEXT, json.dumps({**OPEN, "client_ref": "newer"}).encode())
        superseded = next_message(clients[1])
        superseded_ms = (time.perf_counter() - started) * 1000
        print(f"\n250 sessions waiting behind one encode: {cores:.3f} of a core (whole process); "
              f"a newer request superseded in {superseded_ms:.1f} ms")
        assert cores < 0.1, f"250 waiting sessions used {cores:.2f} of a core"
        assert superseded["code"] == "superseded" and superseded_ms < 500

        gate.opened.set()
        for client in clients:  # every session gets its answer
            while (message := next_message(client))["type"] not in ("result", "error"):
                pass
            assert message["type"] == "result", message
    finally:
        gate.opened.set()
        for client in clients:
            client.close()
    assert wait_for(lambda: all(jobs.is_terminal(r) for r in app.store.records()), 30)


# --- connection places --------------------------------------------------------------------------


def test_60_held_sessions_cannot_starve_ping_and_health(start_app):
    """Every WebSocket place taken: /ping and /health still answer; one more upgrade is refused with a sentence."""
    app = start_app(max_connections=60, max_connections_per_client=0, session_idle_seconds=60, request_timeout=60)
    held = []
    try:
        for _ in range(60):
            client = open_raw_session(app.port, {"keep_open": True})  # a session with nothing admitted
            assert next_message(client)["code"] == "invalid_request"
            held.append(client)
        assert wait_for(lambda: app.connections == 60)
        status, body = get(app.port, "/health")
        assert status == 200 and json.loads(body)["connections"] == 60
        assert get(app.port, "/ping") == (200, b"pong")
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(app), open_timeout=5)
        assert refused.value.response.status_code == 503
        assert b"MAX_CONNECTIONS" in refused.value.response.body
    finally:
        for client in held:
            client.close()
    assert wait_for(lambda: app.connections == 0)


def bearer(token: str) -> dict:
    return {"additional_headers": {"Authorization": f"Bearer {token}"}}


def test_a_client_over_its_cap_is_refused_while_another_gets_in(start_app):
    app = start_app(api_token="alpha-token,beta-token", max_connections_per_client=2, request_timeout=60)
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(connect(ws_url(app), **bearer("alpha-token"))) for _ in range(2)]
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(app), open_timeout=5, **bearer("alpha-token"))
        assert refused.value.response.status_code == 429
        assert b"MAX_CONNECTIONS_PER_CLIENT" in refused.value.response.body
        with connect(ws_url(app), **bearer("beta-token")) as other:  # another client, same address
            other.send(json.dumps({"image_url": "http://x/", "boxes": "no"}))
            assert json.loads(other.recv(timeout=10))["code"] == "invalid_request"
        held.pop().close()
        assert wait_for(lambda: app.connections == 1)
        stack.enter_context(connect(ws_url(app), **bearer("alpha-token")))  # its place came back


def test_without_a_token_a_client_is_its_address(start_app):
    app = start_app(max_connections_per_client=1, request_timeout=60)
    with connect(ws_url(app)):
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(app), open_timeout=5)
        assert refused.value.response.status_code == 429
        other = socket.create_connection(("127.0.0.1", app.port), source_address=("127.0.0.2", 0))
        with connect(ws_url(app), sock=other, open_timeout=5) as elsewhere:
            elsewhere.send(json.dumps({"image_url": "http://x/", "boxes": "no"}))
            assert json.loads(elsewhere.recv(timeout=10))["code"] == "invalid_request"


# --- the idle timer -------------------------------------------------------------------------------


def test_a_session_sending_only_bad_messages_is_closed_by_the_idle_timer(start_app):
    """Error answers are no activity: garbage every 0.25 s does not keep a session open past
    SESSION_IDLE_SECONDS after the end of its last admitted request."""
    app = start_app(session_idle_seconds=1.5)
    answered = 0
    with open_session(ws_url(app)) as session:
        assert session.ask({"image_url": DATA_URL, "prompts": []})["type"] == "result"
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            while time.monotonic() - started < 10:
                session.ws.send("{not json")
                assert session.next()["code"] == "invalid_json"
                answered += 1
                time.sleep(0.25)
    lasted = time.monotonic() - started
    print(f"\nclosed {lasted:.2f} s after the last result, and {answered} bad messages")
    assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (1000, "idle")
    assert 1.3 <= lasted < 5
    assert wait_for(lambda: app.connections == 0)
