"""Fetching again, on a thread of its own, the images this replica lacks.

With several replicas on one store, a processor may find a record whose
image another replica received. It must not download on its own thread:
that thread owns the model, and an image host that answers slowly would
stall every request behind it. So the processor asks the `Refetcher`, which
downloads the image from the record's URL on a worker thread (through the
same SSRF guard, byte limit and deadline as any download), checks its
SHA-256, keeps it in IMAGE_DIR by its hash (server/image_store.py) and
wakes the processor (and the record's waiter), which then claims the
record. A download that fails ends the record `failed`, if no processor has
claimed it meanwhile.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

from server import image_source, images, jobs
from server.clock import utcnow
from server.config import Settings
from server.errors import ClientError
from server.image_store import ImageStore
from server.store import Record, Store, StoreUnavailable

log = logging.getLogger(__name__)

WORKERS = 2
MAX_PENDING = 32  # past this, records wait for a later claim round


class Refetcher:
    def __init__(self, settings: Settings, store: Store, image_store: ImageStore, on_ready: Callable[[str], None]):
        self.settings = settings
        self.store = store
        self.image_store = image_store
        self.on_ready = on_ready
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Record] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def fetch(self, record: Record) -> None:
        """Fetch the record's image in the background, unless that is already under way."""
        with self._lock:
            if record["id"] in self._pending or len(self._pending) >= MAX_PENDING:
                return
            self._pending.add(record["id"])
            if not self._threads:
                for number in range(WORKERS):
                    thread = threading.Thread(target=self._run, name=f"refetch-{number}", daemon=True)
                    thread.start()
                    self._threads.append(thread)
        self._queue.put(record)

    def _run(self) -> None:
        while True:
            record = self._queue.get()
            try:
                self._fetch(record)
            except Exception:
                log.exception("job %s: fetching its image again failed", record["id"])
            finally:
                with self._lock:
                    self._pending.discard(record["id"])

    def _fetch(self, record: Record) -> None:
        try:
            data = image_source.download(record["imageUrl"], self.settings)
            if images.sha256_hex(data) != record["imageSha256"]:
                raise ClientError("unsupported_image", "the image at its URL changed since the request was made")
            self.image_store.put(record["imageSha256"], data)
        except ClientError as exc:
            self._fail(record, exc.message)
            return
        self.on_ready(record["id"])

    def _fail(self, record: Record, reason: str) -> None:
        message = f"The image could not be fetched again from its URL: {reason}"
        try:
            failed = self.store.update(
                record["id"], lambda r: jobs.fail_unclaimed(r, now=utcnow(), code="processing_failed", message=message)
            )
        except StoreUnavailable as exc:
            log.error("job %s: could not mark the record failed: %s", record["id"], exc)
            return
        if failed is not None:
            log.warning("job %s failed: %s", record["id"], message)
            self.on_ready(record["id"])
