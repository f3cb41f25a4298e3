"""Record lifecycle transitions and the order invariant, pure."""

import datetime as dt

import pytest

from server import jobs
from server.jobs import TransitionRefused

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.timezone.utc)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def new(job_id="a", now=T0):
    return jobs.new_record(
        job_id, now=now, image_url="http://x/a.png", image_sha256="00" * 32, width=4, height=3,
        boxes=[{"x": 0.0, "y": 0.0, "width": 1.0, "height": 1.0}], multimask=False,
    )


def claim(record, now, max_attempts=3, lease=10.0):
    return jobs.claim(record, now=now, server_id="s1", lease_seconds=lease, max_attempts=max_attempts)


def test_format_time_is_fixed_width_utc_and_round_trips():
    text = jobs.format_time(T0)
    assert text == "2026-01-02T03:04:05.123456Z"
    assert jobs.parse_time(text) == T0
    assert jobs.format_time(dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc)) == "2026-01-02T00:00:00.000000Z"


def test_the_happy_path_sets_each_stage_in_order():
    record = new()
    assert record["status"] == "queued" and record["id"] == record["uuid"] == "a"
    record = claim(record, at(1))
    assert (record["status"], record["attempts"], record["serverId"]) == ("processing", 1, "s1")
    assert record["leaseUntil"] == jobs.format_time(at(11))
    record = jobs.mark_processed(record, now=at(2))
    assert record["status"] == "processed" and record["leaseUntil"] is None
    record = jobs.mark_finished(record, now=at(3))
    assert record["status"] == "finished"
    assert [record[s] for s in jobs.STAGES] == [jobs.format_time(at(s)) for s in range(4)]
    assert jobs.order_violations(record) == []


def test_an_interrupted_record_is_never_claimed():
    record = jobs.interrupt(new(), now=at(1))
    assert record["status"] == "interrupted" and jobs.is_terminal(record)
    with pytest.raises(TransitionRefused):
        claim(record, at(2))


def test_terminal_records_refuse_every_transition():
    finished = jobs.mark_finished(jobs.mark_processed(claim(new(), at(1)), now=at(2)), now=at(3))
    failed = jobs.fail(new(), now=at(1), code="processing_failed", message="m")
    for record in (finished, failed, jobs.interrupt(new(), now=at(1))):
        for transition in (
            lambda r: claim(r, at(9)),
            lambda r: jobs.mark_processed(r, now=at(9)),
            lambda r: jobs.mark_finished(r, now=at(9)),
            lambda r: jobs.interrupt(r, now=at(9)),
            lambda r: jobs.fail(r, now=at(9), code="processing_failed", message="m"),
        ):
            with pytest.raises(TransitionRefused):
                transition(record)


def test_stages_cannot_be_skipped():
    with pytest.raises(TransitionRefused):
        jobs.mark_processed(new(), now=at(1))
    with pytest.raises(TransitionRefused):
        jobs.mark_finished(claim(new(), at(1)), now=at(2))


def test_an_interruption_mid_processing_means_finished_is_never_set():
    record = jobs.interrupt(claim(new(), at(1)), now=at(2))
    with pytest.raises(TransitionRefused):
        jobs.mark_processed(record, now=at(3))
    assert record["finished"] is None and jobs.order_violations(record) == []


def test_a_live_lease_cannot_be_claimed_and_an_expired_one_can():
    record = claim(new(), at(1), lease=10)
    with pytest.raises(TransitionRefused):
        claim(record, at(5))
    reclaimed = claim(record, at(11))
    assert reclaimed["attempts"] == 2 and reclaimed["processing"] == jobs.format_time(at(11))


def test_reclaim_past_max_attempts_fails_the_record():
    record = new()
    for n in range(3):
        record = claim(record, at(20 * n), max_attempts=3)
    assert record["attempts"] == 3
    failed = claim(record, at(100), max_attempts=3)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "processing_failed"
    assert jobs.order_violations(failed) == []


def test_a_record_whose_waiter_is_gone_is_claimed_only_to_be_interrupted():
    record = jobs.new_record(
        "w", now=T0, image_url="http://x/a.png", image_sha256="00" * 32, width=4, height=3, boxes=[],
        multimask=False, waiter_lease_seconds=30,
    )
    assert record["waiterLeaseUntil"] == jobs.format_time(at(30))
    renewed = jobs.renew_waiter(record, now=at(20), lease_seconds=30)
    assert renewed["waiterLeaseUntil"] == jobs.format_time(at(50)) and renewed["status"] == "queued"
    assert claim(renewed, at(49))["status"] == "processing"  # someone still waits
    orphan = claim(renewed, at(50))
    assert orphan["status"] == "interrupted" and orphan["attempts"] == 0 and orphan["processing"] is None
    assert orphan["error"] == jobs.WAITER_GONE  # why, for its connection, should it still be there
    assert jobs.order_violations(orphan) == []
    # Reclaiming a dead processor's record also asks whether anyone still waits.
    held = jobs.renew_waiter(claim(renewed, at(40), lease=5), now=at(41), lease_seconds=30)
    assert claim(held, at(71))["status"] == "interrupted"
    assert claim(new(), at(10_000))["status"] == "processing"  # no lease (an older record): processed
    for ended in (jobs.mark_processed(claim(renewed, at(40)), now=at(42)), jobs.interrupt(renewed, now=at(21))):
        with pytest.raises(TransitionRefused):
            jobs.renew_waiter(ended, now=at(43), lease_seconds=30)


