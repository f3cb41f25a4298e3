"""One request's record, from admission to its end, for whoever waits on it.

A WebSocket conversation (server/connection.py) and an adapter's HTTP call
(server/adapters/segmenter.py) go through the same steps, so that a record
is a record whichever door it came in by: the same stamps, cache, output
budget, waiter's lease, metrics and log line.

    job = RequestJob(intake, scope=..., bell=..., client=...)
    job.admit(request, source)        # the record is stored, queued
    outcome = job.wait(...)           # its processed record (or the caller's reason to stop)
    with job.delivery(record):        # the result's memory, held while it is turned into a message and sent
        result = job.result(record, ...)  # the result message, as a dict
    job.delivered(record, timings)    # sent: the record is finished
    job.end()                         # always: release, and interrupt what was not finished
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, ContextManager, TypeVar

from server import answers, everything_params, jobs, output_budget, protocol
from server.clock import utcnow
from server.errors import ClientError
from server.intake import Intake
from server.store import Record, StoreUnavailable
from server.waiter_lease import WaiterLease
from server.wakeups import Bell

if TYPE_CHECKING:
    from server.image_source import ImageSource

log = logging.getLogger(__name__)

T = TypeVar("T")


class RequestJob:
    def __init__(self, intake: Intake, *, scope: str | None, bell: Bell, client: str):
        self.intake = intake
        self.store = intake.store
        self.settings = intake.settings
        self.scope = scope
        self.bell = bell
        self.client = client  # which door: "websocket", or the adapter's tool (server/adapters/calls.py)
        self.job_id: str | None = None
        self.finished = False  # its result was delivered and its record marked finished
        self.started = time.perf_counter()
        self.download_ms = 0.0
        self.outcome = "unknown"
        self.summary: dict[str, object] = {}
        self._handed: Record | None = None  # the SAMOutput item the processor handed over (`delivery`)

    def admit(self, request: protocol.Request, read_source: Callable[[], ImageSource]) -> int:
        """Read the image, keep its file, insert the record and hand the pixels over; its position in the queue."""
        settings = self.settings
        everything = everything_params.for_model(request.everything, settings.sam_model_type)  # before the image
        started = time.perf_counter()
        source = read_source()
        self.download_ms = (time.perf_counter() - started) * 1000
        try:
            prompts = protocol.fit_prompts(request, source.width, source.height)
            if everything is None:  # an everything's masks are counted as they are made (OutputMeter)
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
            self.summary = {"prompts": len(prompts), "image": f"{source.width}x{source.height}", "client": self.client}
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
                client=self.client,
                everything=request.everything,
                progress_total=None if everything is None else everything.total_points(),
                mask_scale=request.mask_scale,
            )
            position = self.intake.admit(record, source, self.bell)
        except BaseException:
            source.release()
            raise
        self.job_id = job_id  # from here on, end() ends the record whatever happens
        return position

    def wait(
        self,
        on_processing: Callable[[], None],
        newer: Callable[[], T | None],
        while_claimed: Callable[[Record], float] = lambda record: float("inf"),
    ) -> Record | T:
        """The record once processed; or what `newer` gave (a WebSocket client's next message), which came first.

        `on_processing` is called once, when the record has been claimed;
        from then on `while_claimed` with each read of the record (to send
        a long job's progress and a propagation's frames), which says how
        soon it wants to be called again.
        A failed or interrupted record is its ClientError; so is a stop of
        the server.
        """
        assert self.job_id is not None
        told_processing = False
        lease = WaiterLease(self.store, self.job_id, self.settings.waiter_lease_seconds)
        while True:
            # A ring before this read announced a change the read sees, or a message `newer` finds: it must not
            # wake the wait below for a second, idle read (the processor's claim often rings before the first).
            self.bell.clear()
            record = self.intake.latest_record(self.job_id)
            if record is None:
                raise RuntimeError(f"record {self.job_id} vanished from the store")
            status = record["status"]
            if record["processing"] is not None and not told_processing:  # claimed, even if it ended since
                on_processing()
                told_processing = True
            again = while_claimed(record) if told_processing else float("inf")
            if status == jobs.PROCESSED:
                return record
            if status == jobs.FAILED:
                raise ClientError(record["error"]["code"], record["error"]["message"])
            if status == jobs.INTERRUPTED:  # by the JOB_TIMEOUT sweep, unless its `error` says why
                why = (record.get("error") or {}).get("message")
                raise ClientError(
                    "job_timeout",
                    why or f"The server gave up on this request after JOB_TIMEOUT ({self.settings.job_timeout:g} s).",
                )
            lease.renew_if_due()
            message = newer()  # before the wait: a message read before it rang the bell already
            if message is not None:
                return message
            self.bell.wait(min(self.settings.poll_interval, lease.seconds_to_renewal(), again))
            self.intake.refuse_if_stopping()

    def delivery(self, record: Record) -> ContextManager[object]:
        """The memory the processed record's result takes while it is turned into a message and sent, held until
        the `with` ends: the processor's own reservation when it handed the result over in memory (which
        `result` then uses), else one for reading it back, sized by `resultBytes` (waiting up to SEND_TIMEOUT
        for it; `queue_full` past that)."""
        assert self.job_id is not None
        handed = self.intake.handed_output(self.job_id)
        if handed is None:
            return output_budget.reserve_delivery(self.intake.budget, record, wait=self.settings.send_timeout)
        self._handed, memory = handed
        return contextlib.nullcontext() if memory is None else memory

    def result(self, record: Record, *, sha256: bool, client_ref: str | None) -> tuple[dict[str, Any], dict[str, float]]:
        """The processed record's result message (without `image.sha256` for a protocol 1 request), and its timings."""
        output, timings = self.output(record)
        message = answers.result_fields(
            self.job_id,
            width=record["width"],
            height=record["height"],
            sha256=record["imageSha256"] if sha256 else None,
            masks=output["masks"],
            timings=timings,
            cached_embedding=output.get("cachedEmbedding", False),
            client_ref=client_ref,
            mask_scale=record.get("maskScale"),
        )
        return message, timings

    def output(self, record: Record) -> tuple[Record, dict[str, float]]:
        """The processed record's SAMOutput item, and the result's timings."""
        assert self.job_id is not None
        output, self._handed = self._handed or self.store.get_output(self.job_id), None
        if output is None:
            raise RuntimeError(f"record {self.job_id} is processed but has no SAMOutput")
        queue_ms = (jobs.parse_time(record["processing"]) - jobs.parse_time(record["createdAt"])).total_seconds() * 1000
        timings = {
            "queue_ms": round(queue_ms, 2),
            "download_ms": round(self.download_ms, 2),
            **output["timings"],
            "total_ms": round((time.perf_counter() - self.started) * 1000, 2),
        }
        return output, timings

    def delivered(self, record: Record, message: dict[str, Any]) -> None:
        """The result reached the client: the record is finished, and counted."""
        finished = self.store.update(self.job_id, lambda r: jobs.mark_finished(r, now=utcnow()), current=record)
        if finished is None:
            log.warning("job %s: result sent, but the record was no longer processed", self.job_id)
        self.finished = True
        self.outcome = "finished"
        cached = message.get("cached_embedding", False)  # a video result has none
        self.summary.update(message["timings"], cached_embedding=cached)
        self.intake.metrics.result_sent(message["timings"], cached)

    def end(self) -> None:
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

    def _interrupt_record(self) -> None:
        """A request that ends without its result delivered: its record, unless already terminal, is interrupted."""
        try:
            interrupted = self.store.update(self.job_id, lambda r: jobs.interrupt(r, now=utcnow()))
        except StoreUnavailable as exc:
            # The JOB_TIMEOUT sweep ends the record once the store answers again.
            log.error("job %s: could not mark the record interrupted: %s", self.job_id, exc)
        else:
            if interrupted is not None:
                self.outcome = f"{self.outcome} (record interrupted)"
