"""Download an image URL from the public internet, guarded against server-side request forgery.

`download` is the one entry point. For the URL and then for each redirect hop:

1. The URL is read strictly: http or https, a host and a port, and nothing on
   which URL parsers disagree about where the host ends: no backslash,
   whitespace or control character anywhere, no user name or password, no
   percent-encoding in the host or port.
2. The host is resolved once, and every address it resolves to must be public
   (unless ALLOW_PRIVATE_URLS).
3. A socket is connected to one of those checked addresses itself, never to
   the name, so a second, different DNS answer (DNS rebinding) is never asked
   for. HTTP/1.1 goes over it with the URL's host in `Host`; for https, TLS
   sends that host name (SNI) and verifies the certificate against it.

One deadline covers the whole download, every hop included: the lookup is
waited for only until then, and at the deadline the socket is shut down
(`server.deadlines`), so a peer that drips its status line, headers or body
one byte at a time is cut off. The request asks for identity encoding and a
response in any other encoding is refused: nothing is ever decompressed. The
body may hold at most `max_bytes`, and everything else received (status
line, headers, chunk framing and trailers) at most 64 KiB and a 32nd of that:
a flood of one-byte chunks or trailer lines, a loop of Python each, is cut off.
"""

from __future__ import annotations

import functools
import http.client
import io
import ipaddress
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

from server.deadlines import socket_deadline
from server.errors import ClientError, image_too_large
from server.images import is_data_url

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK_BYTES = 64 * 1024
# What may arrive beyond the body itself (status line, headers, chunk framing,
# trailers): this much, plus 1/32 of the body's limit.
_HEAD_BYTES = 64 * 1024
# host[:port], the host a name, an IPv4 address or a bracketed IPv6 address.
_AUTHORITY = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\[\]:@/?#%\\]+)(?::(?P<port>[0-9]{0,5}))?")
# Whitespace (all that str.isspace() calls so) and control characters (Unicode category Cc): one C-speed search.
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
# Characters a request target may carry as they are; anything else is percent-encoded.
_TARGET_SAFE = "!$&'()*+,;=:@/?%~[]"
_USER_AGENT = "CAP-image-download/0.1"


def is_fetchable(url: str) -> bool:
    """Whether a record's `imageUrl` can be downloaded again (http or https; not data: or sha256:)."""
    return urlsplit(url).scheme in ("http", "https")


def download(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    allow_private: bool,
    max_redirects: int = 3,
) -> bytes:
    """The body of `url` (http or https), following at most `max_redirects` redirects.

    Raises ClientError for everything that goes wrong: `invalid_request` for a
    URL that is not strictly http(s) (see the module's docstring),
    `image_url_forbidden`, `image_download_failed` or `image_too_large`.
    """
    if is_data_url(url):
        # Only a record's short description of an inline image reaches here:
        # the image itself was sent to, and saved by, another server.
        raise ClientError(
            "image_download_failed",
            "The image was sent inline as a data: URL, and only the server that received it keeps it.",
        )
    give_up_at = time.monotonic() + timeout
    target = _Target.parse(url, redirected=False)
    for _ in range(max_redirects + 1):
        body_or_location = _fetch_one(target, max_bytes, timeout, give_up_at, allow_private)
        if isinstance(body_or_location, bytes):
            return body_or_location
        location = body_or_location
        _check_characters(location, redirected=True)
        target = _Target.parse(urljoin(target.url, location), redirected=True)
    raise ClientError(
        "image_download_failed",
        f"The image URL redirected more than {max_redirects} times; use the image's direct URL.",
    )


# --- reading a URL strictly ---------------------------------------------------


@dataclass(frozen=True)
class _Target:
    url: str
    https: bool
    host: str  # ASCII (IDNA) form, without brackets
    port: int
    request_target: str  # path and query, as sent on the request line

    @classmethod
    def parse(cls, url: str, *, redirected: bool) -> _Target:
        _check_characters(url, redirected)
        try:
            parts = urlsplit(url)
        except ValueError:  # brackets that do not hold an IPv6 address
            raise _bad_url(url, redirected, "has no valid host[:port]") from None
        if parts.scheme.lower() not in ("http", "https"):
            raise _bad_url(url, redirected, "is not an http or https URL")
        if "@" in parts.netloc:
            raise _bad_url(url, redirected, "carries a user name or password (user@host); this server does not send credentials")
        if "%" in parts.netloc:
            raise _bad_url(url, redirected, "percent-encodes its host or port; write them plainly")
        authority = _AUTHORITY.fullmatch(parts.netloc)
        if authority is None:
            raise _bad_url(url, redirected, "has no valid host[:port]")
        https = parts.scheme.lower() == "https"
        port = int(authority["port"] or (443 if https else 80))
        host = authority["host"].strip("[]").lower()
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise _bad_url(url, redirected, "has a host name that is not a valid internationalised domain name") from None
        if not host or not 0 < port < 65536:
            raise _bad_url(url, redirected, "has no valid host[:port]")
        request_target = quote(parts.path or "/", safe=_TARGET_SAFE)
        if parts.query:
            request_target += "?" + quote(parts.query, safe=_TARGET_SAFE)
        return cls(url, https, host, port, request_target)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.https else 80) else f"{host}:{self.port}"


def _check_characters(url: str, redirected: bool) -> None:
    if "\\" in url:
        raise _bad_url(url, redirected, "contains a backslash, which URL readers disagree on; use /")
    if _SPACE_OR_CONTROL.search(url):
        raise _bad_url(url, redirected, "contains a space or a control character; percent-encode it")


