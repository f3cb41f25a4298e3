"""At start: end the records that a dead server left behind, before the processor can take them.

A record not yet terminal has a connection waiting for it, in the server
that received it. After a crash (`kill -9`, a power cut) those connections
are gone, and so is anyone to send a result to. Processing such a record
again would spend the model on nobody, ahead of the clients that connect
now, and leave it `processed` until the sweep ends it after JOB_TIMEOUT.

So a server that finds itself the only one on its store (SQLite;
`Store.register_server`) marks every record not yet terminal `interrupted`,
with the reason `server_restarted` in its `error`, before its processor
starts. On a store that replicas share (Cosmos DB) another replica's
clients may still be waiting; those records are left to the leases and the
sweep.
"""

from __future__ import annotations

import logging

from server import jobs
from server.clock import utcnow
from server.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

RESTARTED = {
    "code": "server_restarted",
    "message": "The server stopped before this request was answered, and no connection was left to wait for it.",
}


def interrupt_orphans(store: Store) -> None:
    """Interrupt every record not yet terminal, if this process is the store's only server."""
    started = utcnow()  # before registering: records of a server that shares the store later are all newer
    if not store.register_server():
        return
    interrupted = 0
    try:
        for record in store.unfinished_before(started):
            if store.update(record["id"], lambda r: jobs.interrupt(r, now=utcnow(), reason=RESTARTED)) is not None:
                interrupted += 1
    except StoreUnavailable as exc:
        log.error("could not end the records left by the last run (the sweep will, after JOB_TIMEOUT): %s", exc)
    if interrupted:
        log.warning("%d records left unfinished by the last run marked interrupted (server_restarted)", interrupted)
