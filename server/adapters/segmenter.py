"""The adapters' `Segmenter`: each ask goes through the queue as a WebSocket request does.

An ask is parsed by the protocol's own rules, admitted by the intake
(MAX_QUEUE, the pixel budget, the image's file kept, the embedding cache
asked), waited for on a bell of its own with the waiter's lease renewed, and
its record ends terminal like any other (server/request_job.py), with the
tool's name in its `client` field.

`prepare` is Label Studio's "a task opened": its image is encoded in the
background so that the first click is decoder-only. One worker thread does
that, and at most PREPARE_BACKLOG asks wait for it; past that, a prepare is
dropped (it only saves time).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING, Any, Callable

from server import protocol
from server.adapters.calls import Ask
from server.errors import ClientError
from server.fetch import Trusted
from server.intake import Intake
from server.request_job import RequestJob
from server.wakeups import Bell

if TYPE_CHECKING:
    from server.image_source import ImageSource

log = logging.getLogger(__name__)

PREPARE_BACKLOG = 8
# How an adapter's image is read, beside the intake's own reader: bytes sent in
# the call (with what the record keeps as imageUrl), and a URL on a trusted origin.
BytesReader = Callable[[bytes, str], "ImageSource"]
TrustedReader = Callable[[str, Trusted], "ImageSource"]


class QueueSegmenter:
    def __init__(self, intake: Intake, *, read_bytes: BytesReader, read_trusted: TrustedReader):
        self.intake = intake
        self._read_bytes = read_bytes
        self._read_trusted = read_trusted
        self._prepares: queue.Queue[tuple[Ask, str | None]] = queue.Queue(PREPARE_BACKLOG)
        self._worker = threading.Thread(target=self._prepare_forever, name="adapter-prepare", daemon=True)
        self._worker.start()

    def segment(self, ask: Ask, scope: str | None) -> dict[str, Any]:
        settings = self.intake.settings
        given = ask.image is not None or ask.fetch is not None
        job = RequestJob(self.intake, scope=scope, bell=Bell(), client=ask.client)
        try:
            request = protocol.parse_body(
                ask.body, max_boxes=settings.max_boxes, max_points=settings.max_points, image_given=given
            )
            self.intake.refuse_early(request.image_sha256, scope)
            job.admit(request, lambda: self._source(ask, request, scope))
            record = job.wait(on_processing=lambda: None, newer=lambda: None)
            with job.delivery(record):
                message, _ = job.result(record, sha256=True, client_ref=None)
            job.delivered(record, message)
            return message
        except ClientError as exc:
            job.outcome = exc.code
            raise
        finally:
            job.end()

    def prepare(self, ask: Ask, scope: str | None) -> None:
        try:
            self._prepares.put_nowait((ask, scope))
        except queue.Full:
            log.info("adapter prepare dropped: %d already wait", PREPARE_BACKLOG)

    def _prepare_forever(self) -> None:
        while True:
            ask, scope = self._prepares.get()
            try:
                self.segment(ask, scope)
            except ClientError as exc:
                log.info("adapter prepare (%s) refused: %s: %s", ask.client, exc.code, exc.message)
            except Exception:
                log.exception("adapter prepare (%s) failed", ask.client)

    def _source(self, ask: Ask, request: protocol.Request, scope: str | None) -> ImageSource:
        if ask.image is not None:
            return self._read_bytes(ask.image, ask.image_name or f"{ask.client} upload, {len(ask.image)} bytes")
        if ask.fetch is not None:
            return self._read_trusted(ask.fetch.url, Trusted(ask.fetch.url, ask.fetch.headers))
        return self.intake.read_image(request.image_url, request.image_sha256, scope)
