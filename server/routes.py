"""Plain HTTP on the WebSocket port: the page, /ping, /health, /metrics, and the token check.

websockets calls `Routes.process_request` for every request before the
handshake: an HTTP answer here ends it, `None` lets the WebSocket upgrade on
`/` go on to a conversation.
"""

from __future__ import annotations

import http
import json
import threading
import time
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection

from server import __version__, connection_slots, image_layout, images
from server.config import Settings
from server.adapters.calls import HttpRequest
from server.connection_slots import ConnectionSlots
from server.front import Front
from server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from server.metrics import Metrics
from server.protocol import PROTOCOL_VERSION
from server.store import Store, StoreUnavailable
from server.tokens import Tokens

# The page people use: a few static files, read once. They hold no secret, so
# they are served without a token; the page's WebSocket upgrade needs one like
# any other. `/` is index.html; the others are under /page/.
PAGE_DIR = Path(__file__).resolve().parent / "page"
PAGE = (PAGE_DIR / "index.html").read_bytes()
_CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
PAGE_FILES = {
    f"/page/{path.name}": (path.read_bytes(), _CONTENT_TYPES[path.suffix])
    for path in sorted(PAGE_DIR.iterdir())
    if path.suffix in _CONTENT_TYPES
}
# The page and its files load nothing from elsewhere and run no inline code:
# scripts, styles and connections (its WebSocket and /health) are its own
# origin's. Images are the exception: it shows the image the user opens, from
# the URL they give (http, https, data:) or a local file (blob:). It may not
# be framed, so that no other site can overlay it to steal clicks.
PAGE_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' http: https: data: blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Frame-Options", "DENY"),
)
# How long the store's and the disk's state is reused by /health: anyone may
# call /health, and each look costs database operations (a small write, and
# request units on Cosmos DB) and a small disk write.
HEALTH_CACHE_SECONDS = 1.0


def _response(
    status: http.HTTPStatus,
    body: bytes,
    content_type: str = "text/plain; charset=utf-8",
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))), *extra_headers])
    return Response(status.value, status.phrase, headers, body)


def _adapter_request(path: str, request: Request) -> HttpRequest:
    """A GET as the adapters see it (server/front.py); repeated headers are joined, as HTTP reads them."""
    headers: dict[str, str] = {}
    for name, value in request.headers.raw_items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return HttpRequest("GET", path, urlsplit(request.path).query, headers, b"")


class Health:
    """`/health`: fresh for what costs nothing, at most HEALTH_CACHE_SECONDS old for the store and the disk."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        model_loaded: Callable[[], bool],
        connections: Callable[[], int],
        draining: threading.Event,
    ):
        self.settings = settings
        self.store = store
        self.model_loaded = model_loaded
        self.connections = connections
        self.draining = draining
        self._lock = threading.Lock()
        self._checked_at = -float("inf")
        self._storage: tuple[str, int | None, str, int | None] = ("unknown", None, "unknown", None)

    def state(self) -> tuple[bool, dict]:
        store_state, queue_depth, images_state, free_bytes = self._storage_state()
        model_loaded = self.model_loaded()
        body = {
            "model_loaded": model_loaded,
            "store": store_state,
            "images": images_state,
            "images_free_mb": None if free_bytes is None else free_bytes // 2**20,
            "queue_depth": queue_depth,
            "connections": self.connections(),
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
        }
        healthy = model_loaded and store_state == "ok" and images_state == "ok" and not self.draining.is_set()
        return healthy, body

    def _storage_state(self) -> tuple[str, int | None, str, int | None]:
        with self._lock:  # one caller looks; the others wait for its answer
            if time.monotonic() - self._checked_at >= HEALTH_CACHE_SECONDS:
                self._storage = self._look()
                self._checked_at = time.monotonic()
            return self._storage

    def _look(self) -> tuple[str, int | None, str, int | None]:
        store_state, queue_depth = "ok", None
        try:
            self.store.check()
            queue_depth = self.store.count_queued()
        except StoreUnavailable as exc:
            store_state = f"error: {exc}"
        image_dir = self.settings.image_dir
        problem = images.writable_problem(image_dir) or image_layout.floor_problem(
            image_dir, self.settings.min_free_disk_mb
        )
        images_state = f"error: {problem}: new images are refused" if problem else "ok"
        return store_state, queue_depth, images_state, image_layout.free_bytes(image_dir)


class Routes:
    def __init__(
        self,
        settings: Settings,
        health: Health,
        metrics: Metrics,
        draining: threading.Event,
        slots: ConnectionSlots,
        front: Front,
    ):
        self.front = front
        self.settings = settings
        self.health = health
        self.metrics = metrics
        self.draining = draining
        self.tokens = Tokens(settings.api_token)
        self.slots = slots

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/ping":
            return _response(http.HTTPStatus.OK, b"pong")
        if len(request.headers.get_all("Authorization")) > 1:
            return _response(http.HTTPStatus.BAD_REQUEST, b"send one Authorization header, not several")
        if path == "/health":
            healthy, body = self.health.state()
            status = http.HTTPStatus.OK if healthy else http.HTTPStatus.SERVICE_UNAVAILABLE
            if not self.authorized(request):
                body = {"healthy": healthy}  # details only for callers that hold the token
            return _response(status, json.dumps(body).encode(), "application/json")
        if path == "/metrics":
            if not self.authorized(request):
                return _response(http.HTTPStatus.UNAUTHORIZED, b"API token required for /metrics")
            return _response(http.HTTPStatus.OK, self.metrics.text(), METRICS_CONTENT_TYPE)
        if path in PAGE_FILES:
            return _response(http.HTTPStatus.OK, *PAGE_FILES[path], PAGE_HEADERS)
        adapter = self.front.route(_adapter_request(path, request))
        if adapter is not None:
            return _response(http.HTTPStatus(adapter.status), adapter.body, adapter.content_type, adapter.headers)
        if path != "/":
            return _response(http.HTTPStatus.NOT_FOUND, b"not found")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return _response(http.HTTPStatus.OK, PAGE, "text/html; charset=utf-8", PAGE_HEADERS)
        if not self.authorized(request):
            return _response(
                http.HTTPStatus.UNAUTHORIZED, b"API token required: send 'Authorization: Bearer <token>' or ?token=<token>"
            )
        if self.draining.is_set():
            return _response(http.HTTPStatus.SERVICE_UNAVAILABLE, b"shutting down")
        refusal = self.slots.take(connection.socket, self._client(connection, request))
        if refusal is not None:
            return self._refusal(refusal)
        return None  # go on with the WebSocket handshake

    def _client(self, connection: ServerConnection, request: Request) -> str:
        """Who a connection counts against for MAX_CONNECTIONS_PER_CLIENT: its token's scope, else its address."""
        scope = self.tokens.scope(request)
        return f"token {scope}" if scope is not None else f"address {connection.remote_address[0]}"

    def _refusal(self, refusal: str) -> Response:
        status, sentence = self.slots.refusal_answer(refusal)
        return _response(http.HTTPStatus(status), sentence.encode())

    def authorized(self, request: Request) -> bool:
        """True without API_TOKEN; with it, the request must carry one of its tokens (server/tokens.py).

        API_TOKEN may list several tokens, comma-separated: one for each
        client, or a new one rolled out before the old one is withdrawn.
        """
        return self.tokens.authorized(request)
