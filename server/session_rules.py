"""The rules of one connection's conversation, without I/O (docs/protocol.md, "Sessions").

In the manner of websockets' sans-I/O core: events go in, actions come out.
`server.connection` is the loop around it: it reads the socket, admits
requests through the intake, waits for their records, and carries out what
these rules say. Nothing here touches a socket, the store, a clock or a
thread, so that every rule has a test of its own without any of them
(tests/test_session_rules.py).

Events (methods): a message arrived (`message`); the request, or the
connection, was refused before admission (`refused`: a bad image, a full
queue, a draining server); the admitted request was answered with a result
(`answered`) or ended by an error (`failed`); the clock ticked (`tick`).

Actions (returned lists): `Serve` a parsed request, `Supersede` the waiting
one, `Answer` the current request with an error, `Close` the connection.

The rules:
- Before the first request, REQUEST_TIMEOUT of silence is `invalid_request`.
- A request with `keep_open: true` makes the connection a session.
- Without a session, one request, one answer, then close 1000; a second
  message while the request waits is `invalid_request`, then a close.
- In a session, a message while a request waits supersedes it.
- In a session, an error that concerns one request answers it alone and the
  session goes on; an unreadable message too. CONNECTION_ERRORS end it.
- A session closes 1000 `idle` SESSION_IDLE_SECONDS after its last admitted
  request ended (or after it began); a refused message is no activity.
- A request answered without `keep_open` closes the connection 1000.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Union

from server import message_size, protocol, video_protocol
from server.errors import CLOSE_CODES, ClientError

# Errors that end a session too: the connection cannot go on.
CONNECTION_ERRORS = frozenset({"message_too_large", "shutting_down", "internal_error", "store_unavailable"})
NOT_A_SESSION = "Send exactly one request per connection, or open a session with keep_open."


Request = Union[protocol.Request, video_protocol.VideoRequest]


@dataclasses.dataclass(frozen=True)
class Serve:
    """Admit this request (read its image or video, insert its record) and wait for its answer."""

    request: Request


@dataclasses.dataclass(frozen=True)
class Supersede:
    """Answer the waiting request `superseded` and end its record; the session goes on."""

    client_ref: str | None = None  # the superseded request's


@dataclasses.dataclass(frozen=True)
class Answer:
    """Answer the current request with this error, and end it."""

    code: str
    message: str
    client_ref: str | None = None


@dataclasses.dataclass(frozen=True)
class Close:
    """Close the connection with this code and reason."""

    code: int
    reason: str = ""


Action = Union[Serve, Supersede, Answer, Close]


@dataclasses.dataclass(frozen=True)
class Limits:
    """The settings the rules read."""

    request_timeout: float
    session_idle_seconds: float
    max_message_bytes: int
    max_image_bytes: int
    max_boxes: int
    max_points: int


class SessionRules:
    """One connection's conversation state. Times are seconds on any monotonic clock the caller keeps."""

    def __init__(self, limits: Limits, now: float):
        self.limits = limits
        self.session = False  # the first request with keep_open: true makes it one
        self.waiting = False  # a request is admitted (or being admitted) and not yet answered
        self.closed = False
        self.first = True  # no message has arrived yet
        self.client_ref: str | None = None  # the current request's, for every message about it
        self._keep_open = False  # the current request's keep_open
        self._readable = False  # the current message's keep_open was readable
        self._deadline = now + limits.request_timeout

    @property
    def deadline(self) -> float | None:
        """When the connection must next be looked at even if nothing happens, or None while a request waits."""
        return None if self.waiting or self.closed else self._deadline

    # --- events ------------------------------------------------------------------------

    def message(self, message: str | bytes, now: float) -> list[Action]:
        """A message arrived from the client."""
        if self.waiting:
            if not self.session:
                return self._end("invalid_request", NOT_A_SESSION)
            self._ended(now)  # the superseded request was admitted: that is activity
            return [Supersede(self.client_ref), *self._request(message)]
        return self._request(message)

    def refused(self, error: ClientError) -> list[Action]:
        """The request was refused before admission (bad image, full queue), or the connection (draining)."""
        self.waiting = False
        return self._error(error)

    def failed(self, error: ClientError, now: float) -> list[Action]:
        """An admitted request ended with an error (the model failed it, or it was interrupted)."""
        self._ended(now)
        return self._error(error)

    def answered(self, now: float) -> list[Action]:
        """The request's result was sent."""
        self._ended(now)
        return [] if self.session and self._keep_open else self._close(1000)

    def tick(self, now: float) -> list[Action]:
        """Time passed with nothing else happening."""
        if self.closed or self.waiting or now < self._deadline:
            return []
        if self.first:
            return self._end("invalid_request", f"No request arrived within {self.limits.request_timeout:g} s.")
        return self._close(1000, "idle")

    # --- the rules -----------------------------------------------------------------------

    def _request(self, message: str | bytes) -> list[Action]:
        self.first = False
        self.client_ref = None
        self._keep_open = False
        self._readable = False  # until the message's keep_open is read
        limits = self.limits
        try:
            body: Any = message_size.load_message(
                message, max_message_bytes=limits.max_message_bytes, max_image_bytes=limits.max_image_bytes
            )
            self.client_ref = protocol.client_ref_of(body)
            self._readable = isinstance(body, dict) and isinstance(body.get("keep_open", False), bool)
            self._keep_open = protocol.keep_open_of(body)
            self.session = self.session or self._keep_open
            if video_protocol.is_video(body):  # docs/protocol.md, "Video"
                request: Request = video_protocol.parse(body, max_prompts=limits.max_boxes, max_points=limits.max_points)
            else:
                request = protocol.parse_body(body, max_boxes=limits.max_boxes, max_points=limits.max_points)
        except ClientError as exc:
            return self._error(exc)
        self.waiting = True
        return [Serve(request)]

    def _error(self, error: ClientError) -> list[Action]:
        if not self.session or error.code in CONNECTION_ERRORS:
            return self._end(error.code, error.message)
        # In a session, an unreadable request (no valid keep_open) leaves it open; false closes it.
        answer = Answer(error.code, error.message, self.client_ref)
        if self._keep_open or not self._readable:
            return [answer]
        return [answer, *self._close(1000)]

    def _ended(self, now: float) -> None:
        self.waiting = False
        self._deadline = now + self.limits.session_idle_seconds

    def _end(self, code: str, message: str) -> list[Action]:
        return [Answer(code, message, self.client_ref), *self._close(CLOSE_CODES[code], code)]

    def _close(self, code: int, reason: str = "") -> list[Action]:
        self.closed = True
        self.waiting = False
        return [Close(code, reason)]
