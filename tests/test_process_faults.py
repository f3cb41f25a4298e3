"""A real `python -m server` process, stopped by SIGTERM or killed by SIGKILL, on SQLite."""

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from harness import processes
from harness.client import exchange
from harness.processes import REPO, server_env
from harness.replicas import Replica
from harness.waiting import wait_for
from server.main import STOP_GRACE_SECONDS
from server.store.sqlite import SQLiteStore

pytestmark = pytest.mark.slow  # real server processes, killed

TERMINAL = {"finished", "interrupted", "failed"}


def start_clients(server: Replica, image_server, count: int):
    outcomes = [None] * count

    def client(i):
        box = {"x": i, "y": i, "width": 30, "height": 20 + i}
        outcomes[i] = exchange(server.url, {"image_url": image_server.url("/photo.jpg"), "boxes": [box]}, timeout=60)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    return threads, outcomes


def records(path):
    return list(SQLiteStore(path).records())


@pytest.mark.parametrize("drain_seconds, everyone_served", [(0.5, False), (30, True)])
def test_sigterm_under_load_drains_then_exits_zero(
    tmp_path, tiny_checkpoint, image_server, start_replica, drain_seconds, everyone_served
):
    db = tmp_path / "server" / "cap.sqlite3"
    server = start_replica(tmp_path / "server", sam_checkpoint=tiny_checkpoint, cap_test_segment_delay=0.3,
                     drain_seconds=drain_seconds, poll_interval=0.2)
    server.wait_healthy()
    threads, outcomes = start_clients(server, image_server, 10)
    assert wait_for(lambda: len(records(db)) == 10, 30), "the 10 requests were never all stored"

    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0
    for thread in threads:
        thread.join(30)

    results = [o for o in outcomes if o.types == ["queued", "status", "result"]]
    told = [o for o in outcomes if o.last["type"] == "error" and o.last["code"] == "shutting_down"]
    assert len(results) + len(told) == 10, [o.messages for o in outcomes]
    assert all(o.close_code == 1001 for o in told)
    final = records(db)
    assert all(r["status"] in TERMINAL for r in final)
    assert sum(r["status"] == "finished" for r in final) == len(results)
    if everyone_served:
        assert len(results) == 10
    else:
        assert len(told) >= 1  # 10 jobs of 0.3 s cannot all finish in a 0.5 s drain
    print(f"\nSIGTERM with DRAIN_SECONDS={drain_seconds}: {len(results)} results, {len(told)} shutting_down, exit 0")


def test_kill_9_mid_run_then_restart_ends_every_record(tmp_path, tiny_checkpoint, image_server, start_replica):
    folder = tmp_path / "server"
    db = folder / "cap.sqlite3"
    settings = dict(sam_checkpoint=tiny_checkpoint, cap_test_segment_delay=0.1, job_timeout=4, lease_seconds=1,
                    poll_interval=0.2)
    first = start_replica(folder, **settings)
    first.wait_healthy()
    threads, _ = start_clients(first, image_server, 30)
    assert wait_for(lambda: (lambda rs: len(rs) == 30 and sum(r["status"] == "finished" for r in rs) >= 3)(records(db)),
                    60), "30 stored requests with 3 finished never happened"
    first.kill()
    killed = records(db)
    for thread in threads:
        thread.join(30)

    second = start_replica(folder, **settings)  # a restart on the same SQLite file
    second.wait_healthy()
    assert wait_for(lambda: all(r["status"] in TERMINAL for r in records(db)), 60), "records left non-terminal after restart"
    assert second.stop() == 0

    final = {r["id"]: r for r in records(db)}
    assert len(final) == 30
    store = SQLiteStore(db)
    finished = [r for r in final.values() if r["status"] == "finished"]
    assert all(store.get_output(r["id"]) is not None for r in finished)  # no finished request lost its result
    assert {r["id"] for r in killed if r["status"] == "finished"} <= {r["id"] for r in finished}
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    audit = subprocess.run([sys.executable, "-m", "server", "audit"], cwd=REPO, capture_output=True, text=True,
                           env=server_env(SQLITE_PATH=db), timeout=60)
    assert audit.returncode == 0, audit.stdout
    at_kill = {s: sum(r["status"] == s for r in killed) for s in {r["status"] for r in killed}}
    after = {s: sum(r["status"] == s for r in final.values()) for s in {r["status"] for r in final.values()}}
    print(f"\nkill -9 with {at_kill}; after restart: {after}; 30/30 terminal, audit clean, integrity ok")


