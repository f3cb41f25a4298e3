"""A long job's progress: the processor's reports into the record (and cancel), the connection's pacing. Pure and SQLite."""

import datetime as dt

import pytest

from server import answers, jobs
from server.clock import utcnow
from server.progress import MAX_SILENCE, WRITE_INTERVAL, Cancelled, ProgressPacer, ProgressReporter
from server.store.sqlite import SQLiteStore
from server.wakeups import Bell, JobEvents

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def new(now=T0, total=None):
    return jobs.new_record(
        "a", now=now, image_url="http://x/a.png", image_sha256="00" * 32, width=4, height=3,
        boxes=[], multimask=False, progress_total=total,
    )


def claimed(now=T0, server_id="s1"):
    return jobs.claim(new(now, total=64), now=now, server_id=server_id, lease_seconds=10, max_attempts=3)


def test_progress_message_has_its_fields_and_client_ref():
    assert answers.progress_message("j", 3, 64) == '{"type":"progress","id":"j","done":3,"total":64}'
    assert answers.progress_message("j", 0, 1, "r") == '{"type":"progress","id":"j","done":0,"total":1,"client_ref":"r"}'


def test_a_record_with_a_total_starts_at_zero_and_others_have_none():
    assert new(total=64)["progress"] == {"done": 0, "total": 64}
    assert new()["progress"] is None


def test_note_progress_renews_the_lease_and_is_refused_off_its_processor():
    record = claimed()
    later = T0 + dt.timedelta(seconds=5)
    noted = jobs.note_progress(record, now=later, done=8, total=64, server_id="s1", lease_seconds=10)
    assert noted["progress"] == {"done": 8, "total": 64}
    assert noted["leaseUntil"] == jobs.format_time(later + dt.timedelta(seconds=10))
    with pytest.raises(jobs.TransitionRefused):
        jobs.note_progress(record, now=later, done=8, total=64, server_id="s2", lease_seconds=10)
    with pytest.raises(jobs.TransitionRefused):
        jobs.note_progress(jobs.interrupt(record, now=later), now=later, done=8, total=64, server_id="s1", lease_seconds=10)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def store(tmp_path):
    store = SQLiteStore(tmp_path / "cap.sqlite3")
    yield store
    store.close()


def test_reporter_writes_at_most_every_interval_and_rings_the_bell(store):
    store.insert(jobs.claim(new(now=utcnow(), total=64), now=utcnow(), server_id="s1", lease_seconds=10, max_attempts=3))
    events, bell, clock = JobEvents(), Bell(), Clock()
    events.subscribe("a", bell)
    reporter = ProgressReporter(store, events, "a", server_id="s1", lease_seconds=10, clock=clock)
    reporter.report(8, 64)
    assert store.get("a")["progress"] == {"done": 8, "total": 64}
    assert bell._rung.is_set()
    clock.now += WRITE_INTERVAL / 2
    reporter.report(16, 64)  # too soon: not written
    assert store.get("a")["progress"]["done"] == 8
    reporter.report(24, 64, force=True)
    assert store.get("a")["progress"]["done"] == 24
    clock.now += WRITE_INTERVAL
    reporter.report(32, 64)
    assert store.get("a")["progress"]["done"] == 32


def test_reporter_raises_cancelled_once_the_record_is_interrupted(store):
    store.insert(jobs.claim(new(now=utcnow(), total=64), now=utcnow(), server_id="s1", lease_seconds=10, max_attempts=3))
    reporter = ProgressReporter(store, JobEvents(), "a", server_id="s1", lease_seconds=10, clock=Clock())
    reporter.report(8, 64)
    store.update("a", lambda r: jobs.interrupt(r, now=utcnow()))
    with pytest.raises(Cancelled):
        reporter.report(16, 64, force=True)
    assert store.get("a")["status"] == "interrupted"


def test_pacer_sends_at_once_then_on_change_at_most_four_a_second_and_at_least_every_two_seconds():
    pacer = ProgressPacer()
    assert pacer.take(None, 0.0) is None and pacer.seconds_to_due(None, 0.0) == float("inf")
    assert pacer.take({"done": 0, "total": 64}, 0.0) == {"done": 0, "total": 64}  # with `status`
    assert pacer.take({"done": 8, "total": 64}, 0.1) is None  # moved, but too soon
    assert pacer.seconds_to_due({"done": 8, "total": 64}, 0.1) == pytest.approx(0.15)
    assert pacer.take({"done": 8, "total": 64}, 0.25) == {"done": 8, "total": 64}
    assert pacer.take({"done": 8, "total": 64}, 1.0) is None  # unchanged: not yet
    assert pacer.seconds_to_due({"done": 8, "total": 64}, 1.0) == pytest.approx(MAX_SILENCE - 0.75)
    assert pacer.take({"done": 8, "total": 64}, 0.25 + MAX_SILENCE) == {"done": 8, "total": 64}  # unchanged, still said


def test_once_the_connection_here_stops_waiting_every_step_asks_the_record(store):
    store.insert(jobs.claim(new(now=utcnow(), total=64), now=utcnow(), server_id="s1", lease_seconds=10, max_attempts=3))
    events, clock = JobEvents(), Clock()
    events.subscribe("a", Bell())
    reporter = ProgressReporter(store, events, "a", server_id="s1", lease_seconds=10, clock=clock)
    reporter.report(8, 64)
    events.unsubscribe("a")  # as the connection does, just before it interrupts the record
    assert not events.watched("a")
    reporter.report(9, 64)  # no time has passed, yet it is written
    assert store.get("a")["progress"]["done"] == 9
    store.update("a", lambda r: jobs.interrupt(r, now=utcnow()))
    with pytest.raises(Cancelled):
        reporter.report(9, 64)
