"""RequestJob.wait reads its record once per change: a ring from before a read does not buy a second read."""

from __future__ import annotations

import threading
import types
import uuid

from server import jobs
from server.clock import utcnow
from server.config import Settings
from server.request_job import RequestJob
from server.store.sqlite import SQLiteStore
from server.wakeups import Bell


class CountingStore(SQLiteStore):
    """Counts the reads made on one thread (the waiter's), not the writer's own."""

    reader: threading.Thread | None = None
    gets = 0

    def get(self, job_id):
        self.gets += threading.current_thread() is self.reader
        return super().get(job_id)


def test_a_ring_from_before_the_first_read_does_not_wake_the_waiter_for_an_idle_read(tmp_path):
    """The processor's claim rings before the waiting connection's first read (docs/cosmos.md counts the
    reads): that read sees the claim, so only the result's ring may wake it, for one more read."""
    store = CountingStore(tmp_path / "cap.sqlite3")
    settings = Settings(sqlite_path=tmp_path / "cap.sqlite3", image_dir=tmp_path / "images", poll_interval=30)
    job_id = str(uuid.uuid4())
    record = jobs.new_record(job_id, now=utcnow(), image_url="https://example.test/a.png", image_sha256="0" * 64,
                             width=10, height=10, boxes=[{"x": 1, "y": 1, "width": 5, "height": 5}], multimask=False)
    store.insert(record)
    store.replace(jobs.claim(store.get(job_id), now=utcnow(), server_id="test", lease_seconds=60, max_attempts=3),
                  etag=store.get(job_id)["_etag"])
    bell = Bell()
    bell.ring()  # the claim's ring, before the waiter's first read
    intake = types.SimpleNamespace(store=store, settings=settings, refuse_if_stopping=lambda: None, latest_record=store.get)
    job = RequestJob(intake, scope=None, bell=bell, client="websocket")  # type: ignore[arg-type]
    job.job_id = job_id

    def processed() -> None:
        store.update(job_id, lambda r: jobs.mark_processed(r, now=utcnow()))
        bell.ring()

    later = threading.Timer(0.5, processed)
    later.start()
    store.reader = threading.current_thread()
    try:
        told = []
        got = job.wait(on_processing=lambda: told.append(True), newer=lambda: None)
    finally:
        later.cancel()
        later.join()
    assert got["status"] == jobs.PROCESSED and told == [True]
    assert store.gets == 2  # claimed, then processed: no read between them
