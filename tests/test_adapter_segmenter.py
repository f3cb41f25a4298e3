"""What every adapter hands its work to (server/adapters/segmenter.py): an ask is a record like a WebSocket request.

A real server with the tiny SAM; the same prompt sent over a real WebSocket
gives the mask an ask must equal. Images come from a real local HTTP server.
"""

from __future__ import annotations

import base64
import logging
import threading

import numpy as np
import pytest

from harness import image_files
from harness.client import exchange
from harness.http_server import ImageHTTPServer
from harness.waiting import wait_for
from server import jobs, masks
from server.adapters.calls import CVAT, LABEL_STUDIO, Ask, ImageFetch
from server.errors import ClientError
from tests.conftest import ws_url

PNG = image_files.png_rgb(64, 48)
PROMPTS = {"prompts": [{"points": [{"x": 20, "y": 15, "label": 1}]}], "multimask": False}
SECRET = "Token not-for-logs-7f3a"


def mask_of(result: dict) -> np.ndarray:
    return masks.decode(result["masks"][0]["segmentation"]).astype(bool)


def test_an_ask_is_a_record_of_its_tool_with_the_websockets_mask_and_a_second_click_is_decoder_only(start_app):
    app = start_app()
    first = app.segmenter.segment(Ask(dict(PROMPTS), CVAT, image=PNG, image_name="cvat upload"), None)
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    websocket = exchange(ws_url(app), {"image_url": data_url, **PROMPTS}).last
    assert np.array_equal(mask_of(first), mask_of(websocket))
    assert first["cached_embedding"] is False
    second = app.segmenter.segment(Ask(dict(PROMPTS), CVAT, image=PNG), None)
    assert second["cached_embedding"] is True and second["timings"]["encode_ms"] == 0
    records = {r["id"]: r for r in app.store.records()}
    assert records[first["id"]]["client"] == CVAT and records[first["id"]]["imageUrl"] == "cvat upload"
    assert records[second["id"]]["imageUrl"] == f"cvat upload, {len(PNG)} bytes"
    assert records[websocket["id"]]["client"] == "websocket"
    assert all(r["status"] == jobs.FINISHED for r in records.values())
    assert b'cap_requests_total{code="",outcome="finished"} 3.0' in app.metrics.text()


def test_bad_input_is_the_protocols_error_and_leaves_nothing_unfinished(start_app):
    app = start_app()
    with pytest.raises(ClientError) as refused:
        app.segmenter.segment(Ask(dict(PROMPTS), CVAT, image=b"not an image"), None)
    assert refused.value.code == "unsupported_image"
    with pytest.raises(ClientError) as refused:
        app.segmenter.segment(Ask({"prompts": [{"points": []}]}, CVAT, image=PNG), None)
    assert refused.value.code == "invalid_request"
    with pytest.raises(ClientError) as refused:
        app.segmenter.segment(Ask({**PROMPTS, "prompts": [{"points": [{"x": 999, "y": 1, "label": 1}]}]}, CVAT, image=PNG), None)
    assert refused.value.code == "invalid_request"
    assert all(jobs.is_terminal(r) for r in app.store.records())


def test_a_full_queue_refuses_an_ask_before_its_image_is_read(start_app, gate):
    app = start_app(model=gate, max_queue=1)
    asks = [Ask({"prompts": []}, LABEL_STUDIO, image=PNG), Ask({"prompts": []}, LABEL_STUDIO, image=image_files.png_rgb(40, 30))]
    callers = [threading.Thread(target=app.segmenter.segment, args=(ask, None), daemon=True) for ask in asks]
    try:
        callers[0].start()
        assert gate.entered.wait(30)  # the first is being processed: the second waits in the queue
        callers[1].start()
        wait_for(lambda: app.store.count_queued() == 1, timeout=10)
        with pytest.raises(ClientError) as refused:
            app.segmenter.segment(Ask(dict(PROMPTS), CVAT, image=PNG), None)
        assert refused.value.code == "queue_full"
    finally:
        gate.opened.set()
    for caller in callers:
        caller.join(30)
    records = list(app.store.records())
    assert len(records) == 2 and all(r["status"] == jobs.FINISHED and r["client"] == LABEL_STUDIO for r in records)


def test_a_prepared_image_makes_the_first_click_decoder_only(start_app):
    app = start_app()
    app.segmenter.prepare(Ask({"prompts": []}, LABEL_STUDIO, image=PNG), None)
    wait_for(lambda: any(r["status"] == jobs.FINISHED for r in app.store.records()), timeout=30)
    click = app.segmenter.segment(Ask(dict(PROMPTS), LABEL_STUDIO, image=PNG), None)
    assert click["cached_embedding"] is True


def test_a_trusted_origin_gets_its_headers_and_no_other_host_does(start_app, caplog):
    """Label Studio's files: its API key goes to LABEL_STUDIO_URL's origin only, even through a redirect."""
    caplog.set_level(logging.DEBUG)
    app = start_app()  # ALLOW_PRIVATE_URLS (the tests' default): the redirect's other host is fetched at all
    with ImageHTTPServer() as tool, ImageHTTPServer() as elsewhere:
        tool.add("/data/upload/1/cat.png", PNG)
        elsewhere.add("/cat.png", PNG)
        tool.add_redirect("/data/upload/2/moved.png", elsewhere.url("/cat.png"))
        headers = (("Authorization", SECRET),)
        result = app.segmenter.segment(
            Ask(dict(PROMPTS), LABEL_STUDIO, fetch=ImageFetch(tool.url("/data/upload/1/cat.png"), headers)), None
        )
        assert result["type"] == "result"
        assert tool.headers["/data/upload/1/cat.png"][0]["authorization"] == SECRET
        app.segmenter.segment(
            Ask(dict(PROMPTS), LABEL_STUDIO, fetch=ImageFetch(tool.url("/data/upload/2/moved.png"), headers)), None
        )
        assert elsewhere.hits["/cat.png"] == 1 and "authorization" not in elsewhere.headers["/cat.png"][0]
    assert SECRET not in caplog.text and "not-for-logs" not in repr(ImageFetch("http://x/", headers))


def test_a_trusted_origin_is_fetched_though_private_but_its_redirect_elsewhere_is_not(start_app):
    app = start_app(allow_private_urls=False)  # 127.0.0.1 is private
    with ImageHTTPServer() as tool, ImageHTTPServer() as elsewhere:
        tool.add("/data/upload/1/cat.png", PNG)
        elsewhere.add("/cat.png", PNG)
        tool.add_redirect("/data/upload/2/moved.png", elsewhere.url("/cat.png"))
        fetched = app.segmenter.segment(
            Ask(dict(PROMPTS), LABEL_STUDIO, fetch=ImageFetch(tool.url("/data/upload/1/cat.png"))), None
        )
        assert fetched["type"] == "result"
        with pytest.raises(ClientError) as refused:
            app.segmenter.segment(
                Ask(dict(PROMPTS), LABEL_STUDIO, fetch=ImageFetch(tool.url("/data/upload/2/moved.png"))), None
            )
        assert refused.value.code == "image_url_forbidden" and elsewhere.hits["/cat.png"] == 0
        with pytest.raises(ClientError) as refused:  # an image_url of the tool's own host is not trusted
            app.segmenter.segment(Ask({**PROMPTS, "image_url": tool.url("/data/upload/1/cat.png")}, LABEL_STUDIO), None)
        assert refused.value.code == "image_url_forbidden"