def test_fail_records_the_error():
    record = jobs.fail(claim(new(), at(1)), now=at(2), code="processing_failed", message="out of memory")
    assert record["error"] == {"code": "processing_failed", "message": "out of memory"}
    assert record["failed"] == jobs.format_time(at(2))


@pytest.mark.parametrize(
    "change, words",
    [
        ({"processing": jobs.format_time(at(-1)), "status": "processing"}, "before createdAt"),
        ({"processed": jobs.format_time(at(1)), "status": "processed"}, "skip"),
        ({"status": "processing"}, "latest timestamp"),
        ({"interrupted": jobs.format_time(at(1)), "failed": jobs.format_time(at(2)), "status": "failed"}, "both"),
        ({"createdAt": "yesterday"}, "not an ISO-8601"),
        ({"createdAt": None}, "createdAt is missing"),
        ({"interrupted": jobs.format_time(at(-5)), "status": "interrupted"}, "before createdAt"),
    ],
)
def test_order_violations_are_named(change, words):
    problems = jobs.order_violations({**new(), **change})
    assert any(words in p for p in problems), problems


def test_finished_and_interrupted_together_is_a_violation():
    finished = jobs.mark_finished(jobs.mark_processed(claim(new(), at(1)), now=at(2)), now=at(3))
    problems = jobs.order_violations({**finished, "interrupted": jobs.format_time(at(4))})
    assert any("finished and interrupted" in p for p in problems)


def test_timestamps_stay_in_order_when_clocks_disagree():
    """A replica whose clock lags the inserting one still writes ordered timestamps."""
    record = new(now=at(10))
    record = claim(record, at(9))  # the claiming host's clock is 1 s behind
    assert record["processing"] == record["createdAt"]
    record = jobs.mark_processed(record, now=at(8))
    assert record["processed"] == record["processing"]
    record = jobs.mark_finished(record, now=at(7))
    assert jobs.order_violations(record) == []
    interrupted = jobs.interrupt(claim(new(now=at(10)), at(12)), now=at(11))
    assert interrupted["interrupted"] == jobs.format_time(at(12))
    assert jobs.order_violations(interrupted) == []


def test_work_reads_a_protocol_1_and_a_1_1_record_alike():
    v1 = jobs.Work.of(new())
    assert v1.prompts is None and v1.output == ("rle",)
    assert v1.echoes() == [{"box": {"x": 0.0, "y": 0.0, "width": 1.0, "height": 1.0}}]
    prompt = {"points": [{"x": 1.0, "y": 2.0, "label": 1}], "mask_input": {"id": "b", "index": 0}}
    record = jobs.new_record(
        "c", now=T0, image_url="sha256:" + "00" * 32, image_sha256="00" * 32, width=4, height=3,
        boxes=[], multimask=True, prompts=[prompt], output=["polygons"], preferred_server="cap-1",
    )
    work = jobs.Work.of(record)
    assert work.echoes() == [{"prompt": prompt}] and work.output == ("polygons",) and work.multimask
    assert record["preferredServer"] == "cap-1" and not jobs.order_violations(record)
    old = {k: v for k, v in new().items() if k not in ("prompts", "output", "preferredServer")}
    assert jobs.Work.of(old).output == ("rle",)  # a record stored before protocol 1.1


def test_an_interruption_may_say_why_when_no_client_was_told():
    reason = {"code": "server_restarted", "message": "gone"}
    told = jobs.interrupt(claim(new(), at(1)), now=at(2))
    assert told["error"] is None
    orphan = jobs.interrupt(jobs.mark_processed(claim(new(), at(1)), now=at(2)), now=at(3), reason=reason)
    assert (orphan["status"], orphan["error"]) == ("interrupted", reason)
    assert jobs.order_violations(orphan) == []


def test_a_record_not_terminal_past_the_horizon_is_overdue():
    queued, processed = new(), jobs.mark_processed(claim(new(), at(1)), now=at(2))
    assert jobs.overdue(queued, now=at(100), horizon_seconds=100) is None
    assert jobs.overdue(queued, now=at(101), horizon_seconds=100) == (
        "still queued 101 s after createdAt, past the 100 s a request may take"
    )
    assert "still processed 5000 s" in jobs.overdue(processed, now=at(5000), horizon_seconds=100)
    assert jobs.overdue(jobs.mark_finished(processed, now=at(3)), now=at(5000), horizon_seconds=100) is None
    assert jobs.overdue({**queued, "createdAt": "yesterday"}, now=at(5000), horizon_seconds=100) is None


def test_a_long_job_that_reports_progress_is_not_overdue_while_its_lease_holds():
    working = jobs.note_progress(claim(new(), at(1)), now=at(5000), done=3, total=9, server_id="s1", lease_seconds=10)
    assert jobs.overdue(working, now=at(5005), horizon_seconds=100) is None  # renewed 5 s ago: at work
    assert "still processing 5011 s" in jobs.overdue(working, now=at(5011), horizon_seconds=100)  # stalled since
    assert "still processing" in jobs.overdue(claim(new(), at(1)), now=at(105), horizon_seconds=100)  # no progress
