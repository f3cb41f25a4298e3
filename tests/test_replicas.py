"""Several `python -m server` processes sharing one Cosmos DB database."""

import subprocess
import sys
import threading
import time

import pytest

from harness.client import exchange
from harness.cosmos_emulator import new_database_name
from harness.cosmos_emulator import KEY
from harness.processes import REPO, server_env
from harness.replicas import Replica
from harness.waiting import wait_for
from tests.conftest import cosmos_store


@pytest.fixture
def start_replicas(tmp_path, cosmos_emulator, tiny_checkpoint, start_replica):
    def start(count: int, database: str, **settings) -> list[Replica]:
        replicas = [
            start_replica(
                tmp_path / f"replica-{i}",
                cosmos_endpoint=cosmos_emulator.endpoint, cosmos_key=KEY, cosmos_verify_tls="false",
                cosmos_database=database, sam_checkpoint=tiny_checkpoint, **settings,
            )
            for i in range(count)
        ]
        for replica in replicas:
            replica.wait_healthy()
        return replicas

    return start


def run_clients(replicas, image_server, count):
    """`count` clients, client i on replica i % len(replicas), each with its own box."""
    outcomes = [None] * count

    def client(i):
        box = {"x": i % 50, "y": i % 40, "width": 20, "height": 10 + i}
        outcomes[i] = exchange(replicas[i % len(replicas)].url, {"image_url": image_server.url("/photo.jpg"), "boxes": [box]})

    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    return outcomes


def test_three_replicas_serve_sixty_clients_each_record_processed_once(start_replicas, cosmos_emulator, image_server):
    database = new_database_name()
    replicas = start_replicas(3, database, poll_interval=0.2)
    outcomes = run_clients(replicas, image_server, 60)

    store = cosmos_store(cosmos_emulator, database)
    records = {r["id"]: r for r in store.records()}
    crossed = 0
    for i, outcome in enumerate(outcomes):
        assert outcome.types == ["queued", "status", "result"], (i, outcome.messages)
        result = outcome.last
        assert result["masks"][0]["box"]["height"] == 10 + i  # its own result, not another client's
        assert result["masks"][0]["segmentation"]["size"] == [240, 320]
        record = records[result["id"]]
        assert record["status"] == "finished"
        assert record["attempts"] == 1  # claimed once: processed exactly once
        if record["serverId"] != replicas[i % 3].server_id:
            crossed += 1
    assert len(records) == 60
    processed_by = {r["serverId"] for r in records.values()}
    print(f"\nresults delivered across replicas: {crossed} of 60; processors used: {len(processed_by)}")
    assert crossed >= 1


def audit(database, endpoint) -> subprocess.CompletedProcess:
    env = server_env(COSMOS_ENDPOINT=endpoint, COSMOS_KEY=KEY, COSMOS_VERIFY_TLS="false", COSMOS_DATABASE=database)
    return subprocess.run([sys.executable, "-m", "server", "audit"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_replica_killed_mid_run_leaves_no_record_in_limbo(start_replicas, cosmos_emulator, image_server):
    database = new_database_name()
    job_timeout = 12
    replicas = start_replicas(
        3, database, poll_interval=0.2, job_timeout=job_timeout, lease_seconds=1.5, cap_test_segment_delay=0.3
    )
    store = cosmos_store(cosmos_emulator, database)
    victim = replicas[0]
    victim_id = victim.server_id

    outcomes = []
    clients = threading.Thread(target=lambda: outcomes.extend(run_clients(replicas, image_server, 24)))
    clients.start()
    # Kill once every request is stored (so the victim's own clients have
    # records that nobody will deliver) and the victim holds a claim.
    def victim_holds_a_claim_on_24_records() -> bool:
        records = list(store.records())
        return len(records) == 24 and any(r["status"] == "processing" and r["serverId"] == victim_id for r in records)

    assert wait_for(victim_holds_a_claim_on_24_records, 60), "never saw 24 records with a claim by the victim"
    victim.kill()
    killed_at = time.monotonic()
    clients.join(180)

    # Clients of the live replicas all get their results, even for records the victim had claimed.
    for i, outcome in enumerate(outcomes):
        if i % 3:
            assert outcome.types == ["queued", "status", "result"], (i, outcome.messages)

    # Within JOB_TIMEOUT (plus a sweep period), nothing is left non-terminal.
    def open_records() -> list[dict]:
        return [r for r in store.records() if r["status"] not in ("finished", "interrupted", "failed")]

    limit = killed_at + job_timeout * 2 + 10 - time.monotonic()
    assert wait_for(lambda: not open_records(), limit, interval=0.5), f"records left in limbo: {open_records()}"
    records = list(store.records())
    statuses = {s: sum(1 for r in records if r["status"] == s) for s in {r["status"] for r in records}}
    reclaimed = sum(1 for r in records if r["attempts"] > 1)
    print(f"\nafter kill -9: {statuses}, reclaimed after the lease expired: {reclaimed}")
    assert reclaimed >= 1  # the victim held a claim when it died; another replica took it over
    assert statuses.get("interrupted", 0) >= 1  # the victim's own clients' records, ended by the sweep

    done = audit(database, cosmos_emulator.endpoint)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 break the order invariant" in done.stdout
