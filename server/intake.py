"""What a connection may do with the rest of the server: admission, hand-over, release.

A `Conversation` (server/connection.py) sees only an `Intake`: it never
reaches into the App, the processor or the metrics. Admission is one step
under a lock (refuse when draining or when MAX_QUEUE records wait, then
insert), so that concurrent connections cannot overfill the queue; the
image's file is held (written first if it is new) for as long as the
request lives; the decoded pixels are handed to the processor with the
record, so that it need not decode them again; release takes back whatever
a request left behind (its wake-up, its pixels and their share of the pixel
budget, its hold on the image's file). It also counts the open sessions,
for `/metrics`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable, Protocol

from server.budget import PixelBudget, Reservation
from server.config import Settings
from server.errors import ClientError
from server.mask_cache import MaskCache
from server.store import Record, Store
from server.wakeups import Bell, JobEvents

if TYPE_CHECKING:  # the connection side imports neither torch nor Pillow: these stand on them
    import numpy as np

    from server.image_source import ImageSource
    from server.image_store import Hold, ImageStore
    from server.metrics import Metrics
    from server.video_work import VideoWork

# How a request's image is read: (image_url, image_sha256, token scope) -> its source (server/image_source.py).
ImageReader = Callable[[str | None, str | None, str | None], "ImageSource"]


class ModelSide(Protocol):
    """What the intake asks of the processor (server/processor.py), and no more."""

    wake: threading.Event  # set when a record is inserted
    video: VideoWork  # its video sessions and outbox (server/video_sessions.py, server/video_outbox.py)

    def hand_over(self, job_id: str, pixels: np.ndarray | None, reservation: Reservation | None) -> None: ...

    def first_in_line(self, inserted: Record) -> None: ...

    def has_embedding(self, sha256: str, scope: str | None) -> bool: ...

    def drop(self, job_id: str) -> None: ...


class Intake:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        processor: ModelSide,
        read_image: ImageReader,
        events: JobEvents,
        budget: PixelBudget,
        mask_cache: MaskCache,
        image_store: ImageStore,
        metrics: Metrics,
        draining: threading.Event,
        stopping: threading.Event,
        server_id: str,
    ):
        self.settings = settings
        self.store = store
        self.budget = budget
        self.mask_cache = mask_cache
        self.image_store = image_store
        self.server_id = server_id
        self.metrics = metrics
        self.read_image = read_image
        self._processor = processor
        self._events = events
        self._draining = draining
        self._stopping = stopping
        self.video_sessions = processor.video.sessions
        self.video_outbox = processor.video.outbox
        self._admission = threading.Lock()  # makes the queue_full check and the insert one step
        self._holds: dict[str, Hold] = {}  # job id -> its hold on its image's file
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

    def refuse_early(self, image_sha256: str | None, scope: str | None) -> None:
        """Before a request's image is read: refuse what admission would (`queue_full`, `shutting_down`), so that
        a full queue reads no image. An image by its hash whose embedding the model holds for `scope` costs
        nothing to read: for it only draining is checked, and the queue is counted once, at admission."""
        if image_sha256 is not None and self._processor.has_embedding(image_sha256, scope):
            self.refuse_if_draining()
        else:
            self.queue_position()

    def session_began(self) -> None:
        with self._sessions_lock:
            self.sessions += 1

    def session_ended(self) -> None:
        with self._sessions_lock:
            self.sessions -= 1

    def admit(self, record: Record, source: ImageSource, bell: Bell) -> int:
        """Keep the image's file, insert the record and hand its pixels over; its position in the queue.
        The processor rings `bell`.

        A new file that the disk has no room for is `store_unavailable`
        (MIN_FREE_DISK_MB), before the record exists. Once this returns, the
        caller must `release` the record's id whatever happens.
        """
        job_id = record["id"]
        # Outside the lock: it may write megabytes.
        hold = self.image_store.hold(source.sha256, source.data, record.get("scope"))
        try:
            with self._admission:
                ahead = self.queue_position()
                self._events.subscribe(job_id, bell)
                self._processor.hand_over(job_id, source.pixels, source.reservation)
                self._holds[job_id] = hold
                try:
                    inserted = self.store.insert(record)
                    self._events.offer(job_id, inserted)
                except BaseException:
                    self.release(job_id)
                    raise
                if ahead == 0:  # the oldest queued record: the processor claims it without looking for it
                    self._processor.first_in_line(inserted)
        except BaseException:
            hold.release()
            raise
        self._processor.wake.set()
        return ahead + 1

    def admit_video(self, record: Record, data: bytes | None, bell: Bell) -> int:
        """Insert a video record, with an open's file handed over; its position in the queue.
        Once this returns, the caller must `release` the record's id whatever happens."""
        job_id = record["id"]
        with self._admission:
            ahead = self.queue_position()
            self._events.subscribe(job_id, bell)
            if data is not None:
                self.video_sessions.hand_over(job_id, data)
            try:
                self._events.offer(job_id, self.store.insert(record))
            except BaseException:
                self.release(job_id)
                raise
        self._processor.wake.set()
        return ahead + 1

    def latest_record(self, job_id: str) -> Record | None:
        """The record as the processor last wrote it and rang, if it handed that over; else the store's."""
        return self._events.take_record(job_id) or self.store.get(job_id)

    def handed_output(self, job_id: str) -> tuple[Record, Reservation | None] | None:
        """The record's SAMOutput item as the processor handed it over in memory, with the reservation that
        counts its memory (now the caller's to release); None if it handed none over."""
        return self._events.take_output(job_id)

    def release(self, job_id: str) -> None:
        self._events.unsubscribe(job_id)
        self._processor.drop(job_id)
        self.video_sessions.drop(job_id)
        self.video_outbox.forget(job_id)
        hold = self._holds.pop(job_id, None)
        if hold is not None:
            hold.release()
