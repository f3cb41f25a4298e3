"""The adapters' front: HTTP routes beside the WebSocket on the one port, and CVAT's port.

websockets' server reads only GET requests; the adapters need POST on the
same port, since users publish one. So each accepted socket is looked at
first: its first bytes are peeked (not read) and a request that is not a GET
is read and answered here (server/http_wire.py: bounded head and body, one
deadline), while a GET goes on to websockets untouched, where
`Routes.process_request` sends the adapters' GET routes back here through
`Front.route`.

A mount is a path prefix and its adapter's `handle`: `/label-studio/` and
`/x-anylabeling/` on the main port. CVAT's routes are mounted on a port of
their own (CVAT_PORT, unset: off), served by `PortServer`, because CVAT
sends no token: only the operator's private network should reach them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from typing import Any, Callable

from server import http_wire
from server.adapters.calls import HttpRequest, HttpResponse
from server.connection_slots import ConnectionSlots
from server.http_wire import HttpRefusal

log = logging.getLogger(__name__)

Handler = Callable[[HttpRequest], HttpResponse]
SocketHandler = Callable[[socket.socket, Any], None]

REQUEST_SECONDS = 30.0  # the whole request, head and body (408 past it)
PEEK_SECONDS = 10.0  # as websockets' own opening deadline: a silent socket is ended the same way
PEEK_POLL_SECONDS = 0.01


class Front:
    def __init__(
        self, mounts: dict[str, Handler], *, max_body: int, send_timeout: float, slots: ConnectionSlots | None = None
    ):
        self.mounts = mounts
        self.slots = slots  # the main port's: a POST holds a place, as a WebSocket does, by its address
        self.max_body = max_body
        self.send_timeout = send_timeout

    def route(self, request: HttpRequest) -> HttpResponse | None:
        """The mounted adapter's answer, or None when no adapter owns the path."""
        for prefix, handle in self.mounts.items():
            if request.path == prefix.rstrip("/") or request.path.startswith(prefix):
                try:
                    return handle(request)
                except Exception:
                    log.exception("adapter route %s %s failed", request.method, request.path)
                    return json_response(500, {"error": "The server hit an unexpected error; it has been logged."})
        return None

    def before_websockets(self, server: Any, websocket_handler: SocketHandler) -> SocketHandler:
        """The per-socket handler for the main port: a request that is not a GET is served here, the rest by websockets."""

        def handle(sock: socket.socket, address: Any) -> None:
            if starts_with_get(sock):
                websocket_handler(sock, address)
                return
            try:
                self.serve(sock)
            finally:
                # websockets' own handler forgets its thread as it ends; this one must too.
                with server.lock:
                    server.handler_threads.discard(threading.current_thread())

        return handle

    def serve(self, sock: socket.socket) -> None:
        """Read one request, answer it, close the socket."""
        started = time.perf_counter()
        request: HttpRequest | None = None
        try:
            try:
                request = http_wire.read_request(sock, max_body=self.max_body, seconds=REQUEST_SECONDS)
                response = self._refusal(sock) or self.route(request) or not_found()
            except HttpRefusal as refusal:
                response = http_wire.refusal_response(refusal)
            http_wire.write_response(sock, response, self.send_timeout)
            log.info(
                "http %s %s status=%d total_ms=%.1f",
                request.method if request else "-", request.path if request else "-",
                response.status, (time.perf_counter() - started) * 1000,
            )
        except OSError as exc:  # the client left, or stopped reading
            log.info("http request ended early: %s", exc)
        finally:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


    def _refusal(self, sock: socket.socket) -> HttpResponse | None:
        """MAX_CONNECTIONS and MAX_CONNECTIONS_PER_CLIENT, counted with the WebSockets; the place is given back
        when the socket's handler ends (LimitedListener.track)."""
        if self.slots is None:
            return None
        try:
            refusal = self.slots.take(sock, f"address {sock.getpeername()[0]}")
        except OSError:
            return None  # the client is gone: nothing will be sent anyway
        if refusal is None:
            return None
        status, sentence = self.slots.refusal_answer(refusal)
        return HttpResponse(status, (sentence + "\n").encode(), "text/plain; charset=utf-8")


def starts_with_get(sock: socket.socket) -> bool:
    """Whether the request on `sock` is a GET (or has not said yet within PEEK_SECONDS): nothing is consumed."""
    give_up_at = time.monotonic() + PEEK_SECONDS
    try:
        while True:
            left = give_up_at - time.monotonic()
            if left <= 0:
                return True
            sock.settimeout(left)
            seen = sock.recv(4, socket.MSG_PEEK)
            if len(seen) == 4 or not seen or not b"GET ".startswith(seen):
                return not seen or seen == b"GET "
            time.sleep(PEEK_POLL_SECONDS)  # "GE" so far: wait for the rest of the method
    except OSError:  # timed out or reset: websockets ends it as it ends any such socket
        return True
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(None)


def json_response(status: int, body: Any, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    return HttpResponse(status, json.dumps(body).encode(), "application/json", headers)


def not_found() -> HttpResponse:
    return HttpResponse(404, b"not found\n", "text/plain; charset=utf-8")


class PortServer:
    """A port that only the front serves (CVAT_PORT): every method, at most `max_connections` at once."""

    def __init__(self, front: Front, host: str, port: int, max_connections: int):
        self.front = front
        self.address = (host, port)
        self.sock: socket.socket | None = None
        self._places = threading.BoundedSemaphore(max_connections)
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept_forever, name=f"accept-{port}", daemon=True)

    @property
    def port(self) -> int:
        assert self.sock is not None, "start() first"
        return self.sock.getsockname()[1]

    def start(self) -> None:
        self.sock = socket.create_server(self.address)
        self._thread.start()
        log.info("CVAT's routes on %s:%d (CVAT_PORT)", self.address[0], self.port)

    def close(self, timeout: float) -> None:
        """Stop accepting; wait up to `timeout` for the requests in flight."""
        self._closed.set()
        if self.sock is None:
            return
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout)
        give_up_at = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, give_up_at - time.monotonic()))

    def _accept_forever(self) -> None:
        assert self.sock is not None
        while not self._closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            if not self._places.acquire(blocking=False):
                _refuse(conn)
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), name="cvat-request", daemon=True)
            with self._lock:
                self._threads.add(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.front.serve(conn)
        finally:
            self._places.release()
            with self._lock:
                self._threads.discard(threading.current_thread())


def _refuse(conn: socket.socket) -> None:
    """Past the bound: 503 at once, without reading (the request may be lost; the status is what matters)."""
    with contextlib.suppress(OSError):
        conn.settimeout(1.0)
        http_wire.write_response(
            conn, HttpResponse(503, b"too many connections; retry\n", "text/plain; charset=utf-8"), 1.0
        )
    conn.close()
