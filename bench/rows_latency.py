"""Rows 1 to 5: the raw model, one client at a time (SQLite and the Cosmos DB emulator), a cache hit,
16 concurrent clients, and the time from insert to claim."""

from __future__ import annotations

import contextlib
import statistics
from typing import Iterator

from bench.burst import burst
from bench.rig import BOX, Sitting, percentile, request
from server import jobs
from server.main import App


def one_at_a_time(sitting: Sitting, app: App, store_name: str) -> dict:
    """Alternate raw model and server on the same fresh image; then the same image, a new box."""
    raw, e2e, hit, queue, added, download, rle = [], [], [], [], [], [], []
    for run in range(sitting.runs + 1):  # run 0 warms both sides and is not counted
        url, pixels = sitting.new_image()
        raw_ms = sitting.raw_ms(pixels, BOX)
        e2e_ms, result = request(app, url)
        hit_ms, again = request(app, url, {"x": 20, "y": 30, "width": 150, "height": 100})
        assert not result["cached_embedding"] and again["cached_embedding"]
        if run:
            raw.append(raw_ms)
            e2e.append(e2e_ms)
            hit.append(hit_ms)
            queue.append(result["timings"]["queue_ms"])
            added.append(e2e_ms - result["timings"]["encode_ms"] - result["timings"]["decode_ms"])
            download.append(result["timings"]["download_ms"])
            rle.append(result["timings"]["rle_ms"])
    overhead = [s - r for s, r in zip(e2e, raw)]
    return {
        "store": store_name, "runs": sitting.runs,
        "raw_ms": raw, "end_to_end_ms": e2e, "cache_hit_ms": hit, "insert_to_claim_ms": queue,
        "raw_p50_ms": statistics.median(raw), "end_to_end_p50_ms": statistics.median(e2e),
        "ratio": statistics.median(e2e) / statistics.median(raw),
        "overhead_p50_ms": statistics.median(overhead), "overhead_p99_ms": percentile(overhead, 99),
        # The same request's end to end minus its own encoder and decoder time: what CAP adds, without
        # the run-to-run spread of the encoder (±100 ms on a shared CPU) that the paired difference carries.
        "added_p50_ms": statistics.median(added), "added_p99_ms": percentile(added, 99),
        "download_p50_ms": statistics.median(download), "rle_p50_ms": statistics.median(rle),
        "cache_hit_p50_ms": statistics.median(hit),
        "cache_hit_ratio": statistics.median(hit) / statistics.median(e2e),
        "insert_to_claim_p50_ms": statistics.median(queue), "insert_to_claim_p99_ms": percentile(queue, 99),
    }


@contextlib.contextmanager
def cosmos_app(sitting: Sitting) -> Iterator[App | None]:
    """A CAP server on the Cosmos DB emulator, stopped with the emulator afterwards; None if the emulator cannot start."""
    import urllib3

    from server.store.cosmos import CosmosStore
    from harness.cosmos_emulator import KEY, CosmosEmulator

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the emulator's self-signed certificate

    try:
        emulator = CosmosEmulator().start()
    except Exception as exc:  # npm ci not run, or node missing
        print(f"skipping the Cosmos DB emulator: {exc}")
        yield None
        return
    try:
        store = CosmosStore(emulator.endpoint, KEY, database="bench", queue_container="Queue",
                            output_container="SAMOutput", verify_tls=False, timeout=10)
        app = sitting.start_app(store=store, poll_interval=1.0)
        try:
            yield app
        finally:
            app.stop()
    finally:
        emulator.stop()


def cosmos_one_at_a_time(sitting: Sitting) -> dict | None:
    with cosmos_app(sitting) as app:
        return None if app is None else one_at_a_time(sitting, app, "cosmos-emulator")


def concurrent(sitting: Sitting, clients: int) -> dict:
    """A burst of distinct images against the raw model on the same images, just before it."""
    app = sitting.start_app(max_queue=4 * clients)
    try:
        images_ = [sitting.new_image() for _ in range(clients)]
        raw_seconds = sum(sitting.raw_ms(pixels, BOX) for _, pixels in images_) / 1000
        latencies: list[float] = [0.0] * clients

        def client(index: int) -> None:
            latencies[index] = request(app, images_[index][0])[0]

        elapsed = burst(client, clients)
        gaps = processor_gaps(app)
    finally:
        app.stop()
    achieved, limit = clients / elapsed, clients / raw_seconds
    return {"clients": clients, "seconds": elapsed, "raw_seconds": raw_seconds, "images_per_s": achieved,
            "model_limit_images_per_s": limit, "ratio": achieved / limit,
            "latency_p50_ms": statistics.median(latencies), "latency_p99_ms": percentile(latencies, 99), **gaps}


def processor_gaps(app: App) -> dict:
    """From the records of a busy run: what writing a result costs, and the idle time between jobs.

    write: `processed` − `processing` − encoder − decoder (RLE, the SAMOutput
    write, the record update). gap: the next record's `processing` − this
    one's `processed` (waking, the claim query, the claim write).
    """
    records = sorted(app.store.records(), key=lambda r: r["processing"])
    stamp = lambda record, field: jobs.parse_time(record[field]).timestamp() * 1000  # noqa: E731
    writes, gaps = [], []
    for record, following in zip(records, records[1:] + [None]):
        timings = app.store.get_output(record["id"])["timings"]
        spent = stamp(record, "processed") - stamp(record, "processing")
        writes.append(spent - timings["encode_ms"] - timings["decode_ms"])
        if following is not None:
            gaps.append(stamp(following, "processing") - stamp(record, "processed"))
    return {"write_result_p50_ms": statistics.median(writes), "write_result_max_ms": max(writes),
            "between_jobs_p50_ms": statistics.median(gaps), "between_jobs_max_ms": max(gaps)}
