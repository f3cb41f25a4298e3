"""One WebSocket connection's conversation, in its own thread: the I/O loop around `SessionRules`.

Each request: receive ▸ validate ▸ read the image (download, data: URL, or
one the server has by its hash) ▸ insert a Queue record ▸ `queued` ▸ wait for
the record to move (`status`) ▸ send the `result` ▸ mark it finished.

What the conversation may do next (serve, supersede, answer an error, close
with a code, go idle) is decided by `server.session_rules`, which holds every
rule of docs/protocol.md "Sessions" and touches no socket. This module feeds
it events (a message, an answer, a refusal, the clock) and carries out its
actions on the socket, the store and the intake.

Waiting blocks on the connection's bell (server/wakeups.py), never polls.
While a record waits, its waiter's lease (`waiterLeaseUntil`) is renewed, so
that any replica's processor can tell that someone still waits.

Every way out is typed: a `ClientError` becomes an `error` message and its
close code; a client that leaves, or any other exit, leaves its records
`interrupted`, never hanging. Every send has a deadline (SEND_TIMEOUT), so a
client that stops reading cannot hold its thread.
"""

from __future__ import annotations

import collections
import logging
import time

from websockets.exceptions import ConnectionClosed

from server import answers, jobs, video_source
from server.deadlines import socket_deadline
from server.errors import ClientError
from server.intake import Intake
from server.adapters.calls import WEBSOCKET
from server.request_job import RequestJob
from server.progress import ProgressPacer
from server.session_rules import Action, Answer, Close, Limits, Request, Serve, SessionRules, Supersede
from server.store import Record, StoreUnavailable
from server.video_protocol import VideoRequest
from server.video_requests import VideoRequests
from server.wakeups import RingingConnection

log = logging.getLogger(__name__)


class ClientGone(Exception):
    """The client closed the connection, or stopped reading for longer than SEND_TIMEOUT."""


