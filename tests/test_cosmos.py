"""The Cosmos DB store against the emulator: what the shared contract suite
cannot show: item size, racing processors, faults of the database, and cost."""

import http.client
import json
import os
import random
import signal
import socket
import string
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import connect

from harness import processes
from harness.client import exchange
from harness.cosmos_emulator import KEY, new_database_name
from harness.waiting import wait_for
from server import jobs
from server.clock import utcnow
from server.store import Conflict, StoreUnavailable
from server.store.cosmos import MAX_ITEM_BYTES, CosmosStore, ItemTooLarge
from tests.conftest import cosmos_store, processor_is_waiting, ws_url


def new_record(job_id, created=None):
    return jobs.new_record(
        job_id, now=created or utcnow(), image_url="http://img/a.png", image_sha256="ab" * 32,
        width=64, height=48, boxes=[{"x": 1.0, "y": 1.0, "width": 5.0, "height": 5.0}], multimask=False,
    )


def raw_items(store: CosmosStore, container: int) -> list[dict]:
    """Every item as Cosmos DB holds it, read around the store."""
    return list(store._ready()[container].query_items("SELECT * FROM c", enable_cross_partition_query=True))


def test_a_result_over_2_mb_is_stored_in_items_under_the_limit_and_read_back_whole(cosmos_emulator):
    store = cosmos_store(cosmos_emulator)
    rng = random.Random(7)
    masks = [
        {"box": {"x": 0.0, "y": 0.0, "width": 1.0, "height": 1.0}, "score": 0.5, "area": i, "bbox": [0, 0, 1, 1],
         "segmentation": {"size": [4000, 3000], "counts": "".join(rng.choices(string.ascii_letters, k=400_000))}}
        for i in range(16)
    ]
    output = {"id": "big", "masks": masks, "model": "vit_h", "createdAt": jobs.format_time(utcnow()), "timings": {}}
    assert len(json.dumps(output)) > 3 * MAX_ITEM_BYTES

    store.put_output(output)

    items = raw_items(store, 1)
    sizes = [len(json.dumps(item).encode()) for item in items]
    assert len(items) >= 4 and max(sizes) <= MAX_ITEM_BYTES, sizes
    fetched = store.get_output("big")
    assert fetched["masks"] == masks and "maskChunks" not in fetched
    print(f"\n6.2 MB result stored as {len(items)} items, largest {max(sizes)} bytes")


def test_a_small_result_stays_one_item(cosmos_emulator):
    store = cosmos_store(cosmos_emulator)
    store.put_output({"id": "small", "masks": [], "model": "vit_b", "createdAt": "t", "timings": {}})
    assert [item["id"] for item in raw_items(store, 1)] == ["small"]


def test_the_store_refuses_to_write_an_item_over_2_mb(cosmos_emulator):
    store = cosmos_store(cosmos_emulator)
    record = {**new_record("huge"), "imageUrl": "http://img/" + "a" * MAX_ITEM_BYTES}
    with pytest.raises(ItemTooLarge):
        store.insert(record)
    assert store.get("huge") is None


def test_eight_processors_on_three_clients_claim_fifty_records_exactly_once(cosmos_emulator):
    database = new_database_name()
    stores = [cosmos_store(cosmos_emulator, database) for _ in range(3)]  # three clients, one database
    for n in range(50):
        stores[0].insert(new_record(f"job-{n:02d}"))
    claims: list[tuple[str, str]] = []
    errors = []
    lock = threading.Lock()

    def processor(name: str, store: CosmosStore):
        try:
            while True:
                claimed = None
                for candidate in store.claimable(utcnow(), 8):
                    changed = jobs.claim(candidate, now=utcnow(), server_id=name, lease_seconds=60, max_attempts=3)
                    try:
                        claimed = store.replace(changed, etag=candidate["_etag"])
                        break
                    except Conflict:
                        continue  # another processor won this one
                if claimed is None:
                    return
                with lock:
                    claims.append((claimed["id"], name))
                store.update(claimed["id"], lambda r: jobs.mark_processed(r, now=utcnow()), current=claimed)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=processor, args=(f"p{i}", stores[i % 3])) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    claimed_ids = [job_id for job_id, _ in claims]
    assert sorted(claimed_ids) == [f"job-{n:02d}" for n in range(50)]  # each exactly once
    records = list(stores[0].records())
    assert all(r["status"] == "processed" and r["attempts"] == 1 for r in records)
    print(f"\nclaims per processor: { {p: sum(1 for _, q in claims if q == p) for p in sorted({q for _, q in claims})} }")


