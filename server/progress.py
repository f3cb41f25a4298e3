"""The progress of a long job (`everything`): how the processor reports it, and when the waiting connection says it.

The processor side (`ProgressReporter`) writes the record's `progress`
(`{done, total}`) into the store at most every `WRITE_INTERVAL` seconds and
rings the connection's bell (`JobEvents`). The store carries it because the
waiting connection may be on another replica, which reads the record at its
`POLL_INTERVAL`. The same write renews the processor's lease, so a job
longer than `LEASE_SECONDS` is never claimed again while it runs, and it is
refused once the record is no longer this processor's (the connection
interrupted it: superseded, or its client left): `report` then raises
`Cancelled`, and the work stops there. When the waiting connection is in
this process, its leaving is seen at once (`JobEvents.watched`), and the
record is then written at every step rather than every 0.5 s, so the
work stops at the next step (one candidate mask, or one decoder batch).

The connection side (`ProgressPacer`, pure) decides when a `progress`
message goes out: at once with `status: processing`, then whenever the
record's progress moved, at most `MAX_PER_SECOND` times a second, and at
least every `MAX_SILENCE` seconds even when it did not move (while the
encoder runs, say), so that a client always knows the job is alive.
"""

from __future__ import annotations

import time
from typing import Callable

from server import jobs
from server.clock import utcnow
from server.store import Store
from server.wakeups import JobEvents

WRITE_INTERVAL = 0.5  # seconds between two of the processor's progress writes
MAX_PER_SECOND = 4  # progress messages to one client
# The contract says at most 2 s without a message, from `status` to the answer; a busy thread wakes a
# little late, so the connection says the unchanged progress again after 1.5 s.
MAX_SILENCE = 1.5

Progress = dict[str, int]  # {"done": k, "total": n}


class Cancelled(Exception):
    """The record is no longer this processor's to work on: interrupted, or claimed by another."""


class ProgressReporter:
    """Called by the processor between steps of one record's work."""

    def __init__(
        self,
        store: Store,
        events: JobEvents,
        job_id: str,
        *,
        server_id: str,
        lease_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.store = store
        self.events = events
        self.job_id = job_id
        self.server_id = server_id
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._written_at: float | None = None
        self._waited_here = events.watched(job_id)

    def report(self, done: int, total: int, *, force: bool = False) -> None:
        """`done` of `total` steps are done. Writes when `WRITE_INTERVAL` has passed (or `force`);
        raises `Cancelled` when the record refuses the write."""
        now = self.clock()
        left = self._waited_here and not self.events.watched(self.job_id)
        if not (force or left) and self._written_at is not None and now - self._written_at < WRITE_INTERVAL:
            return
        self._written_at = now
        noted = self.store.update(
            self.job_id,
            lambda record: jobs.note_progress(
                record, now=utcnow(), done=done, total=total, server_id=self.server_id, lease_seconds=self.lease_seconds
            ),
        )
        if noted is None:
            raise Cancelled(self.job_id)
        self.events.notify(self.job_id, noted)


class ProgressPacer:
    """When the waiting connection sends the record's progress (pure: the caller passes the clock)."""

    def __init__(self) -> None:
        self._sent: Progress | None = None
        self._sent_at: float | None = None

    def take(self, progress: Progress | None, now: float) -> Progress | None:
        """The progress to send now, if one is due; it then counts as sent."""
        if progress is None or self.seconds_to_due(progress, now) > 0:
            return None
        self._sent, self._sent_at = dict(progress), now
        return self._sent

    def seconds_to_due(self, progress: Progress | None, now: float) -> float:
        """How long the connection may wait before a progress message is due (inf: none will be)."""
        if progress is None:
            return float("inf")
        if self._sent_at is None:
            return 0.0
        since = now - self._sent_at
        if progress != self._sent:
            return max(0.0, 1.0 / MAX_PER_SECOND - since)
        return max(0.0, MAX_SILENCE - since)
