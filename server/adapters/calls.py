"""What an adapter asks of CAP, and how: the `Ask`, the HTTP request and response, the `Segmenter`.

An adapter (server/adapters/label_studio.py, cvat.py, x_anylabeling.py)
speaks one tool's API. It turns a call into an `Ask`, a protocol 1.1
request body (docs/protocol.md) plus where its image comes from, hands it
to a `Segmenter`, and turns the answer, the `result` message CAP would send
over a WebSocket, into the tool's own shape. A `ClientError` from the
segmenter carries the code and sentence a WebSocket client would get.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

# The tools, as records name them in their `client` field ("websocket" for the WebSocket protocol).
LABEL_STUDIO, CVAT, X_ANYLABELING, WEBSOCKET = "label-studio", "cvat", "x-anylabeling", "websocket"


@dataclasses.dataclass(frozen=True)
class HttpRequest:
    method: str  # upper case
    path: str  # without the query
    query: str
    headers: dict[str, str]  # names in lower case; a repeated header is refused before this is made
    body: bytes


@dataclasses.dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    reason: str = ""  # the status line's phrase instead of the standard one: where a tool shows only that (CVAT)


@dataclasses.dataclass(frozen=True)
class ImageFetch:
    """An image to download with headers of its own: Label Studio's `/data/...` files, with its API key.

    The URL's own origin (the operator's LABEL_STUDIO_URL) is trusted: it is
    fetched even when private (Label Studio beside CAP), and `headers` go to
    it only, never to a redirect's other host, and never into a log or an
    error.
    """

    url: str
    headers: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:  # the headers carry a secret
        return f"ImageFetch({self.url!r}, {len(self.headers)} headers)"


@dataclasses.dataclass(frozen=True)
class Ask:
    """One segmentation as a tool asks it.

    `body` is a protocol 1.1 request: `prompts`, `multimask`, `output`, and
    `image_url` or `image_sha256` unless the image is given here instead:
    `image` (bytes sent in the call, e.g. CVAT's base64), or `fetch`.
    `image_name` is what the record keeps as `imageUrl` for `image`.
    """

    body: dict[str, Any]
    client: str
    image: bytes | None = None
    image_name: str | None = None
    fetch: ImageFetch | None = None


class Segmenter(Protocol):
    def segment(self, ask: Ask, scope: str | None) -> dict[str, Any]:
        """The `result` message for `ask` (as a dict), after its record went through the queue; raises ClientError."""
        ...

    def prepare(self, ask: Ask, scope: str | None) -> None:
        """Start `ask` (prompts: []) in the background, so that the image's embedding is cached; returns at once."""
        ...
