"""The waiter's lease through a real server (docs/records.md, "The waiter's lease"): a record whose
connection stopped renewing it is interrupted, not processed, by any processor sharing the store; a
connection that waits long keeps its record alive by renewing it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import threading
import time
import uuid

import pytest

from harness import image_files
from harness.client import exchange
from harness.waiting import wait_for
from server import jobs
from server.clock import utcnow
from server.store.sqlite import SQLiteStore
from tests.conftest import ws_url

DATA_URL = "data:image/png;base64," + base64.b64encode(image_files.png_rgb(40, 30)).decode()
ORPHAN_PNG = image_files.png_rgb(64, 48)
BOX = {"x": 2, "y": 2, "width": 20, "height": 20}


def orphan_record(url: str, lease_lapsed_seconds_ago: float) -> dict:
    """A record as another replica's connection left it: inserted a minute ago, its lease renewed no more."""
    now = utcnow()
    created = now - dt.timedelta(seconds=60)
    return jobs.new_record(
        str(uuid.uuid4()), now=created, image_url=url, image_sha256=hashlib.sha256(ORPHAN_PNG).hexdigest(),
        width=64, height=48, boxes=[BOX], multimask=False, waiter_lease_seconds=60 - lease_lapsed_seconds_ago,
    )


def test_a_record_whose_waiter_left_is_interrupted_not_processed(start_app, gate, image_server, tmp_path):
    """Two replicas on one SQLite file: the orphan another replica's connection left, and this one's live request."""
    app = start_app(model=gate)
    gate.opened.set()
    image_server.add("/orphan.png", ORPHAN_PNG)
    other_replica = SQLiteStore(tmp_path / "cap.sqlite3")  # a second process's view of the same file
    orphan = other_replica.insert(orphan_record(image_server.url("/orphan.png"), lease_lapsed_seconds_ago=5))
    app.processor.wake.set()
    assert wait_for(lambda: app.store.get(orphan["id"])["status"] == jobs.INTERRUPTED, 10)
    assert gate.calls == 0 and image_server.hits["/orphan.png"] == 0  # neither fetched again nor encoded
    live = exchange(ws_url(app), {"image_url": DATA_URL, "boxes": [BOX]})
    assert live.types == ["queued", "status", "result"], live.messages
    stored = app.store.get(orphan["id"])
    assert stored["processing"] is None and stored["attempts"] == 0 and not jobs.order_violations(stored)


@pytest.mark.slow  # waits out leases
def test_a_connection_that_waits_longer_than_its_lease_keeps_renewing_it(start_app, gate):
    """WAITER_LEASE_SECONDS=1.5: a request held 4 s behind a busy model is still processed and answered."""
    app = start_app(model=gate, waiter_lease_seconds=1.5)
    busy = threading.Thread(target=lambda: exchange(ws_url(app), {"image_url": DATA_URL, "prompts": []}))
    busy.start()
    assert gate.entered.wait(10)
    outcome: list = []
    waiting = threading.Thread(target=lambda: outcome.append(exchange(ws_url(app), {"image_url": DATA_URL, "boxes": [BOX]})))
    waiting.start()
    assert wait_for(lambda: app.store.count_queued() == 1)
    [queued] = [r for r in app.store.records() if r["status"] == jobs.QUEUED]
    first_lease = queued["waiterLeaseUntil"]
    time.sleep(4)  # more than twice the lease
    renewed = app.store.get(queued["id"])
    assert renewed["status"] == jobs.QUEUED and renewed["waiterLeaseUntil"] > first_lease
    assert not jobs.waiter_gone(renewed, utcnow())
    gate.opened.set()
    busy.join(30)
    waiting.join(30)
    assert outcome[0].types == ["queued", "status", "result"], outcome[0].messages
    assert app.store.get(queued["id"])["status"] == jobs.FINISHED
