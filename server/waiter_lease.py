"""The waiter's lease: a waiting connection's word that someone still reads its record's result.

A record is inserted with `waiterLeaseUntil` WAITER_LEASE_SECONDS ahead
(`jobs.new_record`); while its connection waits, it renews the lease every
third of that. A processor, on any replica sharing the store, claims a record
whose lease lapsed only to interrupt it (`jobs.claim`): its connection is
gone (a crash, a replica that died), and no one would read the result.
"""

from __future__ import annotations

import time

from server import jobs
from server.clock import utcnow
from server.store import Store

RENEWALS = 3  # per lease: two renewals may fail or come late before the lease lapses


class WaiterLease:
    def __init__(self, store: Store, job_id: str, seconds: float):
        self.store = store
        self.job_id = job_id
        self.seconds = seconds
        self._due = time.monotonic() + seconds / RENEWALS

    def renew_if_due(self) -> None:
        if time.monotonic() < self._due:
            return
        self.store.update(self.job_id, lambda r: jobs.renew_waiter(r, now=utcnow(), lease_seconds=self.seconds))
        self._due = time.monotonic() + self.seconds / RENEWALS

    def seconds_to_renewal(self) -> float:
        return max(0.0, self._due - time.monotonic())
