"""One HTTP/1.1 request read from a socket within bounds, and its response written: the adapters' POST routes.

websockets' server reads only GET requests, so the front (server/front.py)
reads the others itself, here. Every byte is bounded:
- the request line and headers: MAX_HEAD_BYTES and MAX_HEADER_LINES, else 431;
- the body: a `Content-Length` over the limit is 413 before any of it is
  read; a chunked body is counted as it arrives and cut at the limit (413);
- the whole request, head and body: one deadline (408), so a client that
  drips a byte at a time is cut off. Each read waits only for what is left.
Requests are answered one per connection (`Connection: close`).

`parse_head` is pure: bytes in, a `Head` or an `HttpRefusal` out.
"""

from __future__ import annotations

import dataclasses
import http
import socket
import time
from urllib.parse import urlsplit

from server.adapters.calls import HttpRequest, HttpResponse

MAX_HEAD_BYTES = 16 * 1024
MAX_HEADER_LINES = 100
MAX_CHUNK_LINE = 1024
MAX_PHRASE = 300
_READ_BYTES = 64 * 1024
# Headers that say how long the body is, or who the caller is: one of each, or 400.
_SINGLE = ("content-length", "transfer-encoding", "authorization", "token", "expect")


class HttpRefusal(Exception):
    """A request refused before it reached a route: its status and one sentence."""

    def __init__(self, status: int, sentence: str):
        super().__init__(sentence)
        self.status = status
        self.sentence = sentence


@dataclasses.dataclass(frozen=True)
class Head:
    method: str
    path: str
    query: str
    headers: dict[str, str]


def parse_head(data: bytes) -> Head:
    """The request line and headers (without the blank line that ends them)."""
    try:
        text = data.decode("latin-1")
    except UnicodeDecodeError:  # latin-1 decodes every byte; kept for clarity of intent
        raise HttpRefusal(400, "The request head is not text.") from None
    lines = text.split("\r\n")
    if len(lines) - 1 > MAX_HEADER_LINES:
        raise HttpRefusal(431, f"The request has more than {MAX_HEADER_LINES} header lines.")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0") or not parts[0].isalpha() or not parts[1].startswith("/"):
        raise HttpRefusal(400, "The request line must be 'METHOD /path HTTP/1.1'.")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip() or any(c in name for c in " \t"):
            raise HttpRefusal(400, f"A header line is malformed: {line[:40]!r}.")
        key = name.lower()
        if key in headers:
            if key in _SINGLE:
                raise HttpRefusal(400, f"Send one {name} header, not several.")
            headers[key] += ", " + value.strip()
        else:
            headers[key] = value.strip()
    target = urlsplit(parts[1])
    return Head(parts[0].upper(), target.path, target.query, headers)


def read_request(sock: socket.socket, *, max_body: int, seconds: float) -> HttpRequest:
    """Read one request from `sock` within `seconds`; HttpRefusal for anything outside the bounds."""
    reader = _Reader(sock, time.monotonic() + seconds)
    buffer = b""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise HttpRefusal(431, f"The request head is larger than {MAX_HEAD_BYTES} bytes.")
        buffer += reader.recv()
    if end > MAX_HEAD_BYTES:
        raise HttpRefusal(431, f"The request head is larger than {MAX_HEAD_BYTES} bytes.")
    head = parse_head(buffer[:end])
    rest = buffer[end + 4 :]
    encoding = head.headers.get("transfer-encoding")
    length_text = head.headers.get("content-length")
    if encoding is not None and length_text is not None:
        raise HttpRefusal(400, "Send Content-Length or Transfer-Encoding: chunked, not both.")
    if encoding is not None:
        if encoding.lower() != "chunked":
            raise HttpRefusal(501, "Only Transfer-Encoding: chunked is understood.")
        _continue(sock, head)
        body = _read_chunked(reader, rest, max_body)
    else:
        length = _content_length(length_text)
        if length > max_body:
            raise HttpRefusal(413, f"The body is larger than the limit of {max_body:,} bytes.")
        if length > len(rest):
            _continue(sock, head)
        body = bytearray(rest)  # grows in place: a 28 MB body is not copied once per read
        while len(body) < length:
            body += reader.recv(length - len(body))
        del body[length:]
    return HttpRequest(head.method, head.path, head.query, head.headers, bytes(body))


