"""The store contract: every backend must pass this same suite.

The `store` fixture is parametrized by backend; the Cosmos DB store joins
the list when it exists. Nothing here knows which backend it talks to.
"""

import datetime as dt
import sqlite3
import threading

import pytest

from harness.cosmos_emulator import KEY
from harness.ports import free_port
from server import jobs
from server.store import Conflict, StoreUnavailable
from server.store import base as store_base
from server.store.cosmos import CosmosStore
from server.store.sqlite import SQLiteStore
from tests.conftest import cosmos_store

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture(params=["sqlite", pytest.param("cosmos", marks=pytest.mark.slow)])
def store(request, tmp_path):
    if request.param == "sqlite":
        backend = SQLiteStore(tmp_path / "contract.sqlite3")
    else:
        backend = cosmos_store(request.getfixturevalue("cosmos_emulator"))
    yield backend
    backend.close()


def record(job_id: str, created: float = 0, **fields):
    base = jobs.new_record(
        job_id, now=at(created), image_url="http://img/a.png", image_sha256="ab" * 32, width=640,
        height=480, boxes=[{"x": 1.5, "y": 2.0, "width": 3.0, "height": 4.0}], multimask=True,
    )
    return {**base, **fields}


def claim(store, job_id, now, lease=10.0):
    return store.update(
        job_id, lambda r: jobs.claim(r, now=now, server_id="s1", lease_seconds=lease, max_attempts=3)
    )


def test_insert_then_get_returns_every_field_unchanged(store):
    original = record("a")
    stored = store.insert(original)
    assert stored["_etag"]
    fetched = store.get("a")
    assert {k: v for k, v in fetched.items() if k != "_etag"} == original
    assert fetched["_etag"] == stored["_etag"]
    assert fetched["multimask"] is True and fetched["boxes"][0]["x"] == 1.5


def test_get_of_a_missing_record_is_none(store):
    assert store.get("nope") is None
    assert store.get_output("nope") is None


def test_replace_with_the_current_etag_writes_and_changes_the_etag(store):
    stored = store.insert(record("a"))
    written = store.replace({**stored, "attempts": 1}, etag=stored["_etag"])
    assert written["_etag"] != stored["_etag"]
    assert store.get("a")["attempts"] == 1
    assert store.get("a")["_etag"] == written["_etag"]


def test_replace_with_a_stale_etag_is_a_conflict_and_writes_nothing(store):
    stored = store.insert(record("a"))
    store.replace({**stored, "attempts": 1}, etag=stored["_etag"])
    with pytest.raises(Conflict):
        store.replace({**stored, "attempts": 7}, etag=stored["_etag"])
    assert store.get("a")["attempts"] == 1


def test_interrupt_wins_over_a_claim_that_read_before_it(store):
    """The race of docs/records.md: the processor read the record, then the client left."""
    seen_by_processor = store.insert(record("a"))
    assert store.update("a", lambda r: jobs.interrupt(r, now=at(1)))["status"] == "interrupted"
    claimed = jobs.claim(seen_by_processor, now=at(2), server_id="s1", lease_seconds=10, max_attempts=3)
    with pytest.raises(Conflict):
        store.replace(claimed, etag=seen_by_processor["_etag"])
    # Deciding again on the fresh record refuses the claim: it is never processed.
    assert claim(store, "a", at(2)) is None
    assert store.get("a")["status"] == "interrupted"


def test_claim_wins_over_an_interrupt_that_read_before_it(store):
    seen_by_connection = store.insert(record("a"))
    assert claim(store, "a", at(1))["status"] == "processing"
    with pytest.raises(Conflict):
        store.replace(jobs.interrupt(seen_by_connection, now=at(2)), etag=seen_by_connection["_etag"])
    # update() re-reads and decides again: a processing record can still be interrupted.
    assert store.update("a", lambda r: jobs.interrupt(r, now=at(2)))["status"] == "interrupted"


def test_update_of_a_missing_record_is_none(store):
    assert store.update("nope", lambda r: jobs.interrupt(r, now=at(1))) is None


