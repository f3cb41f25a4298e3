"""`GET /metrics` on a real running server: Prometheus text that moves with real requests."""

import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.client import exchange
from tests.conftest import ws_url

BOX = {"x": 4, "y": 4, "width": 30, "height": 20}


def scrape(app, headers: dict | None = None) -> dict[tuple[str, tuple], float]:
    """Every sample, by name and sorted labels."""
    request = urllib.request.Request(f"http://127.0.0.1:{app.port}/metrics", headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def eventually(app, check, timeout: float = 10) -> dict:
    """Scrape until `check(samples)` holds: a conversation counts itself just after it closes."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(app)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.05)


FINISHED = ("cap_requests_total", (("code", ""), ("outcome", "finished")))
NOT_FOUND = ("cap_requests_total", (("code", "image_download_failed"), ("outcome", "error")))


def test_counters_and_histograms_move_with_real_requests_and_errors(start_app, image_server):
    app = start_app()
    before = scrape(app)
    assert FINISHED not in before and before[("cap_queue_depth", ())] == 0
    assert before[("cap_embedding_cache_hits_total", ())] == 0

    request = {"image_url": image_server.url("/photo.jpg"), "boxes": [BOX]}
    assert exchange(ws_url(app), request).types[-1] == "result"
    assert exchange(ws_url(app), request).last["cached_embedding"] is True
    assert exchange(ws_url(app), {**request, "image_url": image_server.url("/missing.png")}).last["code"] == "image_download_failed"

    after = eventually(app, lambda s: s.get(FINISHED) == 2 and s.get(NOT_FOUND) == 1)
    assert after[FINISHED] == 2 and after[NOT_FOUND] == 1
    # The first request misses the embedding cache; the second, same image bytes, hits it.
    assert after[("cap_embedding_cache_hits_total", ())] == 1
    assert after[("cap_embedding_cache_misses_total", ())] - before[("cap_embedding_cache_misses_total", ())] == 1
    count = lambda stage: after[("cap_request_stage_seconds_count", (("stage", stage),))]  # noqa: E731
    assert (count("encode"), count("decode"), count("total")) == (1, 2, 2)
    assert after[("cap_request_stage_seconds_sum", (("stage", "total"),))] > 0
    assert after[("cap_open_connections", ())] == 0
    assert ("cap_gpu_memory_allocated_bytes", ()) not in after  # the tiny model runs on the CPU


def test_open_connections_and_queue_depth_are_read_live(start_app, image_server, gate):
    from websockets.sync.client import connect

    app = start_app(model=gate)
    request = '{"image_url": "%s", "boxes": [{"x": 4, "y": 4, "width": 30, "height": 20}]}'
    try:
        with connect(ws_url(app)) as first, connect(ws_url(app)) as second:
            first.send(request % image_server.url("/photo.jpg"))
            assert gate.entered.wait(30)  # the first is being processed
            second.send(request % image_server.url("/rgb.png"))
            assert '"queued"' in second.recv(timeout=30)
            samples = scrape(app)
            assert samples[("cap_open_connections", ())] == 2
            assert samples[("cap_queue_depth", ())] == 1
    finally:
        gate.opened.set()


def test_the_pixel_budget_in_use_and_its_limit_are_read_live(start_app, image_server, gate):
    app = start_app(model=gate, pixel_budget_mb=64)
    limit = ("cap_pixel_budget_limit_bytes", ())
    used = ("cap_pixel_budget_used_bytes", ())
    assert scrape(app)[used] == 0 and scrape(app)[limit] == 64 * 2**20
    client = threading.Thread(
        target=exchange, args=(ws_url(app), {"image_url": image_server.url("/photo.jpg"), "boxes": [BOX]})
    )
    client.start()
    try:
        assert gate.entered.wait(30)  # its decoded pixels are held until the encoder has run
        assert scrape(app)[used] == app.budget.used == 320 * 240 * 3
    finally:
        gate.opened.set()
        client.join(30)
    assert eventually(app, lambda s: s[used] == 0)[used] == 0


SESSIONS = ("cap_open_sessions", ())
PER_CLIENT_REFUSED = ("cap_connections_refused_total", (("limit", "max_connections_per_client"),))


def test_open_sessions_and_refused_connections_are_counted(start_app):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    app = start_app(max_connections_per_client=2)
    with connect(ws_url(app)) as session, connect(ws_url(app)):
        session.send('{"keep_open": true}')  # a session from here on, though its request is refused
        assert '"invalid_request"' in session.recv(timeout=10)
        with pytest.raises(InvalidStatus):
            connect(ws_url(app), open_timeout=5)
        samples = eventually(app, lambda s: s.get(SESSIONS) == 1)
        assert samples[SESSIONS] == 1 and samples[("cap_open_connections", ())] == 2
        assert samples[PER_CLIENT_REFUSED] == 1
    assert eventually(app, lambda s: s.get(SESSIONS) == 0)[SESSIONS] == 0


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_the_api_token_gates_metrics(start_app, headers):
    app = start_app(api_token="s3cret")
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(app, headers)
    refused.value.close()  # else the server waits for this client to hang up
    assert refused.value.code == 401
    assert ("cap_open_connections", ()) in scrape(app, {"Authorization": "Bearer s3cret"})
