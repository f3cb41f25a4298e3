"""A real SQLite store that counts the claim queries whose answer held a queued record.

Tests use it to see another server's processor look at a record, and leave it.
"""

from __future__ import annotations

from server.store.sqlite import SQLiteStore


class WatchedStore(SQLiteStore):
    saw_queued = 0

    def claimable(self, now, limit, after=None):
        found = super().claimable(now, limit, after)
        self.saw_queued += any(record["status"] == "queued" for record in found)
        return found
