"""A real WebSocket client for tests: send one request, collect every message."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


@dataclasses.dataclass
class Exchange:
    messages: list[dict[str, Any]]
    close_code: int | None

    @property
    def types(self) -> list[str]:
        return [m["type"] for m in self.messages]

    @property
    def last(self) -> dict[str, Any]:
        return self.messages[-1]


def exchange(url: str, request: dict | str | bytes, timeout: float = 120) -> Exchange:
    """Send `request` (a dict is sent as JSON) and read until the server closes."""
    payload = json.dumps(request) if isinstance(request, dict) else request
    messages = []
    with connect(url, open_timeout=10, max_size=None) as ws:
        ws.send(payload)
        try:
            while True:
                messages.append(json.loads(ws.recv(timeout=timeout)))
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd is not None else None
    return Exchange(messages, code)