def test_concurrent_updates_lose_nothing(store):
    """Many threads bump a counter through update(): every bump must land once."""
    store.insert(record("a"))
    errors = []

    def bump_ten_times():
        try:
            for _ in range(10):
                assert store.update("a", lambda r: {**r, "attempts": r["attempts"] + 1}) is not None
        except Exception as exc:  # reported below: a thread's exception must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=bump_ten_times) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.get("a")["attempts"] == 80


def test_an_update_that_loses_every_race_gives_up_after_its_retries_waiting_longer_each_time(store, monkeypatch):
    """Another writer changes the record behind every attempt: StoreUnavailable after UPDATE_RETRIES tries, and
    the bound of the random wait between them doubles from CONFLICT_BACKOFF_SECONDS up to its cap."""
    store.insert(record("a"))
    bounds = []
    monkeypatch.setattr(store_base.random, "uniform", lambda low, high: bounds.append(high) or 0.0)
    tries = []

    def changed_behind_its_back(seen):
        tries.append(seen["attempts"])
        latest = store.get("a")
        store.replace({**latest, "attempts": latest["attempts"] + 1}, etag=latest["_etag"])
        return {**seen, "attempts": seen["attempts"] + 100}

    with pytest.raises(StoreUnavailable, match=f"kept changing under {store_base.UPDATE_RETRIES} updates"):
        store.update("a", changed_behind_its_back)
    assert tries == list(range(store_base.UPDATE_RETRIES))  # each try decided on the latest record
    assert bounds == [0.005, 0.01, 0.02, 0.04, 0.08] + [0.16] * (store_base.UPDATE_RETRIES - 6)  # no wait after the last
    assert store.get("a")["attempts"] == store_base.UPDATE_RETRIES  # only the other writer's changes landed


def test_only_one_of_many_racing_claims_wins(store):
    store.insert(record("a"))
    first_read = [store.get("a") for _ in range(5)]
    winners = 0
    for seen in first_read:
        try:
            store.replace(jobs.claim(seen, now=at(1), server_id="s", lease_seconds=5, max_attempts=3), etag=seen["_etag"])
            winners += 1
        except Conflict:
            pass
    assert winners == 1


def test_claimable_lists_queued_and_expired_leases_oldest_first(store):
    store.insert(record("new", created=30))
    store.insert(record("old", created=10))
    store.insert(record("mid", created=20))
    store.insert(record("gone", created=5))
    store.update("gone", lambda r: jobs.interrupt(r, now=at(6)))
    claim(store, "mid", at(21), lease=100)  # lease runs to 121
    assert [r["id"] for r in store.claimable(at(50), 10)] == ["old", "new"]
    assert [r["id"] for r in store.claimable(at(200), 10)] == ["old", "mid", "new"]
    assert [r["id"] for r in store.claimable(at(200), 1)] == ["old"]


def test_count_queued_counts_only_queued_records(store):
    for n, job_id in enumerate(["a", "b", "c", "d"]):
        store.insert(record(job_id, created=n))
    claim(store, "a", at(10))
    store.update("b", lambda r: jobs.interrupt(r, now=at(11)))
    assert store.count_queued() == 2


def test_update_from_a_held_copy_skips_the_read_but_still_loses_races(store):
    held = store.insert(record("a"))
    assert store.update("a", lambda r: {**r, "attempts": 5}, current=held)["attempts"] == 5
    # `held` is stale now: the write conflicts, update() re-reads and decides on the fresh record.
    assert store.update("a", lambda r: {**r, "attempts": r["attempts"] + 1}, current=held)["attempts"] == 6


def test_unfinished_before_lists_non_terminal_old_records(store):
    store.insert(record("old-queued", created=0))
    store.insert(record("old-processing", created=1))
    store.insert(record("old-done", created=2))
    store.insert(record("young", created=100))
    claim(store, "old-processing", at(3))
    store.update("old-done", lambda r: jobs.fail(r, now=at(4), code="processing_failed", message="x"))
    assert [r["id"] for r in store.unfinished_before(at(50))] == ["old-queued", "old-processing"]


