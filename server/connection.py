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
import uuid

from websockets.exceptions import ConnectionClosed

from server import answers, jobs, output_budget, protocol
from server.clock import utcnow
from server.deadlines import socket_deadline
from server.errors import ClientError
from server.intake import Intake
from server.session_rules import Action, Answer, Close, Limits, Serve, SessionRules, Supersede
from server.store import Record, StoreUnavailable
from server.waiter_lease import WaiterLease
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
                max_image_bytes=settings.max_image_bytes,
                max_boxes=settings.max_boxes,
                max_points=settings.max_points,
            ),
            time.monotonic(),
        )
        self.counted_session = False
        # The request being answered: its record (once stored), client_ref and timings.
        self.job_id: str | None = None
        self.client_ref: str | None = None
        self.finished = False  # its result was sent and its record marked finished
        self.v1 = True  # a protocol 1 request: its result has no image.sha256
        self.started = time.perf_counter()
        self.download_ms = 0.0
        self.outcome = "unknown"
        self.summary: dict[str, object] = {}

    def run(self) -> None:
        try:
            self._converse()
        except ClientGone:
            self.outcome = "client_gone"
        except StoreUnavailable as exc:
            log.error("job %s: store unavailable: %s", self.job_id, exc)
            self._end_badly(ClientError("store_unavailable", "The database is unavailable right now; try again shortly."))
        except Exception:
            log.exception("job %s: unexpected error", self.job_id)
            self._end_badly(ClientError("internal_error", "The server hit an unexpected error; it has been logged."))
        finally:
            self._end_request()
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
        self.started = time.perf_counter()
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

    def _serve(self, request: protocol.Request) -> list[Action]:
        """Admit the request and wait for its answer; what the rules say next."""
        self.v1 = request.is_v1
        self.client_ref = request.client_ref
        try:
            self.intake.queue_position()  # refuse early, before reading any image
            position = self._admit(request)
        except ClientError as exc:
            return self.rules.refused(exc)
        self._send(answers.queued_message(self.job_id, position, self.client_ref))
        try:
            newer = self._wait_and_deliver()
        except ClientError as exc:
            return self.rules.failed(exc, time.monotonic())
        if newer is not None:
            return self._on_message(newer)
        self._end_request()
        return self.rules.answered(time.monotonic())

    def _admit(self, request: protocol.Request) -> int:
        """Read the image, keep its file, insert the record and hand the pixels over."""
        settings = self.settings
        started = time.perf_counter()
        source = self.intake.read_image(request.image_url, request.image_sha256, self.scope)
        self.download_ms = (time.perf_counter() - started) * 1000
        try:
            prompts = protocol.fit_prompts(request, source.width, source.height)
            output_budget.check_work(
                len(prompts), request.multimask, *protocol.scaled_size(source.width, source.height, request.mask_scale),
                settings.max_mask_pixels,
            )
            for index, prompt in enumerate(prompts):
                for field, ref in (("mask_input", prompt.mask_input), ("render", prompt.render)):
                    if ref is not None:
                        self.intake.mask_cache.check(
                            f"prompts[{index}]", ref.to_dict(), source.sha256, scope=self.scope, field=field
                        )
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
                waiter_lease_seconds=settings.waiter_lease_seconds,
                mask_scale=request.mask_scale,
            )
            position = self.intake.admit(record, source, self.ws.bell)
        except BaseException:
            source.release()
            raise
        self.job_id = job_id  # from here on, _end_request() ends the record whatever happens
        return position

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
        assert self.job_id is not None
        told_processing = False
        lease = WaiterLease(self.store, self.job_id, self.settings.waiter_lease_seconds)
        while True:
            record = self.store.get(self.job_id)
            if record is None:
                raise RuntimeError(f"record {self.job_id} vanished from the store")
            status = record["status"]
            if record["processing"] is not None and not told_processing:  # claimed, even if it ended since
                self._send(answers.status_message(self.job_id, jobs.PROCESSING, self.client_ref))
                told_processing = True
            if status == jobs.PROCESSED:
                with output_budget.reserve_delivery(self.intake.budget, record, wait=self.settings.send_timeout):
                    self._deliver(record)
                return None
            if status == jobs.FAILED:
                raise ClientError(record["error"]["code"], record["error"]["message"])
            if status == jobs.INTERRUPTED:  # by the JOB_TIMEOUT sweep, unless its `error` says why
                why = (record.get("error") or {}).get("message")
                raise ClientError(
                    "job_timeout",
                    why or f"The server gave up on this request after JOB_TIMEOUT ({self.settings.job_timeout:g} s).",
                )
            lease.renew_if_due()
            message = self._poll_socket()  # before the wait: a message read before it rang the bell already
            if message is not None:
                return message
            self.ws.bell.wait(min(self.settings.poll_interval, lease.seconds_to_renewal()))
            self.intake.refuse_if_stopping()

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
            answers.result_message(
                self.job_id,
                width=record["width"],
                height=record["height"],
                sha256=None if self.v1 else record["imageSha256"],
                masks=output["masks"],
                timings=timings,
                cached_embedding=cached,
                client_ref=self.client_ref,
                mask_scale=record.get("maskScale"),
            )
        )
        finished = self.store.update(self.job_id, lambda r: jobs.mark_finished(r, now=utcnow()), current=record)
        if finished is None:
            log.warning("job %s: result sent, but the record was no longer processed", self.job_id)
        self.finished = True
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

    def _answer(self, code: str, message: str, client_ref: str | None) -> None:
        """An error answering the current request (or the connection, before any); the request ends."""
        self.outcome = code
        try:
            self._send(answers.error_message(self.job_id, code, message, client_ref))
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
        """Whatever happened to the request, its record ends terminal and nothing is left behind."""
        if self.outcome == "unknown" and self.job_id is None and not self.summary:
            return  # nothing was asked (a session that went idle, or a client that left before asking)
        self.intake.metrics.request_ended(self.outcome)
        if self.job_id is not None:
            self.intake.release(self.job_id)
            if not self.finished:
                self._interrupt_record()
        log.info(
            "request id=%s outcome=%s total_ms=%.1f %s",
            self.job_id,
            self.outcome,
            (time.perf_counter() - self.started) * 1000,
            " ".join(f"{k}={v}" for k, v in self.summary.items()),
        )
        self.job_id = None
        self.client_ref = None
        self.finished = False
        self.outcome = "unknown"
        self.summary = {}

    def _interrupt_record(self) -> None:
        """A request that ends without its result sent: its record, unless already terminal, is interrupted."""
        try:
            interrupted = self.store.update(self.job_id, lambda r: jobs.interrupt(r, now=utcnow()))
        except StoreUnavailable as exc:
            # The JOB_TIMEOUT sweep ends the record once the store answers again.
            log.error("job %s: could not mark the record interrupted: %s", self.job_id, exc)
        else:
            if interrupted is not None:
                self.outcome = f"{self.outcome} (record interrupted)"
