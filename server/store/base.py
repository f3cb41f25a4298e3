"""The store interface: the `Queue` and `SAMOutput` containers of docs/records.md.

Records are plain dicts with camelCase fields plus `_etag`, an opaque version
string that changes on every write. Every write after the insert names the
ETag it read; if the record changed since, the write raises `Conflict`
(Cosmos DB answers 412 there). `update` wraps that into "read, decide,
write, and on a lost race read and decide again".
"""

from __future__ import annotations

import abc
import datetime as dt
import random
import time
from typing import Any, Callable, Iterator

from server import jobs

Record = dict[str, Any]

UPDATE_RETRIES = 16
# A lost race waits a random time up to this, doubled after each loss up to CONFLICT_BACKOFF_CAP_SECONDS
# ("full jitter"): writers that keep colliding spread out fast, and a pair that collides once waits
# 2.5 ms on average. With a bound growing only linearly, one of 8 writers on the same record on the
# Cosmos DB emulator could lose all 16 times.
CONFLICT_BACKOFF_SECONDS = 0.005
CONFLICT_BACKOFF_CAP_SECONDS = 0.16


def conflict_backoff_bound(attempt: int) -> float:
    """The longest wait after losing the `attempt`-th race (1, 2, ...) to write one record."""
    return min(CONFLICT_BACKOFF_CAP_SECONDS, CONFLICT_BACKOFF_SECONDS * 2 ** (attempt - 1))


class Conflict(Exception):
    """The record changed since it was read (a stale ETag)."""


class StoreUnavailable(Exception):
    """The database cannot be reached or refused the operation."""


class ItemTooLarge(ValueError):
    """An item over the store's size limit: writing it again would fail again."""


class Store(abc.ABC):
    # --- Queue -----------------------------------------------------------------

    @abc.abstractmethod
    def insert(self, record: Record) -> Record:
        """Insert a new record; return it with its `_etag`."""

    @abc.abstractmethod
    def get(self, job_id: str) -> Record | None:
        """The record with this id, or None."""

    @abc.abstractmethod
    def replace(self, record: Record, *, etag: str) -> Record:
        """Write `record` if the stored one still has `etag`, else raise `Conflict`."""

    @abc.abstractmethod
    def claimable(self, now: dt.datetime, limit: int, after: str | None = None) -> list[Record]:
        """Queued records and records whose lease expired, oldest first.

        `after` (a `createdAt` value) pages on: only records created after it.
        """

    @abc.abstractmethod
    def with_image(self, sha256: str, limit: int, scope: str | None) -> list[Record]:
        """The newest records of this scope (None: records without one) whose image has this SHA-256,
        newest first (for requests by `image_sha256`)."""

    @abc.abstractmethod
    def count_queued(self) -> int:
        """How many records wait with status `queued`."""

    @abc.abstractmethod
    def unfinished_before(self, cutoff: dt.datetime) -> list[Record]:
        """Non-terminal records created before `cutoff` (for the sweep)."""

    @abc.abstractmethod
    def records(self) -> Iterator[Record]:
        """Every record, oldest first (for the audit)."""

    # --- SAMOutput -------------------------------------------------------------

    @abc.abstractmethod
    def put_output(self, output: Record) -> None:
        """Store the result for a record (its `id` is the record's id); `ItemTooLarge` if it cannot hold it."""

    @abc.abstractmethod
    def get_output(self, job_id: str) -> Record | None:
        """The stored result, or None."""

    # --- housekeeping ----------------------------------------------------------

    @abc.abstractmethod
    def check(self) -> None:
        """Raise `StoreUnavailable` unless the database takes a small write, within a few seconds.

        A write, not a read: a database that answers reads but refuses or
        holds writes (another process's lock, a read-only file) cannot take
        requests. The probe writes no record and no result.
        """

    def register_server(self) -> bool:
        """Count this process among the servers on the store until `close()`; True if it is the only one.

        Alone, no connection of another server can be waiting for a record
        not yet terminal, and this process has none yet: every such record is
        an orphan of a server that died. A store that replicas share (Cosmos
        DB) cannot say, and answers False.
        """
        return False

    def close(self) -> None:
        """Release connections."""

    def update(
        self, job_id: str, transition: Callable[[Record], Record], *, current: Record | None = None
    ) -> Record | None:
        """Apply a lifecycle transition; None if the record refuses it or is gone.

        Starts from `current` when the caller holds a copy it just read or
        wrote (saving a read), else reads the record. A lost race
        (`Conflict`) re-reads the record and decides again, so the
        transition always decides on the latest state.
        """
        record = current
        for attempt in range(1, UPDATE_RETRIES + 1):
            if record is None:
                record = self.get(job_id)
            if record is None:
                return None
            try:
                changed = transition(record)
            except jobs.TransitionRefused:
                return None
            try:
                return self.replace(changed, etag=record["_etag"])
            except Conflict:
                record = None
                if attempt < UPDATE_RETRIES:
                    time.sleep(random.uniform(0, conflict_backoff_bound(attempt)))
        raise StoreUnavailable(f"record {job_id} kept changing under {UPDATE_RETRIES} updates")