def test_operations_per_request(cosmos_emulator, start_app, image_server, gate):
    """Count every store operation of one request, end to end, as docs/cosmos.md#what-a-request-costs lists them.

    The model is held until the client has the `status` message, so the waiting connection's reads do not
    depend on timing: the processor's claim and its result are two wake-ups, never one.
    """
    store = cosmos_store(cosmos_emulator)
    app = start_app(store=store, model=gate, poll_interval=30)
    assert wait_for(lambda: processor_is_waiting(app))  # after its first, empty claim query
    before = dict(store.operations)
    request = {"image_url": image_server.url("/rgb.png"), "boxes": [{"x": 1, "y": 1, "width": 9, "height": 9}]}
    with connect(ws_url(app), open_timeout=10) as ws:
        ws.send(json.dumps(request))
        assert [json.loads(ws.recv(timeout=60))["type"] for _ in range(2)] == ["queued", "status"]
        gate.opened.set()
        assert json.loads(ws.recv(timeout=60))["type"] == "result"
        with pytest.raises(ConnectionClosedOK):  # the server closes once the request has ended
            ws.recv(timeout=60)
    assert wait_for(lambda: processor_is_waiting(app))  # after its claim query after the job
    used = {op: count - before.get(op, 0) for op, count in store.operations.items() if count - before.get(op, 0)}
    print(f"\nCosmos DB operations for one request: {used}")
    # The count before the download, the count at admission, the claim query after the job (empty). The job's own
    # claim needs none: it was the oldest queued record, claimed by the ETag it was inserted with.
    assert used.get("query", 0) == 3
    assert used.get("create", 0) == 1 and used.get("upsert", 0) == 1 and used.get("replace", 0) == 3
    # Point reads: none, as the docs say. The connection starts from the record it inserted; the claimed and
    # the processed record, and the result, are handed over in memory by the processor that wrote them.
    assert used.get("read", 0) == 0


def test_an_unreachable_database_is_a_clear_error_not_a_hang(start_app, image_server):
    dead = CosmosStore("https://127.0.0.1:9/", KEY, database="cap", queue_container="Queue",
                       output_container="SAMOutput", verify_tls=False, timeout=1)
    with pytest.raises(StoreUnavailable):
        dead.get("x")
    app = start_app(store=dead)
    connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
    connection.request("GET", "/health")
    response = connection.getresponse()
    health = json.loads(response.read())
    assert response.status == 503 and health["store"].startswith("error: Cosmos DB")
    outcome = exchange(ws_url(app), {"image_url": image_server.url("/rgb.png"), "boxes": [{"x": 1, "y": 1, "width": 9, "height": 9}]}, timeout=60)
    assert outcome.types == ["error"] and outcome.last["code"] == "store_unavailable" and outcome.close_code == 1013
    assert app.processor.is_alive()


def health_status(app) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
    connection.request("GET", "/health")
    return connection.getresponse().status


def test_the_service_survives_a_database_restart(cosmos_emulator, start_app, image_server):
    store = cosmos_store(cosmos_emulator)
    app = start_app(store=store, poll_interval=0.2)
    request = {"image_url": image_server.url("/rgb.png"), "boxes": [{"x": 1, "y": 1, "width": 9, "height": 9}]}
    assert exchange(ws_url(app), request).types == ["queued", "status", "result"]

    cosmos_emulator.stop()
    try:
        assert wait_for(lambda: health_status(app) == 503, 60), "/health never went red"
        assert exchange(ws_url(app), request, timeout=60).last["code"] == "store_unavailable"
    finally:
        cosmos_emulator.start()  # same port, empty: the containers are gone

    assert wait_for(lambda: health_status(app) == 200, 60, interval=0.2), "/health never went green again"
    assert app.processor.is_alive()
    assert exchange(ws_url(app), request).types == ["queued", "status", "result"]
    assert [r["status"] for r in store.records()] == ["finished"]


# A test run in miniature: it starts the emulator as the session fixture does, says so, and waits to be killed.
RUN_THAT_STARTS_THE_EMULATOR = """
import time
from harness.cosmos_emulator import CosmosEmulator
emulator = CosmosEmulator().start()
print(emulator.pid, emulator.port, flush=True)
time.sleep(600)
"""


def test_the_emulator_dies_with_a_test_run_killed_with_sigkill():
    with processes.running([sys.executable, "-c", RUN_THAT_STARTS_THE_EMULATOR], cwd=processes.REPO,
                           env=processes.server_env(), stdout=subprocess.PIPE, text=True) as run:
        pid, port = map(int, run.stdout.readline().split())
        try:
            assert processes.is_running(pid)
            assert socket.create_connection(("127.0.0.1", port), timeout=5).close() is None  # it listens
            run.kill()  # kill -9: no finalizer, no atexit, no fixture teardown runs
            run.wait(10)
            assert wait_for(lambda: not processes.is_running(pid), timeout=10), "the emulator outlived its killed test run"
        finally:
            if processes.is_running(pid) and "launcher.js" in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGKILL)