def write_response(sock: socket.socket, response: HttpResponse, seconds: float) -> None:
    """Send the response and leave the connection closed; a client that does not read is cut at `seconds`."""
    phrase = _phrase(response.reason) or http.HTTPStatus(response.status).phrase
    lines = [
        f"HTTP/1.1 {response.status} {phrase}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in response.headers),
    ]
    sock.settimeout(seconds)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body)


def _phrase(reason: str) -> str:
    """A reason phrase as a status line may carry it: one line of printable latin-1, at most MAX_PHRASE characters."""
    kept = "".join(c if " " <= c <= "~" or "\xa0" <= c <= "\xff" else " " for c in reason[:MAX_PHRASE])
    return kept.strip()


def refusal_response(refusal: HttpRefusal) -> HttpResponse:
    return HttpResponse(refusal.status, (refusal.sentence + "\n").encode(), "text/plain; charset=utf-8")


class _Reader:
    """recv() under one absolute deadline."""

    def __init__(self, sock: socket.socket, deadline: float):
        self.sock = sock
        self.deadline = deadline

    def recv(self, most: int = _READ_BYTES) -> bytes:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _too_slow()
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(min(most, _READ_BYTES))
        except TimeoutError:
            raise _too_slow() from None
        if not data:
            raise HttpRefusal(400, "The connection ended before the request did.")
        return data


def _too_slow() -> HttpRefusal:
    return HttpRefusal(408, "The request did not arrive in time; send it whole, at once.")


def _content_length(text: str | None) -> int:
    if text is None:
        return 0
    if not text.isdigit() or len(text) > 18:
        raise HttpRefusal(400, "Content-Length must be a number of bytes.")
    return int(text)


def _continue(sock: socket.socket, head: Head) -> None:
    """Answer `Expect: 100-continue` (curl sends it for bodies over 1 MB), once the body is known to fit."""
    if head.headers.get("expect", "").lower() == "100-continue":
        sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")


def _read_chunked(reader: _Reader, rest: bytes, max_body: int) -> bytes:
    body = bytearray()
    data = bytearray(rest)
    while True:
        line, data = _line(reader, data)
        size_text = line.split(";", 1)[0].strip()
        if not size_text or len(size_text) > 16 or any(c not in "0123456789abcdefABCDEF" for c in size_text):
            raise HttpRefusal(400, "A chunk's size is not a hexadecimal number.")
        size = int(size_text, 16)
        if size == 0:
            break
        if len(body) + size > max_body:
            raise HttpRefusal(413, f"The body is larger than the limit of {max_body:,} bytes.")
        while len(data) < size + 2:
            data += reader.recv(size + 2 - len(data))
        if data[size : size + 2] != b"\r\n":
            raise HttpRefusal(400, "A chunk does not end where its size says.")
        body += data[:size]
        del data[: size + 2]
    trailers = 0
    while True:  # trailers, up to the blank line
        line, data = _line(reader, data)
        if not line:
            return bytes(body)
        trailers += 1
        if trailers > MAX_HEADER_LINES:
            raise HttpRefusal(431, f"The request has more than {MAX_HEADER_LINES} trailer lines.")


def _line(reader: _Reader, data: bytearray) -> tuple[str, bytearray]:
    while (end := data.find(b"\r\n")) < 0:
        if len(data) > MAX_CHUNK_LINE:
            raise HttpRefusal(400, "A chunk's size line is too long.")
        data += reader.recv()
    if end > MAX_CHUNK_LINE:
        raise HttpRefusal(400, "A chunk's size line is too long.")
    return data[:end].decode("latin-1"), data[end + 2 :]
