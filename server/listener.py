"""The listening socket, with a bound on open sockets enforced before any thread starts.

websockets' threaded server starts one thread per accepted socket. The
listener accepts MAX_CONNECTIONS sockets plus `PLAIN_HTTP_ROOM`: WebSocket
connections are held to MAX_CONNECTIONS at the handshake
(server/connection_slots.py), so the room left over keeps `/ping`, `/health`
and the page answered while every WebSocket place is taken. Past that bound,
`LimitedListener.accept` hands the socket to one shared `Refuser` thread,
which answers HTTP 503, and goes back to accepting, so a flood of connections
cannot make the server start a thread for each. `track` wraps the server's
per-connection handler to count sockets out again when they end.

Why a refuser thread at all:
- closing a socket while the client's request is unread (or not yet arrived)
  makes the kernel send RST, and an RST can destroy the 503 before the client
  reads it;
- answering before the request has arrived trips clients up (websockets'
  own client fails an internal assertion when the response and the EOF beat
  its request out of the door).
So the refuser reads each refused socket's request head, then answers 503,
half-closes, and drains until the client hangs up; REFUSAL_LINGER_SECONDS
bounds the whole exchange. It waits on all refused sockets at once, with
one selector.
"""

from __future__ import annotations

import select
import selectors
import socket
import threading
import time
from typing import Any, Callable

REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 46\r\n"
    b"Connection: close\r\n\r\n"
    b"too many connections (MAX_CONNECTIONS); retry\n"
)
# Sockets accepted past MAX_CONNECTIONS, for plain HTTP requests and handshakes in flight.
PLAIN_HTTP_ROOM = 32
POLL_SECONDS = 0.1
REFUSAL_LINGER_SECONDS = 2.0
MAX_LINGERING = 1024  # past this, refused sockets are closed at once: a flood gets resets, not memory


class LimitedListener:
    def __init__(self, sock: socket.socket, max_connections: int):
        self._sock = sock
        self.limit = max_connections + PLAIN_HTTP_ROOM
        self.open = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._closed = False
        self._refuser = Refuser()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)  # getsockname(), and the like

    def fileno(self) -> int:
        return self._sock.fileno()

    def accept(self) -> tuple[socket.socket, Any]:
        while True:
            conn, address = self._sock.accept()
            with self._lock:
                if self.open < self.limit:
                    self.open += 1
                    return conn, address
                self.refused += 1
            self._refuser.refuse(conn)
            self._wait_for_next()

    def _wait_for_next(self) -> None:
        """Block until another connection is pending, or raise once the listener is closed."""
        while True:
            if self._closed:
                raise OSError("the listener is closed")
            try:
                if select.select([self._sock], [], [], POLL_SECONDS)[0]:
                    return
            except (OSError, ValueError):  # closed under us
                raise OSError("the listener is closed") from None

    def close(self) -> None:
        self._closed = True
        self._sock.close()
        self._refuser.close()

    def track(
        self, handler: Callable[[socket.socket, Any], None], ended: Callable[[socket.socket], None]
    ) -> Callable[[socket.socket, Any], None]:
        """Wrap the per-connection handler so that a finished connection frees its place, and tell `ended`."""

        def handle(conn: socket.socket, address: Any) -> None:
            try:
                handler(conn, address)
            finally:
                with self._lock:
                    self.open -= 1
                ended(conn)

        return handle


class Refuser:
    """One thread that reads each refused socket's request, answers 503 and closes without a reset."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._pending: dict[socket.socket, _Refusal] = {}
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="refuser", daemon=True)
        self._thread.start()

    def refuse(self, conn: socket.socket) -> None:
        with self._lock:
            if self._closed or len(self._pending) >= MAX_LINGERING:
                conn.close()
                return
            conn.setblocking(False)
            self._pending[conn] = _Refusal(deadline=time.monotonic() + REFUSAL_LINGER_SECONDS)
            self._selector.register(conn, selectors.EVENT_READ)
        self._wake_w.send(b"x")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake_w.send(b"x")
        self._thread.join(timeout=1)

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    break
                soonest = min((r.deadline for r in self._pending.values()), default=None)
            timeout = None if soonest is None else max(0.0, soonest - time.monotonic())
            for key, _ in self._selector.select(timeout):
                if key.fileobj is self._wake_r:
                    self._wake_r.recv(4096)
                else:
                    self._read(key.fileobj)  # type: ignore[arg-type]
            now = time.monotonic()
            with self._lock:
                expired = [conn for conn, r in self._pending.items() if r.deadline <= now]
            for conn in expired:
                self._answer(conn)  # a client that never finished its request still gets the 503
                self._finish(conn)
        with self._lock:
            left = list(self._pending)
        for conn in left:
            self._finish(conn)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _read(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        refusal = self._pending[conn]
        if not data:  # the client hung up (or reset): nothing more to say or wait for
            self._finish(conn)
            return
        seen = refusal.tail + data
        refusal.tail = seen[-3:]
        if b"\r\n\r\n" in seen:
            self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        refusal = self._pending[conn]
        if refusal.answered:
            return
        refusal.answered = True
        try:
            conn.send(REFUSAL)  # small enough for any empty send buffer
            conn.shutdown(socket.SHUT_WR)  # then keep reading until the client closes: no RST
        except OSError:
            self._finish(conn)

    def _finish(self, conn: socket.socket) -> None:
        with self._lock:
            if self._pending.pop(conn, None) is None:
                return
            self._selector.unregister(conn)
        conn.close()


class _Refusal:
    def __init__(self, deadline: float):
        self.deadline = deadline
        self.tail = b""  # the last bytes read, to spot the end of the request head across reads
        self.answered = False