def test_records_lists_all_oldest_first(store):
    for job_id, created in (("b", 2), ("a", 1), ("c", 3)):
        store.insert(record(job_id, created=created))
    assert [r["id"] for r in store.records()] == ["a", "b", "c"]


def test_outputs_round_trip(store):
    output = {
        "id": "a",
        "masks": [{"box": {"x": 0.0, "y": 0.0, "width": 1.0, "height": 1.0}, "score": 0.5, "area": 1,
                   "bbox": [0, 0, 1, 1], "segmentation": {"size": [1, 1], "counts": "01"}}],
        "model": "vit_b",
        "createdAt": jobs.format_time(T0),
        "timings": {"encode_ms": 1.0, "decode_ms": 2.0},
        "cachedEmbedding": True,
    }
    store.put_output(output)
    fetched = store.get_output("a")
    assert {k: v for k, v in fetched.items() if k != "_etag"} == output


def test_a_sqlite_file_from_before_the_embedding_cache_gains_its_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # SAMOutput as the first release created it
        db.execute("CREATE TABLE SAMOutput (id TEXT PRIMARY KEY, masks TEXT NOT NULL, model TEXT NOT NULL, "
                   "createdAt TEXT NOT NULL, timings TEXT NOT NULL, _etag TEXT NOT NULL)")
        db.execute("INSERT INTO SAMOutput VALUES ('old', '[]', 'vit_b', '2026-01-01T00:00:00.000000Z', '{}', 'e')")
    db.close()
    store = SQLiteStore(path)
    assert store.get_output("old")["cachedEmbedding"] is False
    store.put_output({"id": "new", "masks": [], "model": "vit_b", "createdAt": "2026-01-01T00:00:00.000000Z",
                      "timings": {}, "cachedEmbedding": True})
    assert store.get_output("new")["cachedEmbedding"] is True


def test_a_waiters_lease_is_stored_renewed_and_ends_an_orphan_at_its_claim(store):
    store.insert(record("live", waiterLeaseUntil=jobs.format_time(at(30))))
    store.insert(record("orphan", created=1, waiterLeaseUntil=jobs.format_time(at(30))))
    assert store.update("live", lambda r: jobs.renew_waiter(r, now=at(25), lease_seconds=30)) is not None
    assert store.get("live")["waiterLeaseUntil"] == jobs.format_time(at(55))
    assert claim(store, "live", at(40))["status"] == "processing"
    assert claim(store, "orphan", at(40))["status"] == "interrupted"
    assert store.get("orphan")["status"] == "interrupted" and store.get("orphan")["waiterLeaseUntil"]


def test_check_passes_on_a_working_store_and_its_probe_write_leaves_records_and_results_alone(store):
    store.check()
    store.insert(record("a"))
    store.check()
    store.check()  # the probe's item is written over, never added again
    assert [r["id"] for r in store.records()] == ["a"]
    assert store.count_queued() == 1 and store.get_output("a") is None
    assert [r["id"] for r in store.unfinished_before(at(60))] == ["a"]


@pytest.mark.slow  # waits out the check's timeout
def test_the_sqlite_check_is_a_write_that_fails_fast_while_another_connection_holds_the_file(tmp_path):
    import sqlite3
    import time

    from server.store.sqlite import CHECK_TIMEOUT_SECONDS

    store = SQLiteStore(tmp_path / "locked.sqlite3")
    store.check()
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # as another process would; reads still work in WAL mode
    try:
        assert store.count_queued() == 0
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="cannot be written: database is locked"):
            store.check()
        assert time.monotonic() - started < CHECK_TIMEOUT_SECONDS + 3
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.check()
    store.close()


def test_a_sqlite_server_knows_whether_it_is_alone_on_the_file(tmp_path):
    path = tmp_path / "shared.sqlite3"
    first, second, third = SQLiteStore(path), SQLiteStore(path), SQLiteStore(path)
    assert first.register_server() is True  # no other server: what is unfinished has no one waiting
    assert second.register_server() is False  # the first runs: its clients may be waiting
    first.close()
    assert third.register_server() is False  # the second still runs
    second.close()
    third.close()
    again = SQLiteStore(path)
    assert again.register_server() is True
    again.close()


