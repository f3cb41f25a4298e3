"""Malformed traffic on raw sockets: bad frames, slow and stalled handshakes,
silent clients, and a flood of idle connections, against a real running server.

The server runs in-process (`start_app`), so the test can count its threads.
Frames are built by hand here (RFC 6455 section 5), since a WebSocket library
refuses to send what these tests send.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import threading
import time

import pytest

from harness.client import exchange
from harness.waiting import wait_for
from tests.conftest import ws_url

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
PROTOCOL_ERROR, INVALID_DATA = 1002, 1007
IO_TIMEOUT = 10.0  # seconds a raw socket waits for the server: only a hang reaches it


def box(x, y, width, height):
    return {"x": x, "y": y, "width": width, "height": height}


# --- raw WebSocket plumbing ---------------------------------------------------------------


def upgrade_request(port: int, path: str = "/") -> tuple[bytes, bytes]:
    """The opening handshake's HTTP request, and the Sec-WebSocket-Accept it must get."""
    key = base64.b64encode(os.urandom(16))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    return request, base64.b64encode(hashlib.sha1(key + GUID).digest())


class RawClient:
    """A TCP socket that speaks just enough WebSocket to misbehave on purpose."""

    def __init__(self, port: int, timeout: float = IO_TIMEOUT):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"the server closed the TCP connection ({len(self.buffer)} of {n} bytes read)")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_http_head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"the server closed the connection during the handshake: {self.buffer!r}")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return head

    def handshake(self, path: str = "/") -> None:
        request, accept = upgrade_request(self.port, path)
        self.sock.sendall(request)
        self.check_switched(accept)

    def check_switched(self, accept: bytes) -> None:
        head = self.read_http_head()
        assert head.startswith(b"HTTP/1.1 101 "), head
        headers = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:])
        assert {k.strip().lower(): v.strip() for k, v in headers.items()}[b"sec-websocket-accept"] == accept

    def send_frame(self, opcode: int, payload: bytes) -> None:
        self.sock.sendall(frame(opcode, payload))

    def read_frame(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        assert not second & 0x80, "a server must not mask its frames"
        length = second & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._read(8))[0]
        return first & 0x0F, self._read(length)

    def read_until_close(self) -> tuple[list[dict], int | None]:
        """Every text message the server sends, then the close code of its close frame
        (None if it closed the TCP connection without one)."""
        messages = []
        while True:
            try:
                opcode, payload = self.read_frame()
            except EOFError:
                return messages, None
            if opcode == TEXT:
                messages.append(json.loads(payload))
            elif opcode == CLOSE:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                try:
                    self.send_frame(CLOSE, payload[:2])  # complete the closing handshake
                except OSError:
                    pass
                return messages, code


def frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """One frame as a client sends it (masked unless told otherwise)."""
    length = len(payload)
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 65536:
        head += bytes([mask_bit | 126]) + struct.pack(">H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack(">Q", length)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def ping_time(port: int) -> float:
    """Seconds for GET /ping to answer 200 pong on a fresh connection."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(f"GET /ping HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        answer = b""
        while not answer.endswith(b"pong"):
            chunk = sock.recv(4096)
            assert chunk, f"/ping: the connection closed after {answer!r}"
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    return time.perf_counter() - started


def open_connections(port: int) -> int:
    """The server's own count of open WebSocket conversations, from GET /health."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])["connections"]


def request_for(url: str) -> dict:
    return {"image_url": url, "boxes": [box(2, 2, 20, 20)]}


def assert_still_serving(app, image_server) -> None:
    outcome = exchange(ws_url(app), request_for(image_server.url("/rgb.png")), timeout=30)
    assert outcome.types == ["queued", "status", "result"] and outcome.close_code == 1000, outcome
    assert ping_time(app.port) < 5


# --- (a) bad frames after a valid handshake ---------------------------------------------------

VALID_REQUEST = object()  # placeholder: the fragments of a valid request, filled in per test

# name -> (frames to send, acceptable outcomes). An outcome is a close code with no
# message, or ("error", code, close code), or "result".
BAD_FRAMES = {
    "unmasked client frame": ([frame(TEXT, b'{"a": 1}', masked=False)], {PROTOCOL_ERROR}),
    "RSV1 set": ([frame(TEXT, b"{}", rsv=0b100)], {PROTOCOL_ERROR}),
    "RSV2 and RSV3 set": ([frame(TEXT, b"{}", rsv=0b011)], {PROTOCOL_ERROR}),
    "reserved data opcode 0x3": ([frame(0x3, b"{}")], {PROTOCOL_ERROR}),
    "reserved control opcode 0xB": ([frame(0xB, b"")], {PROTOCOL_ERROR}),
    "ping of 126 bytes": ([frame(PING, b"p" * 126)], {PROTOCOL_ERROR}),
    "close of 200 bytes": ([frame(CLOSE, struct.pack(">H", 1000) + b"r" * 198)], {PROTOCOL_ERROR}),
    "fragmented ping": ([frame(PING, b"p", fin=False)], {PROTOCOL_ERROR}),
    "invalid UTF-8 in a text frame": ([frame(TEXT, b'{"image_url": "\xc3\x28"}')], {INVALID_DATA}),
    "UTF-8-encoded surrogate in a text frame": ([frame(TEXT, b'"\xed\xa0\x80"')], {INVALID_DATA}),
    "UTF-8 split invalidly across fragments": (
        [frame(TEXT, b'"\xe2\x82', fin=False), frame(CONTINUATION, b'("')], {INVALID_DATA}
    ),
    "continuation with no message to continue": ([frame(CONTINUATION, b"{}")], {PROTOCOL_ERROR}),
    "new text frame inside a fragmented message": (
        [frame(TEXT, b'{"a":', fin=False), frame(TEXT, b"1}")], {PROTOCOL_ERROR}
    ),
    "close with reserved code 1005": ([frame(CLOSE, struct.pack(">H", 1005))], {PROTOCOL_ERROR}),
    "close with a 1-byte body": ([frame(CLOSE, b"\x03")], {PROTOCOL_ERROR}),
    "fragmented junk text": (
        [frame(TEXT, b"{not", fin=False), frame(CONTINUATION, b" json", fin=False), frame(CONTINUATION, b"}")],
        {("error", "invalid_json", 1008)},
    ),
    "fragmented binary": (
        [frame(BINARY, b"\x00\x01", fin=False), frame(CONTINUATION, b"\x02")],
        {("error", "invalid_request", 1008)},
    ),
    "fragmented valid request with a ping between fragments": (VALID_REQUEST, {"result"}),
}


def valid_request_fragments(url: str) -> list[bytes]:
    text = json.dumps(request_for(url)).encode()
    third = len(text) // 3
    return [
        frame(TEXT, text[:third], fin=False),
        frame(PING, b"between"),  # control frames may come between fragments
        frame(CONTINUATION, text[third : 2 * third], fin=False),
        frame(CONTINUATION, text[2 * third :]),
    ]


def outcome_of(messages: list[dict], close_code: int | None):
    if not messages:
        return close_code
    if messages[-1]["type"] == "result":
        assert [m["type"] for m in messages] == ["queued", "status", "result"], messages
        assert close_code == 1000
        return "result"
    assert len(messages) == 1 and messages[0]["type"] == "error", messages
    return ("error", messages[0]["code"], close_code)


def test_bad_frames_get_a_protocol_error_close_or_a_typed_error(start_app, image_server):
    app = start_app()
    outcomes, failures = {}, []
    for name, (frames, acceptable) in BAD_FRAMES.items():
        if frames is VALID_REQUEST:
            frames = valid_request_fragments(image_server.url("/rgb.png"))
        with RawClient(app.port) as client:
            client.handshake()
            for data in frames:
                client.sock.sendall(data)
            got = outcome_of(*client.read_until_close())
        outcomes[name] = got
        if got not in acceptable:
            failures.append(f"{name}: got {got}, expected one of {acceptable}")
        assert ping_time(app.port) < 5  # the server keeps serving between cases
    width = max(map(len, outcomes))
    print(f"\nbad frames: {len(outcomes)} cases, {len(outcomes) - len(failures)} answered as expected")
    for name, got in outcomes.items():
        print(f"  {name:<{width}}  {got}")
    assert not failures, failures
    assert_still_serving(app, image_server)
    assert wait_for(lambda: open_connections(app.port) == 0, 10)


# --- (b) slow and stalled handshakes -------------------------------------------------------


@pytest.mark.slow  # 10 s of stalls
def test_a_slow_handshake_and_a_stalled_one_do_not_block_the_server(start_app, image_server):
    """One client drips its upgrade request a byte at a time, one sends half and stalls.

    Meanwhile /ping and full requests are served as usual. The dripped handshake
    completes, since it ends within websockets' open_timeout (10 s, the default,
    which CAP does not change); the stalled one is dropped by that same
    open_timeout: websockets' handshake() waits for the request at most
    open_timeout, then closes the socket, which ends that connection's thread.
    """
    app = start_app()
    request, accept = upgrade_request(app.port)

    stalled = RawClient(app.port, timeout=30)
    stalled.sock.sendall(request[: len(request) // 2])
    stalled_at = time.monotonic()

    dripped = RawClient(app.port)
    drip_seconds = 2.5
    delay = drip_seconds / len(request)
    drip_done = threading.Event()

    def drip():
        try:
            for i in range(len(request)):
                dripped.sock.sendall(request[i : i + 1])
                time.sleep(delay)
        finally:
            drip_done.set()

    dripper = threading.Thread(target=drip, daemon=True)
    started = time.monotonic()
    dripper.start()
    pings, exchanges = [], 0
    while not drip_done.is_set():
        pings.append(ping_time(app.port))
        outcome = exchange(ws_url(app), request_for(image_server.url("/rgb.png")), timeout=30)
        assert outcome.types == ["queued", "status", "result"], outcome.messages
        exchanges += 1
        time.sleep(0.05)
    dripper.join()
    drip_elapsed = time.monotonic() - started

    dripped.check_switched(accept)  # the handshake completes after all
    dripped.send_frame(TEXT, b"{not json")
    messages, close_code = dripped.read_until_close()
    dripped.close()
    assert [m["code"] for m in messages] == ["invalid_json"] and close_code == 1008

    # The stalled half-handshake: still nothing back from the server, until open_timeout.
    try:
        answer = stalled.sock.recv(65536)
    except (ConnectionResetError, socket.timeout) as exc:
        answer = exc
    dropped_after = time.monotonic() - stalled_at
    stalled.close()
    print(
        f"\nslow handshake: {len(request)} bytes dripped over {drip_elapsed:.1f} s, then switched; "
        f"meanwhile {len(pings)} /ping (slowest {max(pings) * 1000:.0f} ms) and {exchanges} full requests "
        f"served; the stalled half-handshake was dropped after {dropped_after:.1f} s "
        f"(websockets' open_timeout, 10 s) with {answer!r}"
    )
    assert exchanges >= 1 and max(pings) < 5
    assert answer == b"", f"expected the server to close the stalled handshake, got {answer!r}"
    assert dropped_after < 10 + 5
    assert_still_serving(app, image_server)


# --- (c) a client that never sends its request -----------------------------------------------


def test_a_silent_client_gets_invalid_request_after_request_timeout(start_app):
    app = start_app(request_timeout=0.5)
    with RawClient(app.port) as client:
        client.handshake()
        started = time.monotonic()
        messages, close_code = client.read_until_close()
        elapsed = time.monotonic() - started
    print(f"\nsilent client: invalid_request after {elapsed:.2f} s (REQUEST_TIMEOUT 0.5 s): {messages}")
    assert len(messages) == 1 and messages[0]["type"] == "error", messages
    assert messages[0]["code"] == "invalid_request" and messages[0]["id"] is None
    assert "0.5 s" in messages[0]["message"]
    assert close_code == 1008
    assert 0.5 <= elapsed < 0.5 + 5


# --- (d) a flood of idle connections -----------------------------------------------------------


def settled_thread_count(quiet: float = 0.5, timeout: float = 10) -> int:
    """threading.active_count() once it has stayed the same for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = threading.active_count(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = threading.active_count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


@pytest.mark.slow  # 300 connections
def test_three_hundred_idle_connections(start_app, image_server):
    # A long REQUEST_TIMEOUT keeps the upgraded connections idle for the whole flood.
    # The app keeps its default MAX_CONNECTIONS (1024), well above 300; all come from one address.
    app = start_app(request_timeout=60, max_connections_per_client=0)
    assert_still_serving(app, image_server)  # warm: every lazily started thread exists now
    baseline = settled_thread_count()

    upgraded, silent = [], []
    try:
        for i in range(300):
            client = RawClient(app.port)
            if i % 2:
                silent.append(client)  # connects and never sends a byte
            else:
                client.sock.sendall(upgrade_request(app.port)[0])
                upgraded.append(client)  # completes the handshake, then says nothing
        for client in upgraded:
            head = client.read_http_head()
            assert head.startswith(b"HTTP/1.1 101 "), head
        assert wait_for(lambda: open_connections(app.port) == len(upgraded), 10), open_connections(app.port)
        flood_threads = threading.active_count()

        pings = [ping_time(app.port) for _ in range(10)]
        during = exchange(ws_url(app), request_for(image_server.url("/rgb.png")), timeout=30)
        assert during.types == ["queued", "status", "result"], during.messages
    finally:
        for client in upgraded + silent:
            client.close()

    started = time.monotonic()
    returned = wait_for(lambda: threading.active_count() <= baseline, 10)
    settle_seconds = time.monotonic() - started
    after = threading.active_count()
    print(
        f"\n300 idle connections ({len(upgraded)} upgraded and silent, {len(silent)} that never sent a byte): "
        f"/ping answered in {max(pings) * 1000:.0f} ms at worst over {len(pings)} tries "
        f"(median {sorted(pings)[len(pings) // 2] * 1000:.0f} ms); a full request was served; "
        f"threads: {baseline} before, {flood_threads} during, {after} {settle_seconds:.1f} s after closing"
    )
    assert max(pings) < 1.0, pings
    assert returned, f"threads did not return to the baseline {baseline}: {after} after 10 s"
    assert wait_for(lambda: open_connections(app.port) == 0, 5), open_connections(app.port)
    assert ping_time(app.port) < 1.0
