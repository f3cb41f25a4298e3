"""One WebSocket connection's conversation, in its own thread: one request, or a session of many.

Each request: receive ▸ validate ▸ read the image (download, data: URL, or
one the server has by its hash) ▸ insert a Queue record ▸ `queued` ▸ wait for
the record to move (`status`) ▸ send the `result` ▸ mark it finished. Without
`keep_open` the connection then closes 1000, as in protocol 1.

With `keep_open: true` the connection is a session (docs/protocol.md,
"Sessions"): it waits for the next request, until the client closes, a
request without `keep_open` is answered, SESSION_IDLE_SECONDS pass with no
request (close 1000, reason `idle`), or a connection-level error. A request
that arrives while the previous one still waits supersedes it: the earlier
one is answered `superseded` and its record interrupted. In a session, an
error that concerns one request answers that request only.

Every way out is typed: a `ClientError` becomes an `error` message and its
close code; a client that leaves, or any other exit, leaves its records
`interrupted`, never hanging. Every send has a deadline (SEND_TIMEOUT), so a
client that stops reading cannot hold its thread.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection

from server import image_source, jobs, protocol
from server.clock import utcnow
from server.deadlines import socket_deadline
from server.errors import CLOSE_CODES, ClientError
from server.intake import Intake
from server.store import Record, StoreUnavailable

log = logging.getLogger(__name__)

# How often a waiting connection looks at its socket to notice a client that
# left, or sent another message. Results wake it at once, whatever this is.
SOCKET_CHECK_SECONDS = 0.2
# In a session, a newer request supersedes the waiting one: it must be seen
# well within a click's decoder time (tens of ms), so the socket is looked at
# this often while a request waits.
SESSION_SOCKET_CHECK_SECONDS = 0.005
# Errors that end a session too: the connection cannot go on.
CONNECTION_ERRORS = frozenset({"message_too_large", "shutting_down", "internal_error"})


class ClientGone(Exception):
    """The client closed the connection, or stopped reading for longer than SEND_TIMEOUT."""


class Superseded(Exception):
    """A newer request arrived on the session while this one waited."""

    def __init__(self, message: str | bytes):
        super().__init__("superseded")
        self.message = message


class Conversation:
    def __init__(self, ws: ServerConnection, intake: Intake, scope: str | None = None):
        self.ws = ws
        self.intake = intake
        self.scope = scope  # the API token's (server/tokens.py): the hashes and result ids this client may use
        self.settings = intake.settings
        self.store = intake.store
        self.session = False  # the first request with keep_open: true makes it one
        # The request being answered: its record (once stored), client_ref and timings.
        self.job_id: str | None = None
        self.client_ref: str | None = None
        self.v1 = True  # a protocol 1 request: its result has no image.sha256
        self.started = time.perf_counter()
        self.download_ms = 0.0
        self.outcome = "unknown"
        self.summary: dict[str, object] = {}

    def run(self) -> None:
        try:
            self._converse()
        except ClientError as exc:
            self._send_error(exc.code, exc.message)
        except ClientGone:
            self.outcome = "client_gone"
        except StoreUnavailable as exc:
            log.error("job %s: store unavailable: %s", self.job_id, exc)
            self._send_error("store_unavailable", "The database is unavailable right now; try again shortly.")
        except Exception:
            log.exception("job %s: unexpected error", self.job_id)
            self._send_error("internal_error", "The server hit an unexpected error; it has been logged.")
        finally:
            self._end_request()

    # --- the conversation ----------------------------------------------------------

    def _converse(self) -> None:
        message = self._receive(self.settings.request_timeout, first=True)
        while message is not None:
            next_message, keep_going = self._answer(message)
            if next_message is not None:
                message = next_message  # it superseded the request just answered
                continue
            if not keep_going:
                self._close(1000)
                return
            message = self._receive(self.settings.session_idle_seconds, first=False)

    def _answer(self, message: str | bytes) -> tuple[str | bytes | None, bool]:
        """Answer one request; (a newer request that superseded it, or None; whether the session goes on)."""
        self.started = time.perf_counter()
        self.summary = {}
        body: Any = None
        try:
            body = protocol.load_message(
                message, max_message_bytes=self.settings.max_message_bytes, max_image_bytes=self.settings.max_image_bytes
            )
            self.client_ref = protocol.client_ref_of(body)
            self.session = self.session or protocol.keep_open_of(body)
            request = protocol.parse_body(body, max_boxes=self.settings.max_boxes, max_points=self.settings.max_points)
            self._serve(request)
        except Superseded as newer:
            self._answer_error("superseded", "A newer request on this session replaced this one.")
            self._end_request()
            return newer.message, True
        except ClientError as exc:
            if not self.session or exc.code in CONNECTION_ERRORS:
                raise  # run() answers, closes, and ends the request
            self._answer_error(exc.code, exc.message)
        self._end_request()
        # In a session, an unreadable request (no valid keep_open) leaves it open; false or missing closes it.
        readable = isinstance(body, dict) and isinstance(body.get("keep_open", False), bool)
        return None, self.session and (protocol.keep_open_of(body) or not readable)

    def _serve(self, request: protocol.Request) -> None:
        self.v1 = request.is_v1
        self.intake.queue_position()  # refuse early, before reading any image
        position, wake_me = self._admit(request)
        self._send(protocol.queued_message(self.job_id, position, self.client_ref))
        self._wait_and_deliver(wake_me)

    def _admit(self, request: protocol.Request) -> tuple[int, threading.Event]:
        """Read the image, keep its file, insert the record and hand the pixels over."""
        settings = self.settings
        started = time.perf_counter()
        if request.image_url is not None:
            source = image_source.from_url(request.image_url, settings, self.intake.budget)
        else:
            source = image_source.by_hash(
                request.image_sha256, settings, self.store, self.intake.budget, self.intake.embedding_cached, self.scope
            )
        self.download_ms = (time.perf_counter() - started) * 1000
        try:
            prompts = protocol.fit_prompts(request, source.width, source.height)
            for index, prompt in enumerate(prompts):
                if prompt.mask_input is not None:
                    ref = prompt.mask_input.to_dict()
                    self.intake.mask_cache.check(f"prompts[{index}]", ref, source.sha256, scope=self.scope)
            self.summary = {"prompts": len(prompts), "image": f"{source.width}x{source.height}"}
            job_id = str(uuid.uuid4())
            record = jobs.new_record(
                job_id,
                now=utcnow(),
                image_url=source.record_url,
                image_sha256=source.sha256,
                width=source.width,
                height=source.height,
                boxes=[prompt.box.to_dict() for prompt in prompts if prompt.box is not None],
                multimask=request.multimask,
                prompts=None if request.boxes_form else [prompt.to_dict() for prompt in prompts],
                output=list(request.output),
                preferred_server=self.intake.server_id if source.pixels is None else None,
                scope=self.scope,
            )
            saved = source.keep(settings.image_dir, job_id)
            try:
                admitted = self.intake.admit(record, source.pixels, source.reservation)
            except BaseException:
                if saved is not None:
                    saved.unlink(missing_ok=True)
                raise
        except BaseException:
            source.release()
            raise
        self.job_id = job_id  # from here on, _end_request() ends the record whatever happens
        return admitted

    # --- receiving -------------------------------------------------------------------

    def _receive(self, timeout: float, *, first: bool) -> str | bytes | None:
        """The next message within `timeout`, unless the server starts draining.

        Before the first request, silence is `invalid_request` (protocol 1);
        in a session, it closes the session (1000, `idle`): None.
        """
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self.intake.refuse_if_draining()
            try:
                return self.ws.recv(timeout=min(remaining, SOCKET_CHECK_SECONDS))
            except TimeoutError:
                continue
            except ConnectionClosed:
                raise ClientGone() from None
        if first:
            raise ClientError("invalid_request", f"No request arrived within {self.settings.request_timeout:g} s.")
        self._close(1000, "idle")
        return None

    # --- waiting and delivering --------------------------------------------------------

    def _wait_and_deliver(self, wake_me: threading.Event) -> None:
        assert self.job_id is not None
        told_processing = False
        while True:
            record = self.store.get(self.job_id)
            if record is None:
                raise RuntimeError(f"record {self.job_id} vanished from the store")
            status = record["status"]
            if record["processing"] is not None and not told_processing:  # claimed, even if it ended since
                self._send(protocol.status_message(self.job_id, jobs.PROCESSING, self.client_ref))
                told_processing = True
            if status == jobs.PROCESSED:
                self._deliver(record)
                return
            if status == jobs.FAILED:
                raise ClientError(record["error"]["code"], record["error"]["message"])
            if status == jobs.INTERRUPTED:
                raise ClientError(
                    "job_timeout",
                    f"The server gave up on this request after JOB_TIMEOUT "
                    f"({self.settings.job_timeout:g} s).",
                )
            self._wait(wake_me)

    def _wait(self, wake_me: threading.Event) -> None:
        """Sleep until the processor wakes us or POLL_INTERVAL passes; watch the socket meanwhile."""
        deadline = time.monotonic() + self.settings.poll_interval
        check = SESSION_SOCKET_CHECK_SECONDS if self.session else SOCKET_CHECK_SECONDS
        while (remaining := deadline - time.monotonic()) > 0:
            self.intake.refuse_if_stopping()
            if wake_me.wait(min(remaining, check)):
                wake_me.clear()
                return
            try:
                message = self.ws.recv(timeout=0)
            except TimeoutError:
                continue  # still connected, nothing sent: keep waiting
            except ConnectionClosed:
                raise ClientGone() from None
            if self.session:
                raise Superseded(message)
            raise ClientError(
                "invalid_request", "Send exactly one request per connection, or open a session with keep_open."
            )

    def _deliver(self, record: Record) -> None:
        assert self.job_id is not None
        output = self.store.get_output(self.job_id)
        if output is None:
            raise RuntimeError(f"record {self.job_id} is processed but has no SAMOutput")
        queue_ms = (jobs.parse_time(record["processing"]) - jobs.parse_time(record["createdAt"])).total_seconds() * 1000
        timings = {
            "queue_ms": round(queue_ms, 2),
            "download_ms": round(self.download_ms, 2),
            **output["timings"],
            "total_ms": round((time.perf_counter() - self.started) * 1000, 2),
        }
        cached = output.get("cachedEmbedding", False)
        self._send(
            protocol.result_message(
                self.job_id,
                width=record["width"],
                height=record["height"],
                sha256=None if self.v1 else record["imageSha256"],
                masks=output["masks"],
                timings=timings,
                cached_embedding=cached,
                client_ref=self.client_ref,
            )
        )
        finished = self.store.update(self.job_id, lambda r: jobs.mark_finished(r, now=utcnow()), current=record)
        if finished is None:
            log.warning("job %s: result sent, but the record was no longer processed", self.job_id)
        self.outcome = "finished"
        self.summary.update(timings, cached_embedding=cached)
        self.intake.metrics.result_sent(timings, cached)

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

    def _answer_error(self, code: str, message: str) -> None:
        """An error that answers one request of a session; the session goes on."""
        self.outcome = code
        self._send(protocol.error_message(self.job_id, code, message, self.client_ref))

    def _send_error(self, code: str, message: str) -> None:
        """An error that ends the connection: the message, then its close code."""
        try:
            self._answer_error(code, message)
            self._close(CLOSE_CODES[code], code)
        except ClientGone:
            pass

    def _close(self, code: int, reason: str = "") -> None:
        try:
            self.ws.close(code, reason)
        except (ConnectionClosed, OSError):
            pass

    def _end_request(self) -> None:
        """Whatever happened to the request, its record ends terminal and nothing is left behind."""
        if self.outcome == "unknown" and self.job_id is None and not self.summary:
            return  # nothing was asked (a session that went idle, or a client that left before asking)
        self.intake.metrics.request_ended(self.outcome)
        if self.job_id is not None:
            self.intake.release(self.job_id)
            try:
                interrupted = self.store.update(self.job_id, lambda r: jobs.interrupt(r, now=utcnow()))
            except StoreUnavailable as exc:
                # The JOB_TIMEOUT sweep ends the record once the store answers again.
                log.error("job %s: could not mark the record interrupted: %s", self.job_id, exc)
            else:
                if interrupted is not None:
                    self.outcome = f"{self.outcome} (record interrupted)"
        log.info(
            "request id=%s outcome=%s total_ms=%.1f %s",
            self.job_id,
            self.outcome,
            (time.perf_counter() - self.started) * 1000,
            " ".join(f"{k}={v}" for k, v in self.summary.items()),
        )
        self.job_id = None
        self.client_ref = None
        self.outcome = "unknown"
        self.summary = {}
