"""Plain HTTP GETs to a server under test."""

from __future__ import annotations

import urllib.error
import urllib.request


def get(port: int, path: str, headers: dict | None = None, timeout: float = 10) -> tuple[int, bytes]:
    """The status and body of GET `path` on 127.0.0.1:`port`, error statuses included."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
