"""server.image_store, image_layout and image_usage on real files and a real SQLite store, without a server:
holds and releases, the free-space floor, the sweep's bounded steps, and the byte count kept exact while
files come and go during the first pass. (Through a real server: tests/test_image_dir.py.)"""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

import pytest

from server import image_layout, image_store, jobs
from server.clock import utcnow
from server.errors import ClientError
from server.image_store import RELEASE_GRACE_SECONDS, ImageStore
from server.store.sqlite import SQLiteStore
from tests.conftest import make_settings


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def on_disk(folder: Path) -> tuple[int, int]:
    sizes = [(Path(parent) / name).stat().st_size for parent, _, names in os.walk(folder) for name in names]
    return sum(sizes), len(sizes)


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def settled(images: ImageStore) -> None:
    """As the sweeper would, once RELEASE_GRACE_SECONDS have passed."""
    images.sweep(time.monotonic() + RELEASE_GRACE_SECONDS + 0.1)


def run_pass(images: ImageStore) -> None:
    passes = images.passes
    while images.passes == passes:
        images.sweep(time.monotonic() + 10**6)


@pytest.fixture
def store(tmp_path):
    return SQLiteStore(tmp_path / "cap.sqlite3")


@pytest.fixture
def make(tmp_path, store):
    return lambda **settings: ImageStore(make_settings(tmp_path, **settings), store)


def insert(store, data: bytes, status: str) -> None:
    record = jobs.new_record(
        f"job-{random.random()}", now=utcnow(), image_url="data:", image_sha256=sha(data), width=1, height=1,
        boxes=[], multimask=False,
    )
    if status != jobs.QUEUED:
        record = jobs.claim(record, now=utcnow(), server_id="s", lease_seconds=60, max_attempts=3)
    if status == jobs.FINISHED:
        record = jobs.mark_finished(jobs.mark_processed(record, now=utcnow()), now=utcnow())
    if status == jobs.INTERRUPTED:
        record = jobs.interrupt(record, now=utcnow())
    store.insert(record)


# --- layout --------------------------------------------------------------------------------------------


def test_an_image_is_found_by_its_hash_and_only_a_hash_names_a_file(tmp_path):
    digest = sha(b"x")
    assert image_layout.find(tmp_path, digest) is None and image_layout.read(tmp_path, digest) is None
    pending = image_layout.pending_path(tmp_path, digest)
    pending.parent.mkdir()
    pending.write_bytes(b"x")
    assert image_layout.find(tmp_path, digest) == pending and image_layout.read(tmp_path, digest) == b"x"
    assert image_layout.kept_path(tmp_path, digest) == tmp_path / digest[:2] / digest
    for bad in ("../../etc/passwd", digest.upper(), digest[:63], ""):
        with pytest.raises(ValueError):
            image_layout.find(tmp_path, bad)


def test_the_floor_counts_the_incoming_file(tmp_path):
    free_mb = image_layout.free_bytes(tmp_path) // 2**20
    assert image_layout.floor_problem(tmp_path, 0) is None
    assert image_layout.floor_problem(tmp_path, free_mb - 100) is None
    assert image_layout.floor_problem(tmp_path, free_mb - 100, incoming=200 * 2**20) is not None
    assert "under MIN_FREE_DISK_MB" in image_layout.floor_problem(tmp_path, free_mb + 100)


# --- holds, releases, promotion ----------------------------------------------------------------------


def test_the_same_bytes_are_written_once_and_their_file_goes_when_the_last_hold_is_released(make):
    images = make()
    run_pass(images)  # from the end of the first pass, every file is counted as it comes and goes
    first, second = images.hold(sha(b"img"), b"img", None), images.hold(sha(b"img"), b"img", None)
    pending = image_layout.pending_path(images.root, sha(b"img"))
    assert os.listdir(pending.parent) == [pending.name]
    assert (images.usage.bytes, images.usage.files) == (3, 1)
    first.release()
    settled(images)
    assert pending.exists()  # still held
    second.release()
    second.release()  # a second release is a no-op
    images.sweep(time.monotonic())
    assert pending.exists()  # the grace: a request by hash may follow at once
    settled(images)
    assert not pending.exists() and (images.usage.bytes, images.usage.files) == (0, 0)


def test_a_released_file_stays_while_a_live_record_names_it_and_is_kept_once_one_was_processed(make, store):
    images = make()
    images.hold(sha(b"live"), b"live", None).release()
    insert(store, b"live", jobs.QUEUED)  # another process's request, say
    images.hold(sha(b"done"), b"done", None).release()
    insert(store, b"done", jobs.FINISHED)  # processed by another replica
    images.hold(sha(b"gone"), b"gone", None).release()
    insert(store, b"gone", jobs.INTERRUPTED)
    settled(images)
    assert image_layout.find(images.root, sha(b"live")) == image_layout.pending_path(images.root, sha(b"live"))
    assert image_layout.find(images.root, sha(b"done")) == image_layout.kept_path(images.root, sha(b"done"))
    assert image_layout.find(images.root, sha(b"gone")) is None


