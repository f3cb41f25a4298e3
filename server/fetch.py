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
one byte at a time is cut off. Nothing is ever decompressed, and every byte
received is bounded, the body's by `max_bytes` (`server.fetch_http`).

This module follows the redirects and runs each hop; the steps live beside
it: `server.fetch_url` (1), `server.fetch_address` (2, and 3's connect),
`server.fetch_http` (the request and the bounded response reader) and
`server.fetch_errors` (what each failure means for the client).
"""

from __future__ import annotations

import dataclasses
import functools
import http.client
import ssl
import time
from urllib.parse import urljoin, urlsplit

from server.deadlines import socket_deadline
from server.errors import ClientError
from server.fetch_address import check_addresses, connect, resolve
from server.fetch_errors import failure, timed_out
from server.fetch_http import Wire, read_response, request
from server.fetch_url import Target, check_characters
from server.data_urls import is_data_url


@dataclasses.dataclass(frozen=True)
class Trusted:
    """An origin the operator configured (LABEL_STUDIO_URL): fetched even when private, with its own headers."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def origin(self) -> tuple[bool, str, int]:
        target = Target.parse(self.url, redirected=False)
        return target.https, target.host, target.port

    def __repr__(self) -> str:  # the headers carry a secret: never in a log or a traceback
        return f"Trusted({self.url!r}, {len(self.headers)} headers)"


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
    trusted: Trusted | None = None,
) -> bytes:
    """The body of `url` (http or https), following at most `max_redirects` redirects.

    Raises ClientError for everything that goes wrong: `invalid_request` for a
    URL that is not strictly http(s) (see the module's docstring),
    `image_url_forbidden`, `image_download_failed` or `image_too_large`.
    `trusted` names one origin that is let through even when private, and
    the only one that gets its headers (Label Studio's API key): a redirect
    elsewhere gets neither.
    """
    if is_data_url(url):
        # Only a record's short description of an inline image reaches here:
        # the image itself was sent to, and saved by, another server.
        raise ClientError(
            "image_download_failed",
            "The image was sent inline as a data: URL, and only the server that received it keeps it.",
        )
    give_up_at = time.monotonic() + timeout
    target = Target.parse(url, redirected=False)
    for _ in range(max_redirects + 1):
        here = trusted is not None and trusted.origin == (target.https, target.host, target.port)
        body_or_location = _fetch_one(
            target, max_bytes, timeout, give_up_at, allow_private or here, trusted.headers if here else ()
        )
        if isinstance(body_or_location, bytes):
            return body_or_location
        location = body_or_location
        check_characters(location, redirected=True)
        target = Target.parse(urljoin(target.url, location), redirected=True)
    raise ClientError(
        "image_download_failed",
        f"The image URL redirected more than {max_redirects} times; use the image's direct URL.",
    )


def _fetch_one(
    target: Target,
    max_bytes: int,
    timeout: float,
    give_up_at: float,
    allow_private: bool,
    headers: tuple[tuple[str, str], ...],
) -> bytes | str:
    """The body, or the Location a redirect points to (not yet joined to the URL)."""
    addresses = resolve(target, give_up_at, timeout)
    if not allow_private:
        check_addresses(target, addresses)
    sock = connect(target, addresses, give_up_at, timeout)
    try:
        if target.https:  # no I/O yet: the handshake waits until the deadline is armed
            sock = _tls_context().wrap_socket(sock, server_hostname=target.host, do_handshake_on_connect=False)
        with socket_deadline(sock, give_up_at - time.monotonic()) as deadline:
            try:
                if target.https:
                    sock.do_handshake()
                sock.sendall(request(target, headers))
                outcome = read_response(target, Wire(sock, max_bytes), max_bytes)
            except ClientError:
                raise
            except Exception as exc:
                # A socket shut down at the deadline surfaces as any of many errors.
                if deadline.expired or isinstance(exc, TimeoutError):
                    raise timed_out(target.host, timeout) from None
                if not isinstance(exc, (OSError, http.client.HTTPException, ValueError)):
                    raise
                raise failure(target.host, exc) from None
            if deadline.expired:  # a body without Content-Length ends at the shutdown
                raise timed_out(target.host, timeout)
            return outcome
    finally:
        sock.close()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system's trusted certificates, host names checked (tests substitute their own CA)."""
    return ssl.create_default_context()
