"""Wiring: the store, the processor thread and the WebSocket/HTTP server.

One port serves both: `GET /ping`, `GET /health`, `GET /metrics` and the
page at `GET /` (server/page.html) are answered as plain HTTP in `process_request`; a
WebSocket upgrade on `/` starts a `Conversation` in the server's
per-connection thread.
"""

from __future__ import annotations

import errno
import hmac
import http
import json
import logging
import signal
import socket
import sqlite3
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from server import __version__, images, logs
from server.config import Settings, SettingsError
from server.connection import Conversation
from server.listener import LimitedListener
from server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from server.metrics import Metrics
from server.processor import JobEvents, Processor
from server.sam_model import (
    CheckpointError, DeviceError, SamModel, check_checkpoint, check_device, load_sam, set_torch_threads,
)
from server.store import Store, StoreUnavailable, open_store

log = logging.getLogger(__name__)

# The WebSocket layer drops messages past this multiple of MAX_MESSAGE_BYTES
# (plus room for an inline image, see `hard_message_limit`) with a bare close
# 1009; up to it, the request is read and refused with a typed
# `message_too_large` error.
HARD_MESSAGE_LIMIT_FACTOR = 4
WATCHDOG_SECONDS = 1.0
# The page people use: one static file, read once. It holds no secret, so it
# is served without a token; its WebSocket upgrade needs one like any other.
PAGE = (Path(__file__).resolve().parent / "page.html").read_bytes()


def hard_message_limit(settings: Settings) -> int:
    """The largest message the WebSocket layer reads at all."""
    return settings.max_message_bytes * HARD_MESSAGE_LIMIT_FACTOR + images.data_url_max_chars(
        settings.max_image_bytes
    )


def _http_response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return Response(status.value, status.phrase, headers, body)


class App:
    """The running service. `start()` returns at once; `stop()` ends it cleanly."""

    def __init__(self, settings: Settings, store: Store, load_model: Callable[[], SamModel]):
        self.settings = settings
        self.store = store
        self.server_id = f"cap-{uuid.uuid4().hex[:8]}"
        self.events = JobEvents()
        self.admission = threading.Lock()  # makes the queue_full check and insert one step
        self.stop_requested = threading.Event()  # a signal, or a fatal error: wait() returns
        self.draining = threading.Event()  # refuse new work; stored requests go on
        self.stopping = threading.Event()  # waiting conversations end now with shutting_down
        self.fatal: Exception | None = None
        self.processor = Processor(
            store=store,
            settings=settings,
            load_model=load_model,
            events=self.events,
            server_id=self.server_id,
            on_fatal=self._on_fatal,
        )
        self._connections = 0
        self._connections_lock = threading.Lock()
        self.metrics = Metrics(self)
        self._server: Server | None = None
        self._serve_thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.socket.getsockname()[1]

    def start(self) -> None:
        self.processor.start()
        self.listener = LimitedListener(
            socket.create_server((self.settings.host, self.settings.port)), self.settings.max_connections
        )
        self._server = serve(
            self._handle,
            sock=self.listener,
            process_request=self._process_request,
            max_size=hard_message_limit(self.settings),
        )
        self._server.handler = self.listener.track(self._server.handler)
        self._serve_thread = threading.Thread(target=self._server.serve_forever, name="accept", daemon=True)
        self._serve_thread.start()
        log.info("listening on %s:%d (server id %s)", self.settings.host, self.port, self.server_id)

    @property
    def connections(self) -> int:
        return self._connections

    def wait(self) -> None:
        """Block until a stop is requested (signal) or the service cannot go on.

        The processor thread never dies by design; if it does anyway, this
        returns with `fatal` set, so that the process exits non-zero and a
        supervisor (Docker) restarts it, rather than serving without
        processing.
        """
        while not self.stop_requested.wait(WATCHDOG_SECONDS):
            if self.processor.ready.is_set() and not self.processor.is_alive():
                self.fatal = RuntimeError("The processor thread died (see the log); exiting so that it is restarted.")
                log.critical("%s", self.fatal)
                return

    def stop(self) -> None:
        """Drain, then end whoever still waits, then stop the processor.

        1. Draining: new connections get 503 and new requests `shutting_down`;
           requests already stored go on for up to DRAIN_SECONDS.
        2. Stopping: conversations still waiting send `shutting_down` and mark
           their records interrupted; then the server and the processor stop.
        """
        self.draining.set()
        if self.fatal is None:
            deadline = time.monotonic() + self.settings.drain_seconds
            while self._connections and time.monotonic() < deadline:
                time.sleep(0.05)
        self.stopping.set()
        if self._server is not None:
            # Conversations see `stopping` within a fraction of a second;
            # shutdown() waits for them to finish.
            self._server.shutdown(close_connections=False)
        self.processor.stop(timeout=30)
        self.store.close()

    def _on_fatal(self, exc: Exception) -> None:
        self.fatal = exc
        self.stop_requested.set()

    # --- per connection --------------------------------------------------------------

    def _handle(self, ws: ServerConnection) -> None:
        with self._connections_lock:
            self._connections += 1
        try:
            Conversation(ws, self).run()
        finally:
            with self._connections_lock:
                self._connections -= 1

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/ping":
            return _http_response(http.HTTPStatus.OK, b"pong", "text/plain; charset=utf-8")
        if path == "/health":
            healthy, body = self.health()
            status = http.HTTPStatus.OK if healthy else http.HTTPStatus.SERVICE_UNAVAILABLE
            if not self._authorized(request):
                body = {"healthy": healthy}  # details only for callers that hold the token
            return _http_response(status, json.dumps(body).encode(), "application/json")
        if path == "/metrics":
            if not self._authorized(request):
                return _http_response(
                    http.HTTPStatus.UNAUTHORIZED, b"API token required for /metrics", "text/plain; charset=utf-8"
                )
            return _http_response(http.HTTPStatus.OK, self.metrics.text(), METRICS_CONTENT_TYPE)
        if path != "/":
            return _http_response(http.HTTPStatus.NOT_FOUND, b"not found", "text/plain; charset=utf-8")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return _http_response(http.HTTPStatus.OK, PAGE, "text/html; charset=utf-8")
        if not self._authorized(request):
            return _http_response(
                http.HTTPStatus.UNAUTHORIZED,
                b"API token required: send 'Authorization: Bearer <token>' or ?token=<token>",
                "text/plain; charset=utf-8",
            )
        if self.draining.is_set():
            return _http_response(
                http.HTTPStatus.SERVICE_UNAVAILABLE, b"shutting down", "text/plain; charset=utf-8"
            )
        return None  # go on with the WebSocket handshake

    def _authorized(self, request: Request) -> bool:
        """True without API_TOKEN; with it, the request must carry one of its tokens.

        A token comes as a Bearer header or a ?token= parameter and is
        compared in constant time. API_TOKEN may list several tokens,
        comma-separated, so that a new one can be rolled out before the old
        one is withdrawn.
        """
        if not self.settings.api_token:
            return True
        accepted = [token.strip().encode() for token in self.settings.api_token.split(",") if token.strip()]
        offered = []
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            offered.append(credentials.strip())
        offered += parse_qs(urlsplit(request.path).query).get("token", [])
        return any(hmac.compare_digest(token.encode(), good) for token in offered for good in accepted)

    def health(self) -> tuple[bool, dict]:
        store_state, queue_depth = "ok", None
        try:
            self.store.check()
            queue_depth = self.store.count_queued()
        except StoreUnavailable as exc:
            store_state = f"error: {exc}"
        model_loaded = self.processor.ready.is_set() and self.processor.is_alive()
        body = {
            "model_loaded": model_loaded,
            "store": store_state,
            "queue_depth": queue_depth,
            "connections": self.connections,
            "version": __version__,
        }
        return model_loaded and store_state == "ok" and not self.draining.is_set(), body