class Conversation:
    def __init__(self, ws: RingingConnection, intake: Intake, scope: str | None = None):
        self.ws = ws
        self.intake = intake
        self.scope = scope  # the API token's (server/tokens.py): the hashes and result ids this client may use
        self.settings = settings = intake.settings
        self.store = intake.store
        self.rules = SessionRules(
            Limits(
                request_timeout=settings.request_timeout,
                session_idle_seconds=settings.session_idle_seconds,
                max_message_bytes=settings.max_message_bytes,
                max_image_bytes=video_source.inline_bytes(settings),  # a data: URL's room: an image's, or a clip's
                max_boxes=settings.max_boxes,
                max_points=settings.max_points,
            ),
            time.monotonic(),
        )
        self.counted_session = False
        self.video = VideoRequests(intake, scope)  # docs/protocol.md, "Video"
        # The request being answered: its record (once stored) and timings, and its client_ref.
        self.job = self._new_job()
        self.client_ref: str | None = None
        self.v1 = True  # a protocol 1 request: its result has no image.sha256

    def run(self) -> None:
        try:
            self._converse()
        except ClientGone:
            self.job.outcome = "client_gone"
        except StoreUnavailable as exc:
            log.error("job %s: store unavailable: %s", self.job.job_id, exc)
            self._end_badly(ClientError("store_unavailable", "The database is unavailable right now; try again shortly."))
        except Exception:
            log.exception("job %s: unexpected error", self.job.job_id)
            self._end_badly(ClientError("internal_error", "The server hit an unexpected error; it has been logged."))
        finally:
            self._end_request()
            self.video.close()
            if self.counted_session:
                self.intake.session_ended()

    # --- the loop: events into the rules, their actions carried out ---------------------

    def _converse(self) -> None:
        while not self.rules.closed:
            try:
                self.intake.refuse_if_draining()
            except ClientError as exc:
                self._carry_out(self.rules.refused(exc))
                continue
            message = self._poll_socket()
            if message is not None:
                self._carry_out(self._on_message(message))
                continue
            deadline = self.rules.deadline
            if deadline is not None and time.monotonic() >= deadline:
                self._carry_out(self.rules.tick(time.monotonic()))
            elif deadline is not None:
                self.ws.bell.wait(deadline - time.monotonic())

    def _on_message(self, message: str | bytes) -> list[Action]:
        self.job.started = time.perf_counter()
        actions = self.rules.message(message, time.monotonic())
        if self.rules.session and not self.counted_session:
            self.counted_session = True
            self.intake.session_began()
        return actions

    def _carry_out(self, actions: list[Action]) -> None:
        """Do what the rules say; serving a request yields the rules' next actions, done in turn."""
        pending = collections.deque(actions)
        while pending:
            action = pending.popleft()
            if isinstance(action, Serve):
                pending.extend(self._serve(action.request))
            elif isinstance(action, Supersede):
                self._answer("superseded", "A newer request on this session replaced this one.", action.client_ref)
            elif isinstance(action, Answer):
                self._answer(action.code, action.message, action.client_ref)
            elif isinstance(action, Close):
                self._close(action.code, action.reason)

    def _serve(self, request: Request) -> list[Action]:
        """Admit the request and wait for its answer; what the rules say next."""
        self.v1 = request.is_v1
        self.client_ref = request.client_ref
        try:
            self.intake.refuse_early(None if isinstance(request, VideoRequest) else request.image_sha256, self.scope)
            position = self._admit(request)
        except ClientError as exc:
            return self.rules.refused(exc)
        self._send(answers.queued_message(self.job.job_id, position, self.client_ref))
        try:
            newer = self._wait_and_deliver()
        except ClientError as exc:
            return self.rules.failed(exc, time.monotonic())
        if newer is not None:
            return self._on_message(newer)
        self._end_request()
        return self.rules.answered(time.monotonic())

    def _admit(self, request: Request) -> int:
        """Read the image, keep its file, insert the record and hand the pixels over."""
        if isinstance(request, VideoRequest):
            self.job.job_id, position, self.job.summary = self.video.admit(request, self.ws.bell)
            return position
        return self.job.admit(
            request, lambda: self.intake.read_image(request.image_url, request.image_sha256, self.scope)
        )

    # --- receiving -------------------------------------------------------------------

    def _poll_socket(self) -> str | bytes | None:
        """The client's next message if one has arrived, else None, at once."""
        try:
            return self.ws.recv(timeout=0)
        except TimeoutError:
            return None
        except ConnectionClosed:
            raise ClientGone() from None

    # --- waiting and delivering --------------------------------------------------------

    def _wait_and_deliver(self) -> str | bytes | None:
        """Deliver the record's result; or the client's newer message, which came first."""
        job, pacer = self.job, ProgressPacer()  # a long job's progress (server/progress.py), from `status` on

        def while_claimed(record: Record) -> float:
            """A propagation's frames, then the record's progress when due; how soon to look again."""
            for frame in self.video.frames(job.job_id, self.client_ref):
                self._send(frame)
            progress = record.get("progress") if record["status"] == jobs.PROCESSING else None
            if (due := pacer.take(progress, time.monotonic())) is not None:
                self._send(answers.progress_message(job.job_id, due["done"], due["total"], self.client_ref))
            return pacer.seconds_to_due(progress, time.monotonic())

        got = job.wait(
            on_processing=lambda: self._send(answers.status_message(job.job_id, jobs.PROCESSING, self.client_ref)),
            newer=self._poll_socket,
            while_claimed=while_claimed,
        )
        if not isinstance(got, dict):
            return got
        with job.delivery(got):
            if got.get("video"):
                message = self.video.result(job, got, self.client_ref)
            else:
                message, _ = job.result(got, sha256=not self.v1, client_ref=self.client_ref)
            self._send(answers.result_message(message))
        job.delivered(got, message)
        return None

    # --- sending, closing and leaving -----------------------------------------------------

    def _send(self, text: str) -> None:
        """Send one message within SEND_TIMEOUT: a client that stops reading cannot hold this thread."""
        with socket_deadline(self.ws.socket, self.settings.send_timeout) as deadline:
            try:
                self.ws.send(text)
            except (ConnectionClosed, OSError):
                raise ClientGone() from None
        if deadline.expired:
            raise ClientGone()

    def _answer(self, code: str, message: str, client_ref: str | None) -> None:
        """An error answering the current request (or the connection, before any); the request ends."""
        self.job.outcome = code
        try:
            self._send(answers.error_message(self.job.job_id, code, message, client_ref))
        finally:
            self._end_request()

    def _end_badly(self, error: ClientError) -> None:
        """A fault outside the rules' view (the store, a bug): the rules still say how the connection ends."""
        try:
            self._carry_out(self.rules.refused(error))
        except ClientGone:
            pass

    def _close(self, code: int, reason: str = "") -> None:
        try:
            self.ws.close(code, reason)
        except (ConnectionClosed, OSError):
            pass

    def _end_request(self) -> None:
        """Whatever happened to the request, its record ends terminal; the next request gets a job of its own."""
        self.job.end()
        self.job = self._new_job()
        self.client_ref = None

    def _new_job(self) -> RequestJob:
        return RequestJob(self.intake, scope=self.scope, bell=self.ws.bell, client=WEBSOCKET)
