"""What a connection may do with the rest of the server: admission, hand-over, release.

A `Conversation` (server/connection.py) sees only an `Intake`: it never
reaches into the App, the processor or the metrics. Admission is one step
under a lock (refuse when draining or when MAX_QUEUE records wait, then
insert), so that concurrent connections cannot overfill the queue; the
decoded pixels are handed to the processor with the record, so that it need
not decode them again; release takes back whatever a request left behind
(its wake-up, its pixels and their share of the pixel budget). It also counts
the open sessions, for `/metrics`.
"""

from __future__ import annotations

import threading

import numpy as np

from server.budget import PixelBudget, Reservation
from server.config import Settings
from server.errors import ClientError
from server.mask_cache import MaskCache
from server.metrics import Metrics
from server.processor import Processor
from server.store import Record, Store
from server.wakeups import Bell, JobEvents


class Intake:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        processor: Processor,
        events: JobEvents,
        budget: PixelBudget,
        mask_cache: MaskCache,
        metrics: Metrics,
        draining: threading.Event,
        stopping: threading.Event,
        server_id: str,
    ):
        self.settings = settings
        self.store = store
        self.budget = budget
        self.mask_cache = mask_cache
        self.server_id = server_id
        self.metrics = metrics
        self._processor = processor
        self._events = events
        self._draining = draining
        self._stopping = stopping
        self._admission = threading.Lock()  # makes the queue_full check and the insert one step
        self._sessions_lock = threading.Lock()
        self.sessions = 0  # open connections that are sessions (keep_open)

    def refuse_if_draining(self) -> None:
        if self._draining.is_set():
            raise ClientError("shutting_down", "The server is shutting down; send the request again later.")

    def refuse_if_stopping(self) -> None:
        if self._stopping.is_set():
            raise ClientError(
                "shutting_down", "The server shut down before this request was done; send it again later."
            )

    def queue_position(self) -> int:
        """How many records wait; `queue_full` if MAX_QUEUE already do, `shutting_down` when draining."""
        self.refuse_if_draining()
        waiting = self.store.count_queued()
        if waiting >= self.settings.max_queue:
            raise ClientError(
                "queue_full", f"{self.settings.max_queue} requests are already waiting; try again shortly."
            )
        return waiting

    def embedding_cached(self, sha256: str, scope: str | None) -> bool:
        """Whether the processor's model holds this image's embedding for this token's scope
        (a request by hash then needs no pixels)."""
        model = self._processor.model if self._processor.ready.is_set() else None
        return model is not None and model.has_embedding(sha256, scope)

    def session_began(self) -> None:
        with self._sessions_lock:
            self.sessions += 1

    def session_ended(self) -> None:
        with self._sessions_lock:
            self.sessions -= 1

    def admit(self, record: Record, pixels: np.ndarray | None, reservation: Reservation | None, bell: Bell) -> int:
        """Insert the record and hand its pixels over; its position in the queue. The processor rings `bell`.

        Once this returns, the caller must `release` the record's id whatever happens.
        """
        job_id = record["id"]
        with self._admission:
            ahead = self.queue_position()
            self._events.subscribe(job_id, bell)
            self._processor.hand_over(job_id, pixels, reservation)
            try:
                self.store.insert(record)
            except BaseException:
                self.release(job_id)
                raise
        self._processor.wake.set()
        return ahead + 1

    def release(self, job_id: str) -> None:
        self._events.unsubscribe(job_id)
        self._processor.drop(job_id)
