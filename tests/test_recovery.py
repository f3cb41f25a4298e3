"""A server starting on records a dead one left: alone on its SQLite file, it interrupts them before
its processor can take them; sharing the file with a running server, it leaves them to their owner.

(The same after a real `kill -9`, with a real process: tests/test_process_faults.py.)
"""

import datetime as dt
import uuid

from harness.client import exchange
from server import jobs
from server.clock import utcnow
from server.store.sqlite import SQLiteStore
from tests.conftest import make_settings, ws_url

BOX = {"x": 1.0, "y": 1.0, "width": 9.0, "height": 9.0}


def left_record(image_url: str = "sha256:" + "0" * 64, age_seconds: float = 5) -> dict:
    """A queued record as a server that died would have left it."""
    return jobs.new_record(
        str(uuid.uuid4()), now=utcnow() - dt.timedelta(seconds=age_seconds), image_url=image_url,
        image_sha256="0" * 64, width=64, height=48, boxes=[BOX], multimask=False,
    )


def leave_records(store: SQLiteStore) -> dict[str, dict]:
    """One record at each stage a dead server can leave: queued, processing (its lease still runs), processed; and one finished."""
    now = utcnow()
    queued, processing, processed, finished = (store.insert(left_record()) for _ in range(4))
    claim = lambda r: jobs.claim(r, now=now, server_id="cap-dead", lease_seconds=120, max_attempts=3)  # noqa: E731
    store.update(processing["id"], claim)
    store.update(processed["id"], lambda r: jobs.mark_processed(claim(r), now=now))
    store.update(finished["id"], lambda r: jobs.mark_finished(jobs.mark_processed(claim(r), now=now), now=now))
    return {"queued": queued, "processing": processing, "processed": processed, "finished": finished}


def test_a_server_alone_on_its_file_interrupts_what_the_last_run_left_before_its_model_runs_and_one_sharing_does_not(
    tmp_path, start_app, gate, image_server
):
    store = SQLiteStore(make_settings(tmp_path).sqlite_path)
    left = leave_records(store)
    gate.opened.set()
    app = start_app(model=gate, store=store)

    statuses = {stage: store.get(r["id"]) for stage, r in left.items()}
    assert {stage: r["status"] for stage, r in statuses.items()} == {
        "queued": "interrupted", "processing": "interrupted", "processed": "interrupted", "finished": "finished",
    }
    for stage in ("queued", "processing", "processed"):
        assert statuses[stage]["error"]["code"] == "server_restarted"
        assert jobs.order_violations(statuses[stage]) == []
    assert statuses["finished"]["error"] is None
    assert gate.calls == 0  # the model never ran for them

    outcome = exchange(ws_url(app), {"image_url": image_server.url("/rgb.png"), "boxes": [BOX]})
    assert outcome.types == ["queued", "status", "result"]
    assert gate.calls == 1  # only for the new client

    # A second server on the same file, while the first runs: not alone, so it leaves the first's records alone.
    waiting = store.insert(left_record(age_seconds=0))  # the first's: its image is not here, so it stays queued
    start_app(store=SQLiteStore(app.settings.sqlite_path))
    assert store.get(waiting["id"])["status"] == "queued"
