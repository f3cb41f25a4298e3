"""The sweeper thread: housekeeping that must never take the model's thread.

About every 30 s (every JOB_TIMEOUT ÷ 2 if that is shorter) it marks records
still unfinished JOB_TIMEOUT after their `createdAt` as `interrupted`, and
wakes their waiting connections. In between, it gives IMAGE_DIR its
bounded steps (`ImageStore.sweep`): released files, files past their time,
files from older versions. A store that does not answer, or any other error,
is logged and tried again on the next round; the thread does not die.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Callable

from server import jobs
from server.clock import utcnow
from server.config import Settings
from server.image_store import ImageStore
from server.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

ERROR_BACKOFF_SECONDS = 1.0


class Sweeper:
    def __init__(
        self, settings: Settings, store: Store, image_store: ImageStore, on_interrupted: Callable[[str], None]
    ):
        self.settings = settings
        self.store = store
        self.image_store = image_store
        self._on_interrupted = on_interrupted
        self._stopping = threading.Event()
        self._next_records = 0.0
        self._thread = threading.Thread(target=self._run, name="sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._records_if_due()
                pause = self.image_store.sweep()
            except StoreUnavailable as exc:
                log.error("sweeper: store unavailable, retrying: %s", exc)
                pause = ERROR_BACKOFF_SECONDS
            except Exception:
                log.exception("sweeper error")
                pause = ERROR_BACKOFF_SECONDS
            self._stopping.wait(pause)

    def _records_if_due(self) -> None:
        """End records stuck past JOB_TIMEOUT."""
        if time.monotonic() < self._next_records:
            return
        self._next_records = time.monotonic() + min(30.0, self.settings.job_timeout / 2)
        cutoff = utcnow() - dt.timedelta(seconds=self.settings.job_timeout)
        for record in self.store.unfinished_before(cutoff):
            if self.store.update(record["id"], lambda r: jobs.interrupt(r, now=utcnow())) is not None:
                log.warning("job %s: interrupted by the sweep after JOB_TIMEOUT", record["id"])
                self._on_interrupted(record["id"])
