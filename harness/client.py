"""A real WebSocket client for tests and benchmarks: send one request, collect every message."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import socket
import time
from typing import Any, Iterator

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect


@dataclasses.dataclass
class Exchange:
    messages: list[dict[str, Any]]
    close_code: int | None
    # time.perf_counter() once the WebSocket was open, as each message had arrived, and as the close was seen
    opened_at: float = 0.0
    arrived: list[float] = dataclasses.field(default_factory=list)
    closed_at: float = 0.0

    @property
    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    @property
    def last(self) -> dict[str, Any]:
        return self.messages[-1]


def exchange(url: str, request: dict | str | bytes, timeout: float = 120) -> Exchange:
    """Send `request` (a dict is sent as JSON) and read until the server closes."""
    payload = json.dumps(request) if isinstance(request, dict) else request
    messages, arrived = [], []
    with connect(url, open_timeout=10, max_size=None) as ws:
        opened_at = time.perf_counter()
        ws.send(payload)
        try:
            while True:
                messages.append(json.loads(ws.recv(timeout=timeout)))
                arrived.append(time.perf_counter())
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else None
            closed_at = time.perf_counter()
    return Exchange(messages, code, opened_at, arrived, closed_at)


def upgraded_socket(port: int, receive_buffer: int | None = None, timeout: float | None = 30) -> socket.socket:
    """A plain socket to 127.0.0.1:`port`, upgraded to WebSocket by hand and read up to the end of the
    101 answer, for a caller that then writes frames itself or only holds the connection.

    `receive_buffer` sets SO_RCVBUF before connecting: a small one fills at once when the caller stops reading.
    """
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:  # a byte at a time: nothing after the answer's head is read
        byte = sock.recv(1)
        assert byte, "closed during the handshake"
        head += byte
    assert head.startswith(b"HTTP/1.1 101"), head[:100]
    return sock


@contextlib.contextmanager
def session(url: str, timeout: float = 60, compression: str | None = "deflate") -> Iterator["Session"]:
    """A protocol 1.1 session over one real WebSocket, closed when the block ends.

    `compression=None` offers no permessage-deflate, as a client without it would.
    """
    with connect(url, open_timeout=10, max_size=None, compression=compression) as ws:
        yield Session(ws, timeout)


class Session:
    """Send requests on one connection, and read each one's answers."""

    def __init__(self, ws: ClientConnection, timeout: float):
        self.ws = ws
        self.timeout = timeout

    def send(self, request: dict) -> None:
        self.ws.send(json.dumps(request))

    def next(self) -> dict[str, Any]:
        return json.loads(self.ws.recv(timeout=self.timeout))

    def answer(self) -> list[dict[str, Any]]:
        """Messages up to and including the next result or error."""
        messages = []
        while not messages or messages[-1]["type"] not in ("result", "error"):
            messages.append(self.next())
        return messages

    def ask(self, request: dict) -> dict[str, Any]:
        """Send one request (keep_open) and return its final message."""
        self.send({"keep_open": True, **request})
        return self.answer()[-1]

    def closed(self) -> tuple[int | None, str | None]:
        """Wait for the server to close; its close code and reason."""
        try:
            while True:
                self.ws.recv(timeout=self.timeout)
        except ConnectionClosed as closed:
            return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd is not None else (None, None)