def _bad_url(url: str, redirected: bool, problem: str) -> ClientError:
    shown = ascii(url[:200])
    if redirected:
        return ClientError("image_download_failed", f"The image URL redirected to {shown}, which {problem}.")
    return ClientError("invalid_request", f"image_url {shown} {problem}.")


# --- which addresses may be connected to ---------------------------------------


def _resolve(target: _Target, give_up_at: float, timeout: float) -> list[tuple[int, tuple]]:
    """(family, socket address) for each address the host resolves to, looked up once.

    The lookup runs in a daemon thread that is waited for only until the
    deadline: the resolver has its own, longer timeouts, and a lookup left
    behind must not keep the process from exiting.
    """
    answer: dict[str, object] = {}
    done = threading.Event()

    def look_up() -> None:
        try:
            answer["infos"] = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            pass
        finally:
            done.set()

    threading.Thread(target=look_up, name="resolve", daemon=True).start()
    if not done.wait(max(0.0, give_up_at - time.monotonic())):
        raise _timed_out(target.host, timeout)
    infos = answer.get("infos")
    if not infos:
        raise ClientError(
            "image_download_failed",
            f"The image URL's host {target.host} could not be resolved; check its spelling.",
        )
    addresses = []
    for family, _, _, _, address in infos:
        if (family, address) not in addresses:
            addresses.append((family, address))
    return addresses


def _check_addresses(target: _Target, addresses: list[tuple[int, tuple]]) -> None:
    if any(_is_forbidden(ipaddress.ip_address(address[0].split("%")[0])) for _, address in addresses):
        raise ClientError(
            "image_url_forbidden",
            f"The image URL's host {target.host} resolves to a private, loopback or link-local "
            "address, which this server does not fetch; use a publicly reachable URL.",
        )


def _is_forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for any address that is not a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


# --- one request --------------------------------------------------------------


def _fetch_one(
    target: _Target, max_bytes: int, timeout: float, give_up_at: float, allow_private: bool
) -> bytes | str:
    """The body, or the Location a redirect points to (not yet joined to the URL)."""
    addresses = _resolve(target, give_up_at, timeout)
    if not allow_private:
        _check_addresses(target, addresses)
    sock = _connect(target, addresses, give_up_at, timeout)
    try:
        if target.https:  # no I/O yet: the handshake waits until the deadline is armed
            sock = _tls_context().wrap_socket(sock, server_hostname=target.host, do_handshake_on_connect=False)
        with socket_deadline(sock, give_up_at - time.monotonic()) as deadline:
            try:
                if target.https:
                    sock.do_handshake()
                sock.sendall(_request(target))
                outcome = _read_response(target, _Wire(sock, max_bytes), max_bytes)
            except ClientError:
                raise
            except Exception as exc:
                # A socket shut down at the deadline surfaces as any of many errors.
                if deadline.expired or isinstance(exc, TimeoutError):
                    raise _timed_out(target.host, timeout) from None
                if not isinstance(exc, (OSError, http.client.HTTPException, ValueError)):
                    raise
                raise _failure(target.host, exc) from None
            if deadline.expired:  # a body without Content-Length ends at the shutdown
                raise _timed_out(target.host, timeout)
            return outcome
    finally:
        sock.close()


def _connect(
    target: _Target, addresses: list[tuple[int, tuple]], give_up_at: float, timeout: float
) -> socket.socket:
    """A socket connected to the first of the checked addresses that accepts."""
    for family, address in addresses:
        remaining = give_up_at - time.monotonic()
        if remaining <= 0:
            raise _timed_out(target.host, timeout)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(remaining)
            sock.connect(address)
            return sock
        except OSError:
            sock.close()
    if give_up_at <= time.monotonic():
        raise _timed_out(target.host, timeout)
    raise ClientError(
        "image_download_failed",
        f"Could not connect to the image server {target.host}; check that it is up and reachable.",
    )


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system's trusted certificates, host names checked (tests substitute their own CA)."""
    return ssl.create_default_context()


def _request(target: _Target) -> bytes:
    return (
        f"GET {target.request_target} HTTP/1.1\r\n"
        f"Host: {target.host_header}\r\n"
        f"User-Agent: {_USER_AGENT}\r\n"
        "Accept: */*\r\n"
        "Accept-Encoding: identity\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")


class _Wire(io.RawIOBase):
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


def _read_response(target: _Target, wire: _Wire, max_bytes: int) -> bytes | str:
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


def _refuse_encodings(target: _Target, response: http.client.HTTPResponse) -> None:
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


# --- errors -------------------------------------------------------------------


def _failure(host: str, exc: OSError | http.client.HTTPException | ValueError) -> ClientError:
    """What a network, TLS or HTTP error means for the client."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ClientError(
            "image_download_failed",
            f"The TLS certificate of {host} could not be verified ({exc.verify_message}); "
            "the image must be served with a valid certificate for its host name.",
        )
    if isinstance(exc, ssl.SSLError):
        return ClientError("image_download_failed", f"The TLS connection to {host} failed; check that it serves https.")
    if isinstance(exc, http.client.IncompleteRead):
        return ClientError(
            "image_download_failed",
            f"The image server {host} closed the connection before sending the whole image.",
        )
    if isinstance(exc, OSError):
        return ClientError(
            "image_download_failed",
            f"Could not download the image from {host}: the connection failed or was cut.",
        )
    return ClientError("image_download_failed", f"The image server {host} sent a malformed HTTP response.")


def _timed_out(host: str, timeout: float) -> ClientError:
    return ClientError(
        "image_download_failed",
        f"Downloading the image from {host} took longer than the {timeout:g} s timeout.",
    )