def production_model_loader(settings: Settings) -> Callable[[], SamModel]:
    def load() -> SamModel:
        threads = set_torch_threads(settings.torch_threads)
        log.info("torch uses %d CPU threads", threads)
        sam = load_sam(settings.sam_model_type, settings.sam_checkpoint, settings.sam_device)
        return SamModel(sam, settings.sam_model_type, cache_size=settings.embedding_cache_size)

    return load


def serve_forever(settings: Settings) -> int:
    """`python -m server`: run until SIGTERM or SIGINT; the process exit code.

    What stops it from starting (the device, the checkpoint, the port, the
    store) is one sentence on stderr and exit status 2, before any thread starts.
    """
    try:
        check_device(settings.sam_device)
        check_checkpoint(settings.sam_model_type, settings.sam_checkpoint)
        with _listening_socket(settings):
            pass  # the port is free (App binds it again, below)
        store = _open_store(settings)
    except (DeviceError, CheckpointError, SettingsError) as exc:
        print(f"cap: {exc}", file=sys.stderr)
        return 2
    app = App(settings, store, production_model_loader(settings))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: app.stop_requested.set())
    try:
        app.start()
    except OSError as exc:  # taken in the moment since the check above
        print(f"cap: {_listen_error(settings, exc)}", file=sys.stderr)
        return 2
    app.wait()
    log.info("stopping")
    app.stop()
    if app.fatal is not None:
        print(f"cap: {app.fatal}", file=sys.stderr)
        return 2
    return 0


def _listen_error(settings: Settings, exc: OSError) -> str:
    where = f"{settings.host}:{settings.port}"
    if exc.errno == errno.EADDRINUSE:
        return f"Port {settings.port} is in use on {settings.host} (another CAP?): stop that process, or set PORT to a free port."
    if exc.errno == errno.EACCES:
        return f"Not allowed to listen on {where}: set PORT to 1024 or above, or run as a user that may bind it."
    return f"Cannot listen on {where} ({exc.strerror}): set HOST to an address of this machine (0.0.0.0 for all) and PORT to a free port."


def _listening_socket(settings: Settings) -> socket.socket:
    try:
        return socket.create_server((settings.host, settings.port))
    except OSError as exc:
        raise SettingsError(_listen_error(settings, exc)) from None


def _open_store(settings: Settings) -> Store:
    try:
        return open_store(settings)
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SettingsError(
            f"Cannot open the SQLite store {settings.sqlite_path.resolve()} ({reason}): make its folder writable "
            "by this user (in Docker, a volume on /app/data owned by uid 10001), or set SQLITE_PATH elsewhere."
        ) from None


def configure_logging(settings: Settings) -> None:
    logs.configure(settings.log_level, settings.log_format)
