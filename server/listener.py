"""The listening socket, with MAX_CONNECTIONS enforced before any thread starts.

websockets' threaded server starts one thread per accepted socket. Past the
limit, `LimitedListener.accept` answers HTTP 503 itself, inside the accept
loop, and closes the socket, so a flood of connections cannot make the
server start a thread for each. `track` wraps the server's per-connection
handler to count connections out again when they end.
"""

from __future__ import annotations

import select
import socket
import threading
from typing import Any, Callable

REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 46\r\n"
    b"Connection: close\r\n\r\n"
    b"too many connections (MAX_CONNECTIONS); retry\n"
)
POLL_SECONDS = 0.1


class LimitedListener:
    def __init__(self, sock: socket.socket, limit: int):
        self._sock = sock
        self.limit = limit
        self.open = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._closed = False

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
            _refuse(conn)
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

    def track(self, handler: Callable[[socket.socket, Any], None]) -> Callable[[socket.socket, Any], None]:
        """Wrap the per-connection handler so that a finished connection frees its place."""

        def handle(conn: socket.socket, address: Any) -> None:
            try:
                handler(conn, address)
            finally:
                with self._lock:
                    self.open -= 1

        return handle


def _refuse(conn: socket.socket) -> None:
    try:
        conn.setblocking(False)
        conn.send(REFUSAL)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(65536)  # drain what the client already sent, so close() sends FIN, not RST
    except OSError:
        pass
    finally:
        conn.close()
