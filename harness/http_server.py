"""A real local HTTP server for download tests.

    with ImageHTTPServer() as server:
        server.add("/cat.png", png_bytes)
        download(server.url("/cat.png"), ...)

Routes match the request path exactly (query included); anything else is 404.
Every response closes its connection. `hits[path]` counts requests per path,
`host_headers[path]` lists the Host header of each, `headers[path]` all the
headers of each (names in lower case). With `tls` (a server-side
SSLContext) it speaks https. `add_raw` sends bytes verbatim, for responses no
honest server sends: dripped, flooded or malformed.
"""

from __future__ import annotations

import collections
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

Respond = Callable[[BaseHTTPRequestHandler], None]


class ImageHTTPServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self.host_headers: collections.defaultdict[str, list[str]] = collections.defaultdict(list)
        self.headers: collections.defaultdict[str, list[dict[str, str]]] = collections.defaultdict(list)
        self._address = (host, port)
        self._tls = tls
        self._routes: dict[str, Respond] = {}
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ImageHTTPServer:
        self._stopping.clear()
        self._server = ThreadingHTTPServer(self._address, self._handler_class())
        if self._tls is not None:
            self._server.socket = self._tls.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._stopping.set()
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self) -> ImageHTTPServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, path: str, host: str | None = None) -> str:
        """The URL of `path`, naming `host` (default: the address listened on)."""
        scheme = "http" if self._tls is None else "https"
        return f"{scheme}://{host or self._address[0]}:{self.port}{path}"

    # --- routes -------------------------------------------------------------

    def add(
        self,
        path: str,
        body: bytes,
        content_type: str = "image/png",
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer `body` with an honest Content-Length; `headers` override the defaults."""
        all_headers = {"Content-Type": content_type, "Content-Length": str(len(body))}
        all_headers.update(headers or {})

        def respond(handler: BaseHTTPRequestHandler) -> None:
            _send_head(handler, status, all_headers)
            handler.wfile.write(body)

        self._routes[path] = respond

    def add_redirect(self, path: str, location: str, status: int = 302) -> None:
        """Answer `status` with `Location: location` (sent verbatim, so it may be relative)."""
        self.add(path, b"", "text/plain", status=status, headers={"Location": location})

    def add_slow(self, path: str, body: bytes, delay_per_chunk: float, chunk_size: int) -> None:
        """Send `body` (honest Content-Length) `chunk_size` bytes at a time, sleeping between."""

        def respond(handler: BaseHTTPRequestHandler) -> None:
            head = {"Content-Type": "image/png", "Content-Length": str(len(body))}
            _send_head(handler, 200, head)
            for start in range(0, len(body), chunk_size):
                handler.wfile.write(body[start : start + chunk_size])
                handler.wfile.flush()
                time.sleep(delay_per_chunk)

        self._routes[path] = respond

    def add_lying_length(self, path: str, body: bytes, claimed_length: int | None) -> None:
        """Send all of `body` whatever the headers say.

        With `claimed_length`, the response says `Content-Length: claimed_length`
        but is sent chunked (Transfer-Encoding wins, so a client reads it all).
        With None, it has no Content-Length and simply ends when the socket closes.
        """

        def respond(handler: BaseHTTPRequestHandler) -> None:
            if claimed_length is None:
                _send_head(handler, 200, {"Content-Type": "image/png"})
                handler.wfile.write(body)
                return
            _send_head(
                handler,
                200,
                {
                    "Content-Type": "image/png",
                    "Content-Length": str(claimed_length),
                    "Transfer-Encoding": "chunked",
                },
            )
            for start in range(0, len(body), 4096):
                piece = body[start : start + 4096]
                handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            handler.wfile.write(b"0\r\n\r\n")

        self._routes[path] = respond

    def add_raw(
        self, path: str, head: bytes, then: bytes = b"", every: float = 0.0, for_seconds: float = 0.0
    ) -> None:
        """Send `head` verbatim (status line, headers, body: anything), then `then`
        every `every` seconds for `for_seconds`, or until the client leaves or the
        server stops."""
        stopping = self._stopping

        def respond(handler: BaseHTTPRequestHandler) -> None:
            handler.wfile.write(head)
            handler.wfile.flush()
            give_up_at = time.monotonic() + for_seconds
            while then and time.monotonic() < give_up_at and not stopping.wait(every):
                handler.wfile.write(then)
                handler.wfile.flush()

        self._routes[path] = respond

    # --- plumbing -----------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        routes, hits, host_headers, all_headers = self._routes, self.hits, self.host_headers, self.headers

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                hits[self.path] += 1
                host_headers[self.path].append(self.headers.get("Host", ""))
                all_headers[self.path].append({name.lower(): value for name, value in self.headers.items()})
                self.close_connection = True
                respond = routes.get(self.path)
                try:
                    if respond is None:
                        _send_head(self, 404, {"Content-Type": "text/plain", "Content-Length": "9"})
                        self.wfile.write(b"not found")
                    else:
                        respond(self)
                except (ConnectionError, ssl.SSLError):
                    pass  # the client gave up, as download tests make it do

            def log_message(self, format: str, *args) -> None:
                pass

        return Handler


def _send_head(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str]) -> None:
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Connection", "close")
    handler.end_headers()