def test_a_restart_after_kill_9_interrupts_the_orphans_and_answers_a_new_client_at_once(
    tmp_path, tiny_checkpoint, image_server, start_replica
):
    """Four requests in flight die with their server; the restarted one spends no model time on them."""
    folder = tmp_path / "server"
    db = folder / "cap.sqlite3"
    first = start_replica(folder, sam_checkpoint=tiny_checkpoint, cap_test_segment_delay=60, poll_interval=0.2)
    first.wait_healthy()
    threads, _ = start_clients(first, image_server, 4)
    assert wait_for(lambda: (lambda rs: len(rs) == 4 and any(r["status"] == "processing" for r in rs))(records(db)),
                    30), "4 stored requests, one being processed, never happened"
    first.kill()
    for thread in threads:
        thread.join(30)
    orphans = {r["id"] for r in records(db)}

    delay = 5  # per request, on the restarted server: 4 orphans would cost 20 s before the new client
    second = start_replica(folder, sam_checkpoint=tiny_checkpoint, cap_test_segment_delay=delay, poll_interval=0.2)
    second.wait_healthy()
    started = time.monotonic()
    box = {"x": 1, "y": 1, "width": 9, "height": 9}
    outcome = exchange(second.url, {"image_url": image_server.url("/rgb.png"), "boxes": [box]}, timeout=60)
    waited = time.monotonic() - started
    assert outcome.types == ["queued", "status", "result"], outcome.messages

    store = SQLiteStore(db)
    old = [r for r in records(db) if r["id"] in orphans]
    assert [r["status"] for r in old] == ["interrupted"] * 4
    assert all(r["error"]["code"] == "server_restarted" for r in old)
    assert all(store.get_output(r["id"]) is None for r in old)  # the model never ran for them
    assert waited < 3 * delay, f"the new client waited {waited:.1f} s behind the orphans"
    assert second.stop() == 0
    audit = subprocess.run([sys.executable, "-m", "server", "audit"], cwd=REPO, capture_output=True, text=True,
                           env=server_env(SQLITE_PATH=db), timeout=60)
    assert audit.returncode == 0, audit.stdout
    print(f"\nafter kill -9 with 4 in flight: the orphans interrupted at start, a new client answered in {waited:.1f} s")


def test_sigterm_while_the_model_is_inside_torch_exits_zero_within_the_bound(
    tmp_path, tiny_checkpoint, image_server, start_replica
):
    """The encoder still runs when the stop's grace ends: the process must not abort (exit 134) on its way out."""
    db = tmp_path / "server" / "cap.sqlite3"
    drain_seconds = 1
    server = start_replica(tmp_path / "server", sam_checkpoint=tiny_checkpoint, cap_test_segment_torch_seconds=120,
                           drain_seconds=drain_seconds, torch_threads=1, poll_interval=0.2)
    server.wait_healthy()
    threads, outcomes = start_clients(server, image_server, 1)
    assert wait_for(lambda: [r["status"] for r in records(db)] == ["processing"], 30), "the request was never claimed"
    time.sleep(1)  # well inside the model's torch calls now

    sigterm_at = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    status = server.process.wait(drain_seconds + STOP_GRACE_SECONDS + 30)
    took = time.monotonic() - sigterm_at
    threads[0].join(30)
    assert status == 0, f"exit status {status}:\n{server.log}"
    assert took < drain_seconds + STOP_GRACE_SECONDS, f"the stop took {took:.1f} s"  # the documented bound
    assert outcomes[0].last["code"] == "shutting_down"
    assert [r["status"] for r in records(db)] == ["interrupted"]
    print(f"\nSIGTERM with the model inside torch: exit 0 after {took:.1f} s (bound {drain_seconds + STOP_GRACE_SECONDS:.0f} s)")


# A test run in miniature: it starts a server as a test does (harness.processes.running), says its pid, waits.
RUN_THAT_STARTS_A_SERVER = """
import sys, time
from harness import processes
with processes.running([sys.executable, "-c", "import time; time.sleep(600)"]) as server:
    print(server.pid, flush=True)
    time.sleep(600)
"""


def test_a_process_a_test_started_dies_with_a_test_run_killed_with_sigkill():
    with processes.running([sys.executable, "-c", RUN_THAT_STARTS_A_SERVER], cwd=processes.REPO,
                           env=processes.server_env(), stdout=subprocess.PIPE, text=True) as run:
        pid = int(run.stdout.readline())
        try:
            assert processes.is_running(pid)
            run.kill()  # kill -9: no finalizer, no context manager's exit runs
            run.wait(10)
            assert wait_for(lambda: not processes.is_running(pid), timeout=10), "the started process outlived its killed test run"
        finally:
            if processes.is_running(pid):
                os.kill(pid, signal.SIGKILL)
