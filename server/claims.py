"""Which records a replica's processor claims next, and the claim itself.

Claims go oldest first. A record inserted here with no record queued ahead
of it (`first_in_line`, from `Intake.admit`) is the oldest: it is claimed by
the ETag it was inserted with, without a claim query (a round trip on
Cosmos DB, on every request's way). Otherwise the claim query's pages are
read in order, so that records this replica cannot take (another replica's
inline images, images still being fetched) never hide the ones it can. The
claim is `jobs.claim` written with `Store.replace` on the record's ETag, so
exactly one processor gets each record.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from server import jobs
from server.clock import utcnow
from server.config import Settings
from server.store import Conflict, Record, Store
from server.wakeups import JobEvents

log = logging.getLogger(__name__)

CLAIM_CANDIDATES = 8
CLAIM_PAGES = 32  # at most 256 records looked at per claim round
# How long other replicas leave a record to the replica whose embedding cache
# holds its image (`preferredServer`); after that, anyone takes it.
AFFINITY_SECONDS = 2.0


class Claims:
    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        events: JobEvents,
        server_id: str,
        image_is_here: Callable[[Record], bool],
        dropped: Callable[[str], None],
    ):
        self.store = store
        self.settings = settings
        self.events = events
        self.server_id = server_id
        self._image_is_here = image_is_here  # False sets its fetch going (`Processor._image_is_here`)
        self._dropped = dropped  # a record claimed only to end: its handed-over image is forgotten
        self._lock = threading.Lock()
        self._first_in_line: list[Record] = []

    def first_in_line(self, inserted: Record) -> None:
        """A record just inserted here with none queued ahead of it: the next `batch` takes it by its ETag.
        Should it have changed since (interrupted, or claimed by another replica), the query finds what is left."""
        with self._lock:
            self._first_in_line.append(inserted)

    def batch(self, size: int) -> list[Record]:
        """Claim up to `size` of the oldest records this replica can take."""
        with self._lock:
            first, self._first_in_line = self._first_in_line, []
        batch = [stored for candidate in first[:size] if (stored := self._take(candidate)) is not None]
        if first and len(batch) == size:  # any left over is still queued: the next query finds it
            return batch
        after = None
        for _ in range(CLAIM_PAGES):
            page = self.store.claimable(utcnow(), CLAIM_CANDIDATES, after=after)
            for candidate in page:
                if len(batch) == size:
                    return batch
                stored = self._take(candidate)
                if stored is not None:
                    batch.append(stored)
            if len(page) < CLAIM_CANDIDATES or len(batch) == size:
                break
            after = page[-1]["createdAt"]
        return batch

    def _take(self, candidate: Record) -> Record | None:
        """The candidate claimed, unless it is another replica's to take, or its image is not here yet."""
        orphan = jobs.waiter_gone(candidate, utcnow())  # claimed only to be interrupted
        if not orphan and (self.left_to_another(candidate) or not self._image_is_here(candidate)):
            return None
        return self._claim(candidate)

    def left_to_another(self, record: Record) -> bool:
        """A click on an image whose embedding another replica holds is its for AFFINITY_SECONDS.

        Cheap affinity, not a coordinator: if that replica is gone or busy,
        the record is anyone's once the moment has passed.
        """
        preferred = record.get("preferredServer")
        if record.get("video"):  # a clip's state is only on the replica whose session opened it
            return preferred != self.server_id
        if preferred is None or preferred == self.server_id:
            return False
        age = (utcnow() - jobs.parse_time(record["createdAt"])).total_seconds()
        return age < AFFINITY_SECONDS

    def _claim(self, candidate: Record) -> Record | None:
        """The claimed record, or None when another processor (or an interruption) got there first."""
        try:
            claimed = jobs.claim(
                candidate,
                now=utcnow(),  # not the time of the query: the record may be younger than that
                server_id=self.server_id,
                lease_seconds=self.settings.lease_seconds,
                max_attempts=self.settings.max_attempts,
            )
            stored = self.store.replace(claimed, etag=candidate["_etag"])
        except (jobs.TransitionRefused, Conflict):
            return None
        self.events.notify(stored["id"], stored)
        if stored["status"] == jobs.PROCESSING:
            return stored
        if stored["status"] == jobs.FAILED:
            log.warning("job %s failed: %s", stored["id"], stored["error"]["message"])
        else:
            log.info("job %s interrupted, not processed: its waiter's lease lapsed", stored["id"])
        self._dropped(stored["id"])
        return None
