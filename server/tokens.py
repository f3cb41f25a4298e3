"""API tokens: whether a request carries one, and the scope it gives the request's work.

With API_TOKEN set, a request must carry one of its tokens (comma-separated)
as a Bearer header or a `?token=` parameter; tokens are compared in constant
time. Each token is a scope of its own: image hashes, result ids and shares
of the caches are seen only by requests made with the same token
(docs/protocol.md, "The token"). A scope is a short keyed hash of the token
(HMAC-SHA256, 16 hex digits), the same on every replica and after a restart,
so that records can carry it while the token itself is never stored or
logged. Without API_TOKEN every request shares one scope, None.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qs, urlsplit

from websockets.http11 import Request

SCOPE_KEY = b"cap scope of an API token"
SCOPE_HEX_DIGITS = 16


def scope_of(token: bytes) -> str:
    """The scope a token gives: it names the token's work, and cannot be turned back into the token."""
    return hmac.new(SCOPE_KEY, token, hashlib.sha256).hexdigest()[:SCOPE_HEX_DIGITS]


class Tokens:
    def __init__(self, api_token: str | None):
        self._tokens = [token.strip().encode() for token in (api_token or "").split(",") if token.strip()]

    def authorized(self, request: Request) -> bool:
        """True without API_TOKEN; with it, the request must carry one of its tokens."""
        return not self._tokens or self._carried(request) is not None

    def scope(self, request: Request) -> str | None:
        """The scope of the token the request carries; None without API_TOKEN (one scope for all)."""
        token = self._carried(request)
        return None if token is None else scope_of(token)

    def offered(self, offered: list[str]) -> tuple[bool, str | None]:
        """Whether tokens offered some other way (an adapter's header) authorize a call, and the scope they give."""
        token = self._first_match(offered)
        return (not self._tokens or token is not None), (None if token is None else scope_of(token))

    def _carried(self, request: Request) -> bytes | None:
        """The first of API_TOKEN's tokens that the request offers."""
        offered = []
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            offered.append(credentials.strip())
        offered += parse_qs(urlsplit(request.path).query).get("token", [])
        return self._first_match(offered)

    def _first_match(self, offered: list[str]) -> bytes | None:
        """The first of API_TOKEN's tokens among `offered`, every pair compared in constant time."""
        matches = [good for token in offered for good in self._tokens if hmac.compare_digest(token.encode(), good)]
        return matches[0] if matches else None
