"""Rows 6 and 7: memory over 500 sequential requests, and 1,000 idle WebSocket connections."""

from __future__ import annotations

import resource
import socket
import statistics
import time
import urllib.request

from bench.rig import Sitting, percentile, request, tiny_model_loader
from harness.client import upgraded_socket
from harness.memory import rss_bytes


def memory_growth(sitting: Sitting, requests: int) -> dict:
    """Always the tiny model: 500 full-size passes would take most of an hour on a CPU."""
    app = sitting.start_app(load_model=tiny_model_loader)
    urls = [sitting.new_image()[0] for _ in range(40)]  # more distinct images than the cache holds
    samples = {}
    try:
        for n in range(1, requests + 1):
            request(app, urls[n % len(urls)], {"x": n % 300, "y": 10, "width": 100, "height": 100})
            if n in (50, requests):
                samples[n] = rss_bytes()
    finally:
        app.stop()
    return {"requests": requests, "rss_after_50_mb": samples[50] / 2**20,
            "rss_after_last_mb": samples[requests] / 2**20, "ratio": samples[requests] / samples[50]}


def ping_ms(port: int) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=10) as response:
        assert response.read() == b"pong"
    return (time.perf_counter() - started) * 1000


def idle_connections(sitting: Sitting, count: int) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * count + 256)), hard))
    app = sitting.start_app(request_timeout=600, max_connections=count + 64, max_connections_per_client=0)
    held: list[socket.socket] = []
    try:
        for _ in range(20):
            ping_ms(app.port)
        before = rss_bytes()
        for _ in range(count):
            held.append(upgraded_socket(app.port))
        time.sleep(1.0)
        pings = [ping_ms(app.port) for _ in range(200)]
        after = rss_bytes()
    finally:
        for sock in held:
            sock.close()
        app.stop()
    return {"connections": count, "extra_rss_per_connection_kb": (after - before) / count / 1024,
            "ping_p50_ms": statistics.median(pings), "ping_p99_ms": percentile(pings, 99),
            "note": "client sockets live in the same process; their RSS is counted too (an upper bound)"}
