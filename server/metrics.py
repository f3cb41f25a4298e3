"""`GET /metrics`: Prometheus text format, from a registry of the App's own.

Counters and the histogram are updated as requests end; the gauges and the
embedding cache's counters are read from a `LiveState` when scraped. Each
server has its own `CollectorRegistry` (not prometheus_client's global one),
so that several servers in one process (the tests) keep apart.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import torch
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from server.budget import PixelBudget
from server.errors import CLOSE_CODES
from server.image_usage import Usage
from server.models.seam import SegmentationModel
from server.store import StoreUnavailable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# From a cached embedding's decoder pass (milliseconds) to a vit_h encoder on a CPU (a minute).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclasses.dataclass(frozen=True)
class LiveState:
    """What is true right now, read at scrape time."""

    connections: Callable[[], int]
    sessions: Callable[[], int]
    refused: Callable[[], dict[str, int]]  # connections refused, by the limit that refused them
    queue_depth: Callable[[], int]  # may raise StoreUnavailable
    model: Callable[[], SegmentationModel | None]  # None until the model is loaded
    pixel_budget: PixelBudget
    image_usage: Callable[[], Usage]  # IMAGE_DIR's files, counted as they come and go


class Metrics:
    def __init__(self, live: LiveState):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cap_requests", "Requests by how they ended: finished, error (with its code) or client_gone.",
            ["outcome", "code"], registry=self.registry,
        )
        self.seconds = Histogram(
            "cap_request_stage_seconds",
            "Seconds per finished request: the encoder pass (not when the embedding was cached), "
            "the mask decoder, and end to end (request received to result sent).",
            ["stage"], buckets=BUCKETS, registry=self.registry,
        )
        self.registry.register(_LiveCollector(live))

    def request_ended(self, outcome: str) -> None:
        """Count a conversation's end; `outcome` is `finished`, `client_gone` or an error code."""
        if outcome in CLOSE_CODES:
            self.requests.labels("error", outcome).inc()
        else:
            self.requests.labels(outcome, "").inc()

    def result_sent(self, timings: dict, cached_embedding: bool) -> None:
        """A result went out; a video result (no encoder or decoder timings of its own) counts in `total` only."""
        if not cached_embedding and "encode_ms" in timings:
            self.seconds.labels("encode").observe(timings["encode_ms"] / 1000)
        if "decode_ms" in timings:
            self.seconds.labels("decode").observe(timings["decode_ms"] / 1000)
        self.seconds.labels("total").observe(timings["total_ms"] / 1000)

    def text(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector(Collector):
    def __init__(self, live: LiveState):
        self.live = live

    def collect(self) -> Iterator[Metric]:
        live = self.live
        yield GaugeMetricFamily("cap_open_connections", "Open WebSocket connections.", value=live.connections())
        yield GaugeMetricFamily(
            "cap_pixel_budget_used_bytes", "Bytes of decoded images held from PIXEL_BUDGET_MB.",
            value=live.pixel_budget.used,
        )
        yield GaugeMetricFamily(
            "cap_pixel_budget_limit_bytes", "PIXEL_BUDGET_MB in bytes.", value=live.pixel_budget.limit
        )
        yield GaugeMetricFamily("cap_open_sessions", "Open connections that are sessions (keep_open).", value=live.sessions())
        refused = CounterMetricFamily(
            "cap_connections_refused", "Connections refused, by the limit that refused them.", labels=["limit"]
        )
        for limit, count in sorted(live.refused().items()):
            refused.add_metric([limit], count)
        yield refused
        try:
            yield GaugeMetricFamily("cap_queue_depth", "Records waiting in the store's queue.", value=live.queue_depth())
        except StoreUnavailable:
            pass  # no sample: /health says why
        usage = live.image_usage()
        yield GaugeMetricFamily("cap_image_dir_bytes", "Bytes of the files under IMAGE_DIR.", value=usage.bytes)
        yield GaugeMetricFamily("cap_image_dir_files", "Files under IMAGE_DIR.", value=usage.files)
        model = live.model()
        if model is None:
            return
        cache = model.cache
        yield CounterMetricFamily("cap_embedding_cache_hits", "Images whose embedding came from the cache.", value=cache.hits)
        yield CounterMetricFamily("cap_embedding_cache_misses", "Images that went through the encoder.", value=cache.misses)
        if model.device.type == "cuda":
            yield GaugeMetricFamily(
                "cap_gpu_memory_allocated_bytes", "GPU memory held by tensors.", value=torch.cuda.memory_allocated(model.device)
            )
            yield GaugeMetricFamily(
                "cap_gpu_memory_reserved_bytes", "GPU memory reserved by torch's caching allocator.",
                value=torch.cuda.memory_reserved(model.device),
            )