def test_promotion_keeps_the_file_and_a_later_hold_starts_its_retention_again(make):
    images = make()
    run_pass(images)
    hold = images.hold(sha(b"img"), b"img", None)
    images.promote(sha(b"img"))
    kept = image_layout.kept_path(images.root, sha(b"img"))
    hold.release()
    settled(images)
    assert kept.read_bytes() == b"img" and not image_layout.pending_path(images.root, sha(b"img")).exists()
    age(kept, 3600)
    images.hold(sha(b"img"), None, None).release()  # a request by hash
    assert time.time() - kept.stat().st_mtime < 60
    images.hold(sha(b"img"), b"img", None).release()  # the same bytes again: nothing written
    assert (images.usage.bytes, images.usage.files) == (3, 1)


def test_a_new_file_below_the_floor_is_refused_and_leaves_nothing(make, tmp_path):
    images = make(min_free_disk_mb=image_layout.free_bytes(tmp_path) // 2**20 + 10_000)
    with pytest.raises(ClientError) as refused:
        images.hold(sha(b"img"), b"img", None)
    assert refused.value.code == "store_unavailable" and "MIN_FREE_DISK_MB" in refused.value.message
    assert on_disk(images.root) == (0, 0) and images.usage.files == 0


# --- the sweep -----------------------------------------------------------------------------------------


def test_the_sweep_deletes_what_is_past_its_time_and_nothing_else(make):
    images = make(image_retention_hours=1, job_timeout=600)
    root = images.root
    hours_old, fresh, held = (image_layout.kept_path(root, sha(n)) for n in (b"1", b"2", b"3"))
    abandoned = image_layout.pending_path(root, sha(b"4"))
    for path in (hours_old, fresh, held, abandoned):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    images.hold(sha(b"3"), None, None)  # a request in flight: its file stays, however old
    for path in (hours_old, held):
        age(path, 2 * 3600)
    age(abandoned, 601)  # no request lives past JOB_TIMEOUT
    stray_write = root / "pending" / f".{sha(b'5')}.abc.tmp"
    stray_write.write_bytes(b"x")
    age(stray_write, 601)
    others = [root / "README", root / "pending" / "not-a-hash", root / "ab" / ".keep"]
    for path in others:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
        age(path, 10 * 3600)
    run_pass(images)
    left = sorted(path.name for path in root.rglob("*") if path.is_file())
    assert left == sorted([fresh.name, held.name, *(path.name for path in others)])


def test_retention_zero_keeps_images_for_good(make):
    images = make(image_retention_hours=0)
    kept = image_layout.kept_path(images.root, sha(b"x"))
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"x")
    age(kept, 10**8)
    run_pass(images)
    assert kept.exists()


def test_each_step_is_bounded_and_the_first_pass_counts_what_was_there(make, monkeypatch):
    monkeypatch.setattr(image_store, "STEP_ENTRIES", 100)
    images = make()
    shard = images.root / "ab"
    shard.mkdir(parents=True)
    for n in range(1000):
        (shard / ("ab" + f"{n:062x}")).write_bytes(b"12345")
    steps = 0
    while images.passes == 0:
        images.sweep(time.monotonic() + 10**6)
        steps += 1
        assert images.usage.files <= 100 * steps  # one step visits at most STEP_ENTRIES entries
    assert steps >= 10 and (images.usage.bytes, images.usage.files) == on_disk(images.root) == (5000, 1000)


def test_the_count_stays_exact_while_files_come_and_go_during_the_first_pass(make, store, monkeypatch):
    """Files written, promoted, released and deleted in folders the pass has left behind, is in, or has yet to reach."""
    monkeypatch.setattr(image_store, "STEP_ENTRIES", 3)
    images = make()
    randomly = random.Random(7)
    blobs = [bytes(randomly.randrange(256) for _ in range(randomly.randrange(1, 50))) for _ in range(300)]
    for blob in blobs[:100]:  # there before the server started: kept, pending, and an earlier version's file
        path = randomly.choice([image_layout.kept_path, image_layout.pending_path])(images.root, sha(blob))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    (images.root / "0a6b4c1e-8a0e-4f6f-9d3b-2b8f1f0b8c11.png").write_bytes(blobs[0] + b"old")
    holds = []
    while images.passes == 0:
        images.sweep(time.monotonic() + 10**6)
        for _ in range(randomly.randrange(3)):
            blob = randomly.choice(blobs)
            action = randomly.randrange(3)
            if action == 0:
                holds.append(images.hold(sha(blob), blob, None))
            elif action == 1:
                images.promote(sha(blob))
            elif holds:
                holds.pop(randomly.randrange(len(holds))).release()
    assert (images.usage.bytes, images.usage.files) == on_disk(images.root)
    for hold in holds:
        hold.release()
    settled(images)
    assert (images.usage.bytes, images.usage.files) == on_disk(images.root)
