"""One WebSocket connection's conversation, in its own thread.

receive one request ▸ validate ▸ download and decode the image ▸ insert a
Queue record ▸ `queued` ▸ wait for the record to move (`status`) ▸ send the
`result` ▸ mark it finished ▸ close 1000.

Every way out is typed: a `ClientError` becomes an `error`
message and the close code of docs/protocol.md; a client that leaves, or any other
exit, leaves its record `interrupted`, never hanging.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection

from server import images, jobs, protocol
from server.processor import utcnow
from server.errors import CLOSE_CODES, ClientError
from server.store import Record, StoreUnavailable

if TYPE_CHECKING:
    from server.main import App

log = logging.getLogger(__name__)

# How often a waiting connection looks at its socket to notice a client that
# left, or sent a second message. Results wake it at once, whatever this is.
SOCKET_CHECK_SECONDS = 0.2


class ClientGone(Exception):
    """The client closed the connection."""


class Conversation:
    def __init__(self, ws: ServerConnection, app: "App"):
        self.ws = ws
        self.app = app
        self.settings = app.settings
        self.store = app.store
        self.job_id: str | None = None
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
            self._leave()

    # --- the steps -----------------------------------------------------------------

    def _converse(self) -> None:
        settings = self.settings
        message = self._receive_request()
        request = protocol.parse_request(
            message,
            max_boxes=settings.max_boxes,
            max_message_bytes=settings.max_message_bytes,
            max_image_bytes=settings.max_image_bytes,
        )
        self._refuse_if_queue_full()

        started = time.perf_counter()
        data, image, image_url = self._read_image(request.image_url)
        self.download_ms = (time.perf_counter() - started) * 1000
        boxes = protocol.clip_boxes(request.boxes, image.width, image.height)
        self.summary = {"boxes": len(boxes), "image": f"{image.width}x{image.height}"}

        job_id = str(uuid.uuid4())
        record = jobs.new_record(
            job_id,
            now=utcnow(),
            image_url=image_url,
            image_sha256=images.sha256_hex(data),
            width=image.width,
            height=image.height,
            boxes=[box.to_dict() for box in boxes],
            multimask=request.multimask,
        )
        saved = images.save(data, settings.image_dir, job_id, image.extension)
        try:
            with self.app.admission:
                ahead = self._refuse_if_queue_full()
                # From here on, _leave() cleans up whatever happens.
                self.job_id = job_id
                wake_me = self.app.events.subscribe(job_id)
                self.app.processor.hand_over(job_id, image.pixels)
                self.store.insert(record)
        except ClientError:
            saved.unlink(missing_ok=True)
            raise
        self.app.processor.wake.set()
        self._send(protocol.queued_message(job_id, ahead + 1))
        self._wait_and_deliver(wake_me)

    def _read_image(self, url: str) -> tuple[bytes, images.DecodedImage, str]:
        """The image's bytes, decoded pixels, and the URL its record keeps.

        A data: URL is read in place and only PNG, JPEG or WebP is accepted;
        its record keeps a short description, not megabytes of base64.
        """
        settings = self.settings
        if images.is_data_url(url):
            data = images.parse_data_url(url, max_bytes=settings.max_image_bytes)
            image = images.decode(data, max_pixels=settings.max_image_pixels, formats=images.DATA_URL_FORMATS)
            return data, image, images.describe_data_url(url, len(data))
        data = images.download(
            url,
            max_bytes=settings.max_image_bytes,
            timeout=settings.download_timeout,
            allow_private=settings.allow_private_urls,
            max_redirects=settings.max_redirects,
        )
        return data, images.decode(data, max_pixels=settings.max_image_pixels), url

    def _receive_request(self) -> str | bytes:
        """The client's one message, within REQUEST_TIMEOUT, unless the server starts draining."""
        deadline = time.monotonic() + self.settings.request_timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self._refuse_if_draining()
            try:
                return self.ws.recv(timeout=min(remaining, SOCKET_CHECK_SECONDS))
            except TimeoutError:
                continue
            except ConnectionClosed:
                raise ClientGone() from None
        raise ClientError("invalid_request", f"No request arrived within {self.settings.request_timeout:g} s.")

    def _refuse_if_draining(self) -> None:
        if self.app.draining.is_set():
            raise ClientError("shutting_down", "The server is shutting down; send the request again later.")

    def _refuse_if_queue_full(self) -> int:
        """How many records wait before this one; `queue_full` if MAX_QUEUE already do.

        A draining server takes no new work: `shutting_down`.
        """
        self._refuse_if_draining()
        waiting = self.store.count_queued()
        if waiting >= self.settings.max_queue:
            raise ClientError(
                "queue_full",
                f"{self.settings.max_queue} requests are already waiting; try again shortly.",
            )
        return waiting

    def _wait_and_deliver(self, wake_me: threading.Event) -> None:
        assert self.job_id is not None
        told_processing = False
        while True:
            record = self.store.get(self.job_id)
            if record is None:
                raise RuntimeError(f"record {self.job_id} vanished from the store")
            status = record["status"]
            if record["processing"] is not None and not told_processing:  # claimed, even if it ended since
                self._send(protocol.status_message(self.job_id, jobs.PROCESSING))
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
        while (remaining := deadline - time.monotonic()) > 0:
            if self.app.stopping.is_set():
                raise ClientError(
                    "shutting_down", "The server shut down before this request was done; send it again later."
                )
            if wake_me.wait(min(remaining, SOCKET_CHECK_SECONDS)):
                wake_me.clear()
                return
            try:
                self.ws.recv(timeout=0)
            except TimeoutError:
                continue  # still connected, nothing sent: keep waiting
            except ConnectionClosed:
                raise ClientGone() from None
            raise ClientError("invalid_request", "Send exactly one request per connection.")

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
        self._send(
            protocol.result_message(
                self.job_id,
                width=record["width"],
                height=record["height"],
                masks=output["masks"],
                timings=timings,
                cached_embedding=output.get("cachedEmbedding", False),
            )
        )
        finished = self.store.update(self.job_id, lambda r: jobs.mark_finished(r, now=utcnow()), current=record)
        if finished is None:
            log.warning("job %s: result sent, but the record was no longer processed", self.job_id)
        self.outcome = "finished"
        self.summary.update(timings, cached_embedding=output.get("cachedEmbedding", False))
        self.app.metrics.result_sent(timings, output.get("cachedEmbedding", False))
        self.ws.close(1000)

    # --- sending and leaving ---------------------------------------------------------

    def _send(self, text: str) -> None:
        try:
            self.ws.send(text)
        except ConnectionClosed:
            raise ClientGone() from None

    def _send_error(self, code: str, message: str) -> None:
        self.outcome = code
        try:
            self.ws.send(protocol.error_message(self.job_id, code, message))
            self.ws.close(CLOSE_CODES[code], code)
        except ConnectionClosed:
            pass

    def _leave(self) -> None:
        """Whatever happened, the record ends terminal and nothing is left behind."""
        self.app.metrics.request_ended(self.outcome)
        if self.job_id is not None:
            self.app.events.unsubscribe(self.job_id)
            self.app.processor.drop(self.job_id)
            try:
                interrupted = self.store.update(self.job_id, lambda r: jobs.interrupt(r, now=utcnow()))
            except StoreUnavailable as exc:
                # The JOB_TIMEOUT sweep ends the record once the store answers again.
                log.error("job %s: could not mark the record interrupted: %s", self.job_id, exc)
            else:
                if interrupted is not None:
                    self.outcome = f"{self.outcome} (record interrupted)"
        elapsed_ms = (time.perf_counter() - self.started) * 1000
        log.info(
            "request id=%s outcome=%s total_ms=%.1f %s",
            self.job_id,
            self.outcome,
            elapsed_ms,
            " ".join(f"{k}={v}" for k, v in self.summary.items()),
        )
