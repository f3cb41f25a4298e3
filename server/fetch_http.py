"""One HTTP/1.1 GET over a connected socket, and its response read within byte bounds (`server.fetch`).

The request asks for identity encoding and a response in any other encoding
is refused: nothing is ever decompressed. The body may hold at most
`max_bytes`, and everything else received (status line, headers, chunk
framing and trailers) at most 64 KiB and a 32nd of that: a flood of one-byte
chunks or trailer lines, a loop of Python each, is cut off.
"""

from __future__ import annotations

import http.client
import io
import socket

from server.errors import ClientError, image_too_large
from server.fetch_url import Target

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024
# What may arrive beyond the body itself (status line, headers, chunk framing,
# trailers): this much, plus 1/32 of the body's limit.
_HEAD_BYTES = 64 * 1024
_USER_AGENT = "CAP-image-download/0.1"


def request(target: Target, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """The GET request for `target`, with its host in `Host`, and `headers` (checked for line breaks by the caller)."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (
        f"GET {target.request_target} HTTP/1.1\r\n"
        f"Host: {target.host_header}\r\n"
        f"User-Agent: {_USER_AGENT}\r\n"
        "Accept: */*\r\n"
        "Accept-Encoding: identity\r\n"
        f"{extra}"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")


class Wire(io.RawIOBase):
    """The socket as a readable stream that counts every byte received, and bounds all but the body's.

    The reader reports the body's bytes (`body_bytes`); each receive, inside
    http.client's own loops, checks the rest, allowing a read (of body not yet
    reported, and of what is read ahead) on top."""

    def __init__(self, sock: socket.socket, max_bytes: int):
        self._sock = sock
        self._max_bytes = max_bytes
        self._allowance = max_bytes // 32 + _HEAD_BYTES
        self._received = 0
        self.body_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self._sock.recv_into(buffer)
        self._received += count
        if self._received - self.body_bytes > self._allowance + 2 * _CHUNK_BYTES:
            raise ClientError(
                "image_too_large",
                f"The image server sent more than {self._allowance:,} bytes of status line, headers and "
                f"chunk framing besides the image, for an image limited to {self._max_bytes:,} bytes.",
            )
        return count

    def makefile(self, mode: str) -> io.BufferedReader:
        """What http.client.HTTPResponse reads the response from."""
        return io.BufferedReader(self)


def read_response(target: Target, wire: Wire, max_bytes: int) -> bytes | str:
    """The body, or the Location a redirect points to (not yet joined to the URL)."""
    response = http.client.HTTPResponse(wire, method="GET")  # type: ignore[arg-type]
    response.begin()
    location = response.getheader("Location")
    if response.status in _REDIRECT_STATUSES and location:
        return location.encode("latin-1").decode("utf-8", "replace")  # http.client reads headers as Latin-1
    if response.status >= 300:
        raise ClientError(
            "image_download_failed",
            f"The image server {target.host} answered HTTP {response.status}; "
            "check that the URL is correct and publicly readable.",
        )
    _refuse_encodings(target, response)
    declared = response.getheader("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise image_too_large(max_bytes)
    body = bytearray()
    while chunk := response.read(_CHUNK_BYTES):
        body += chunk
        wire.body_bytes = len(body)
        if len(body) > max_bytes:
            raise image_too_large(max_bytes)
    if response.length:  # the connection closed before Content-Length bytes came
        raise http.client.IncompleteRead(bytes(body), response.length)
    return bytes(body)


def _refuse_encodings(target: Target, response: http.client.HTTPResponse) -> None:
    """Only identity content and plain or chunked transfer: nothing to decompress."""
    content = {value.strip().lower() for value in response.headers.get_all("Content-Encoding", [])}
    transfer = [value.strip().lower() for value in response.headers.get_all("Transfer-Encoding", [])]
    if content - {"", "identity"} or transfer not in ([], ["chunked"]):
        encoding = ", ".join(sorted(content - {"", "identity"}) + transfer)
        raise ClientError(
            "image_download_failed",
            f"The image server {target.host} sent the image encoded ({encoding}) although "
            "this server asks for it unencoded (Accept-Encoding: identity); serve the plain image file.",
        )
