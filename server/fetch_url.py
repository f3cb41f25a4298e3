"""Reading an image URL strictly, before anything is resolved or connected to (`server.fetch`).

http or https, a host and a port, and nothing on which URL parsers disagree
about where the host ends: no backslash, whitespace or control character
anywhere, no user name or password, no percent-encoding in the host or port.
A URL the client sent is refused `invalid_request`; one a redirect pointed
to, `image_download_failed`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from server.errors import ClientError

# host[:port], the host a name, an IPv4 address or a bracketed IPv6 address.
_AUTHORITY = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\[\]:@/?#%\\]+)(?::(?P<port>[0-9]{0,5}))?")
# Whitespace (all that str.isspace() calls so) and control characters (Unicode category Cc): one C-speed search.
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
# Characters a request target may carry as they are; anything else is percent-encoded.
_TARGET_SAFE = "!$&'()*+,;=:@/?%~[]"


@dataclass(frozen=True)
class Target:
    """One URL to download, read strictly: where to connect and what to ask for."""

    url: str
    https: bool
    host: str  # ASCII (IDNA) form, without brackets
    port: int
    request_target: str  # path and query, as sent on the request line

    @classmethod
    def parse(cls, url: str, *, redirected: bool) -> Target:
        check_characters(url, redirected)
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


def check_characters(url: str, redirected: bool) -> None:
    """Refuse a backslash, whitespace or a control character anywhere in `url`."""
    if "\\" in url:
        raise _bad_url(url, redirected, "contains a backslash, which URL readers disagree on; use /")
    if _SPACE_OR_CONTROL.search(url):
        raise _bad_url(url, redirected, "contains a space or a control character; percent-encode it")


def _bad_url(url: str, redirected: bool, problem: str) -> ClientError:
    shown = ascii(url[:200])
    if redirected:
        return ClientError("image_download_failed", f"The image URL redirected to {shown}, which {problem}.")
    return ClientError("invalid_request", f"image_url {shown} {problem}.")
