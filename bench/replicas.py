"""Throughput of 3 replicas against 1, side by side in one run, tiny model.

    .venv/bin/python -m bench.replicas [--requests 60] [--rounds 2] [--threads-per-replica N]

Starts the Cosmos DB emulator and real `python -m server` processes with the
tiny SAM (as the replica tests do), then alternates rounds: all requests sent
at once to 1 replica, then spread over 3 replicas sharing one database.
Prints requests per second for each and their ratio as JSON.

--threads-per-replica sets TORCH_THREADS for every replica. Without it each
process uses torch's default (one thread per core), and replicas sharing a
machine oversubscribe its cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from bench.burst import burst
from harness import image_files
from harness.client import exchange
from harness.cosmos_emulator import KEY, CosmosEmulator, new_database_name
from harness.http_server import ImageHTTPServer
from harness.replicas import Replica
from harness.tiny_sam import write_tiny_checkpoint


def throughput(replicas: list[Replica], url: str, requests: int) -> float:
    failures = []

    def client(i: int) -> None:
        outcome = exchange(replicas[i % len(replicas)].url, {"image_url": url, "boxes": [{"x": 5, "y": 5, "width": 100, "height": 80}]})
        if outcome.types != ["queued", "status", "result"]:
            failures.append(outcome.messages)

    elapsed = burst(client, requests)
    assert not failures, failures[:3]
    return requests / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads-per-replica", type=int, default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cap-bench-replicas-"))
    checkpoint = work / "tiny.pth"
    write_tiny_checkpoint(checkpoint)
    emulator = CosmosEmulator().start()
    rates: dict[int, list[float]] = {1: [], 3: []}
    threads = {"torch_threads": args.threads_per_replica} if args.threads_per_replica else {}
    try:
        with ImageHTTPServer() as images:
            images.add("/photo.jpg", image_files.jpeg_rgb(640, 480), content_type="image/jpeg")
            for count in (1, 3):
                database = new_database_name()
                replicas = [
                    Replica(work / f"r{count}-{i}", cosmos_endpoint=emulator.endpoint, cosmos_key=KEY,
                            cosmos_verify_tls="false", cosmos_database=database, sam_checkpoint=checkpoint,
                            poll_interval=0.2, log_level="WARNING", **threads)
                    for i in range(count)
                ]
                for replica in replicas:
                    replica.wait_healthy()
                rates[count].append(throughput(replicas, images.url("/photo.jpg"), 8))  # warm-up, not counted
                rates[count].clear()
                for _ in range(args.rounds):
                    rates[count].append(throughput(replicas, images.url("/photo.jpg"), args.requests))
                for replica in replicas:
                    replica.stop()
    finally:
        emulator.stop()
    one, three = statistics.median(rates[1]), statistics.median(rates[3])
    print(json.dumps({
        "requests_per_round": args.requests, "rounds": args.rounds, "cores": torch.get_num_threads(),
        "threads_per_replica": args.threads_per_replica or "torch default",
        "one_replica_rps": round(one, 2), "three_replicas_rps": round(three, 2), "ratio": round(three / one, 3),
        "rounds_rps": {str(k): [round(v, 2) for v in vs] for k, vs in rates.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