def test_sqlite_threads_in_turn_reuse_one_connection_and_a_streamed_query_keeps_its_own(tmp_path, monkeypatch):
    """Every WebSocket connection runs on a thread of its own: a SQLite connection opened for each thread cost
    each request about half a millisecond before its first query. Idle connections are pooled instead."""
    opened = []
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *args, **kwargs: opened.append(1) or connect(*args, **kwargs))
    store = SQLiteStore(tmp_path / "pooled.sqlite3")
    try:
        store.insert(record("a"))
        for _ in range(5):
            thread = threading.Thread(target=store.count_queued)
            thread.start()
            thread.join()
        assert len(opened) == 1
        streamed = store.records()
        assert next(streamed)["id"] == "a"  # its connection is held until the iteration ends
        assert store.get("a")["id"] == "a"  # so this statement needs another
        assert len(opened) == 2
        assert list(streamed) == []
        store.count_queued()
        assert len(opened) == 2  # both were given back
    finally:
        store.close()


@pytest.fixture(params=["sqlite", "cosmos"])
def unanswering_store(request, tmp_path):
    """A store whose database does not answer: a SQLite store closed under its user, a Cosmos DB store
    whose endpoint nothing listens on."""
    if request.param == "sqlite":
        backend = SQLiteStore(tmp_path / "closed.sqlite3")
        backend.close()
    else:
        backend = CosmosStore(f"https://127.0.0.1:{free_port()}/", KEY, database="cap", queue_container="Queue",
                              output_container="SAMOutput", verify_tls=False, timeout=1)
    yield backend
    backend.close()


def test_check_raises_store_unavailable_when_the_database_does_not_answer(unanswering_store):
    """/health reports the store from check(): one that never raises would keep /health green over a dead database."""
    with pytest.raises(StoreUnavailable):
        unanswering_store.check()


def test_a_1_1_record_keeps_its_prompts_and_output_and_is_found_by_its_image(store):
    prompts = [{"points": [{"x": 1.0, "y": 2.0, "label": 0}], "mask_input": {"id": "a", "index": 0, "candidate": 2}}]
    newer = record("b", created=5, prompts=prompts, output=["rle", "polygons"], boxes=[], preferredServer="cap-x")
    store.insert(record("a"))
    store.insert(newer)
    store.insert(record("c", created=9, imageSha256="cd" * 32))
    fetched = store.get("b")
    assert fetched["prompts"] == prompts and fetched["output"] == ["rle", "polygons"] and fetched["boxes"] == []
    assert fetched["preferredServer"] == "cap-x"
    assert [r["id"] for r in store.with_image("ab" * 32, 8, None)] == ["b", "a"]  # newest first
    assert [r["id"] for r in store.with_image("ab" * 32, 1, None)] == ["b"]
    assert store.with_image("ef" * 32, 8, None) == []


def test_records_by_image_are_found_in_their_token_scope_only(store):
    """A scope's newest records are found however many another scope has with the same image."""
    store.insert(record("mine", scope="scope-a"))
    for n in range(3):
        store.insert(record(f"theirs-{n}", created=1 + n, scope="scope-b"))
    store.insert(record("unscoped", created=9))
    assert store.get("mine")["scope"] == "scope-a"
    assert [r["id"] for r in store.with_image("ab" * 32, 1, "scope-a")] == ["mine"]
    assert [r["id"] for r in store.with_image("ab" * 32, 8, "scope-b")] == ["theirs-2", "theirs-1", "theirs-0"]
    assert [r["id"] for r in store.with_image("ab" * 32, 8, None)] == ["unscoped"]
    assert store.with_image("ab" * 32, 8, "scope-c") == []


def test_claimable_pages_on_after_a_creation_time(store):
    for n in range(5):
        store.insert(record(f"p{n}", created=n))
    first = store.claimable(at(10), 2)
    assert [r["id"] for r in first] == ["p0", "p1"]
    assert [r["id"] for r in store.claimable(at(10), 2, after=first[-1]["createdAt"])] == ["p2", "p3"]
