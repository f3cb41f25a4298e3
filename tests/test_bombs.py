"""Hostile image servers: decompression bombs, lying lengths and slow drips,
requested through a real running server from a real local HTTP server.

The server runs in-process, so `tracemalloc` sees what it allocates while it
handles the request. tracemalloc counts Python objects and numpy arrays (numpy
reports its buffers to it), not Pillow's own C buffers; so the bomb test also
reads the process's peak resident memory (VmHWM, reset through
/proc/self/clear_refs) where Linux allows it.
"""

from __future__ import annotations

import contextlib
import time
import tracemalloc
from pathlib import Path

import pytest

from harness import image_files
from harness.client import exchange
from tests.conftest import ws_url

MB = 1024 * 1024


def request_for(url: str) -> dict:
    return {"image_url": url, "boxes": [{"x": 1, "y": 1, "width": 20, "height": 20}]}


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@contextlib.contextmanager
def measured_memory():
    """Peak traced Python memory and, where Linux lets us reset it, peak RSS growth, in bytes."""
    figures: dict[str, int | None] = {"traced_peak": None, "rss_growth": None}
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        rss_before = _status_kb("VmRSS")
    except (OSError, KeyError):
        rss_before = None
    tracemalloc.start()
    try:
        yield figures
    finally:
        figures["traced_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if rss_before is not None:
            figures["rss_growth"] = (_status_kb("VmHWM") - rss_before) * 1024


def describe(figures: dict) -> str:
    rss = figures["rss_growth"]
    return f"peak traced memory {figures['traced_peak'] / MB:.1f} MB, peak RSS growth " + (
        f"{rss / MB:.1f} MB" if rss is not None else "not measurable here"
    )


# --- (a) a decompression bomb -------------------------------------------------------------


@pytest.mark.parametrize(
    "side, stopped_by",
    [
        (8_000, "CAP's MAX_IMAGE_PIXELS (40 M) alone: 64 M pixels is under Pillow's own bomb limit"),
        (30_000, "Pillow's own decompression-bomb limit, or CAP's, whichever reads the header first"),
    ],
    ids=["64M-pixels", "900M-pixels"],
)
def test_a_decompression_bomb_is_refused_undecoded(start_app, image_server, side, stopped_by):
    app = start_app()  # the default MAX_IMAGE_PIXELS, 40,000,000
    bomb = image_files.png_bomb(side)
    path = f"/bombs/bomb-{side}.png"
    image_server.add(path, bomb)

    with measured_memory() as memory:
        outcome = exchange(ws_url(app), request_for(image_server.url(path)), timeout=60)

    decoded_bytes = side * side * 3  # what the RGB pixels alone would take
    print(
        f"\nPNG bomb: {len(bomb) / 1024:.0f} KiB declaring {side}x{side} = {side * side / 1e6:.0f} M pixels "
        f"({decoded_bytes / MB:.0f} MB as RGB) -> {outcome.types} {outcome.last.get('code')}, close "
        f"{outcome.close_code}; {describe(memory)}; stopped by {stopped_by}"
    )
    assert outcome.types == ["error"] and outcome.last["code"] == "image_too_large", outcome.messages
    assert outcome.close_code == 1009 and outcome.last["id"] is None
    assert memory["traced_peak"] < 50 * MB
    if memory["rss_growth"] is not None:
        assert memory["rss_growth"] < 150 * MB  # decoding would need at least side * side bytes
    assert list(app.store.records()) == []


# --- (b) a lying server -------------------------------------------------------------------


@pytest.mark.parametrize(
    "how",
    ["claims 1,000 bytes, sends 20 MB chunked", "no Content-Length, 20 MB until close", "honest 20 MB length"],
    ids=["lying-length", "no-length", "honest-length"],
)
def test_a_body_past_max_image_bytes_is_cut_off_whatever_the_headers_say(start_app, image_server, how):
    limit = 1 * MB
    app = start_app(max_image_bytes=limit)
    body = image_files.png_rgb(64, 48)
    body += bytes(20 * MB - len(body))  # a real PNG header, then 20 MB in all
    path = "/bombs/lying-" + how.split(",")[0].replace(" ", "-")
    if how.startswith("claims"):
        image_server.add_lying_length(path, body, claimed_length=1000)
    elif how.startswith("no Content-Length"):
        image_server.add_lying_length(path, body, claimed_length=None)
    else:
        image_server.add(path, body)

    started = time.perf_counter()
    with measured_memory() as memory:
        outcome = exchange(ws_url(app), request_for(image_server.url(path)), timeout=60)
    elapsed = time.perf_counter() - started

    print(
        f"\nimage server {how}, MAX_IMAGE_BYTES {limit / MB:.0f} MB -> {outcome.types} "
        f"{outcome.last.get('code')}, close {outcome.close_code}, in {elapsed:.2f} s; {describe(memory)}"
    )
    assert outcome.types == ["error"] and outcome.last["code"] == "image_too_large", outcome.messages
    assert outcome.close_code == 1009
    assert memory["traced_peak"] < 4 * limit  # the body is counted as it arrives, never held whole
    assert list(app.store.records()) == []


# --- (c) a slow drip ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "how, delay, chunk",
    [("drips 512 bytes every 0.1 s", 0.1, 512), ("sends half the body, then stalls for 10 s", 10.0, 25_000)],
    ids=["drip", "stall"],
)
def test_a_download_past_download_timeout_fails(start_app, image_server, how, delay, chunk):
    timeout = 1.0
    app = start_app(download_timeout=timeout)
    body = image_files.png_rgb(64, 48)
    body += bytes(50_000 - len(body))  # 50 kB: 10 s of dripping, far past the timeout
    path = "/bombs/slow-" + str(chunk)
    image_server.add_slow(path, body, delay_per_chunk=delay, chunk_size=chunk)

    started = time.perf_counter()
    outcome = exchange(ws_url(app), request_for(image_server.url(path)), timeout=60)
    elapsed = time.perf_counter() - started

    print(
        f"\nimage server {how}, DOWNLOAD_TIMEOUT {timeout:g} s -> {outcome.types} "
        f"{outcome.last.get('code')}, close {outcome.close_code}, after {elapsed:.2f} s"
    )
    assert outcome.types == ["error"] and outcome.last["code"] == "image_download_failed", outcome.messages
    assert outcome.close_code == 1008
    assert timeout <= elapsed < timeout + 5


@pytest.mark.parametrize(
    "how, head, drip",
    [
        ("drips its headers one byte every 50 ms", b"HTTP/1.1 200 OK\r\nX-Drip: ", b"a"),
        (
            "sends gzip of empty deflate blocks, endlessly",
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff",
            b"\x00\x00\x00\xff\xff" * 10_000,
        ),
    ],
    ids=["header-drip", "gzip-empty-blocks"],
)
def test_a_response_that_never_ends_is_cut_off(start_app, image_server, how, head, drip):
    timeout = 1.0
    app = start_app(download_timeout=timeout)
    image_server.add_raw("/bombs/endless", head, then=drip, every=0.05 if len(drip) == 1 else 0.0, for_seconds=15)

    started = time.perf_counter()
    outcome = exchange(ws_url(app), request_for(image_server.url("/bombs/endless")), timeout=60)
    elapsed = time.perf_counter() - started

    print(f"\nimage server {how}, DOWNLOAD_TIMEOUT {timeout:g} s -> {outcome.last.get('code')} after {elapsed:.2f} s")
    assert outcome.types == ["error"] and outcome.last["code"] == "image_download_failed", outcome.messages
    assert elapsed < timeout + 1
    assert list(app.store.records()) == []
