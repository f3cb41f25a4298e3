"""Images sent inline as data: URLs, through a real server and a real WebSocket client."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness import image_files as files
from harness.client import exchange
from server import image_layout, images, masks
from server.main import hard_message_limit
from tests.conftest import ws_url

BOX = {"x": 2, "y": 3, "width": 20, "height": 12}


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


def request_for(image_url: str, boxes=(BOX,)) -> dict:
    return {"image_url": image_url, "boxes": list(boxes)}


def webp(w: int, h: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(files.rgb_pattern(w, h)).save(buffer, "WEBP", lossless=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "media_type, data",
    [("image/png", files.png_rgb(64, 48)), ("image/jpeg", files.jpeg_rgb(64, 48)), ("image/webp", webp(64, 48))],
)
def test_a_data_url_image_is_segmented(start_app, media_type, data):
    app = start_app()
    outcome = exchange(ws_url(app), request_for(data_url(data, media_type)))
    assert outcome.types == ["queued", "status", "result"] and outcome.close_code == 1000
    result = outcome.last
    assert result["image"] == {"width": 64, "height": 48}
    assert masks.decode(result["masks"][0]["segmentation"]).shape == (48, 64)

    record = app.store.get(result["id"])
    assert record["status"] == "finished"
    # The record keeps a short description, not the base64; the file keeps the bytes.
    assert record["imageUrl"] == f"data:{media_type};base64,... ({len(data)} bytes, sent inline)"
    assert record["imageSha256"] == images.sha256_hex(data)
    # Kept by its hash once the model has run on it, with the bytes as sent.
    assert image_layout.find(app.settings.image_dir, record["imageSha256"]).read_bytes() == data


def test_a_data_url_may_be_larger_than_max_message_bytes(start_app):
    data = files.png_rgb(200, 150)  # about 90 KB: far over a 2,000-byte message limit
    app = start_app(max_message_bytes=2000, max_image_bytes=len(data))
    outcome = exchange(ws_url(app), request_for(data_url(data)))
    assert outcome.types == ["queued", "status", "result"], outcome.messages
    assert outcome.last["image"] == {"width": 200, "height": 150}


def test_max_image_bytes_counts_the_decoded_bytes(start_app):
    data = files.png_rgb(200, 150)
    app = start_app(max_message_bytes=2000, max_image_bytes=len(data) - 1)
    outcome = exchange(ws_url(app), request_for(data_url(data)))
    assert outcome.types == ["error"] and outcome.last["code"] == "image_too_large"
    assert outcome.close_code == 1009 and f"{len(data) - 1:,} bytes" in outcome.last["message"]
    assert list(app.store.records()) == []


def test_the_rest_of_the_message_still_fits_max_message_bytes(start_app):
    app = start_app(max_message_bytes=2000)
    boxes = [dict(BOX, x=1 + i / 7) for i in range(40)]  # about 3 KB of boxes beside a tiny image
    outcome = exchange(ws_url(app), request_for(data_url(files.png_rgb(64, 48)), boxes))
    assert outcome.last["code"] == "message_too_large" and outcome.close_code == 1009
    assert "2000 bytes" in outcome.last["message"]


def test_past_the_hard_limit_the_websocket_layer_drops_the_message(start_app):
    app = start_app(max_message_bytes=2000, max_image_bytes=3000)
    limit = hard_message_limit(app.settings)
    assert limit == 4 * 2000 + len("data:image/webp;base64,") + 4000
    with connect(ws_url(app)) as ws:
        ws.send(json.dumps(request_for("data:image/png;base64," + "A" * limit)))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1009  # a bare close: no message before it


@pytest.mark.parametrize(
    "image_url, code",
    [
        ("data:image/png;base64,%%%notbase64%%%", "invalid_request"),
        ("data:image/png;base64,iVBORw0KGgo", "invalid_request"),  # truncated padding
        ("data:image/png,%89PNG", "invalid_request"),  # not base64
        ("data:image/png;base64,iVBOé===", "invalid_request"),  # not ASCII
        ("data:image/png;base64,\ud800AAA", "invalid_request"),  # a lone surrogate, escaped in the JSON
        ("data:text/plain;base64," + base64.b64encode(b"hello").decode(), "unsupported_image"),
        ("data:image/gif;base64," + base64.b64encode(files.png_rgb(8, 8)).decode(), "unsupported_image"),
        (data_url(files.html_page()), "unsupported_image"),  # valid base64, not an image
        (data_url(files.truncated_jpeg(64, 48), "image/jpeg"), "unsupported_image"),
        (data_url(b"GIF89a" + files.png_rgb(8, 8)[6:]), "unsupported_image"),  # garbage after a GIF magic
    ],
    ids=["bad-base64", "bad-padding", "not-base64", "not-ascii", "surrogate", "text", "gif-type", "html", "truncated", "junk"],
)
def test_a_malformed_data_url_gets_a_typed_error(start_app, image_url, code):
    app = start_app()
    outcome = exchange(ws_url(app), request_for(image_url))
    assert outcome.types == ["error"], outcome.messages
    error = outcome.last
    assert error["code"] == code and error["id"] is None
    assert outcome.close_code == 1008
    assert len(error["message"]) < 200 and image_url.partition(",")[2][:12] not in error["message"]  # no echo
    assert list(app.store.records()) == []


def test_a_gif_in_a_data_url_is_refused_though_a_url_may_serve_one(start_app, image_server):
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buffer, "GIF")
    image_server.add("/red.gif", buffer.getvalue(), content_type="image/gif")
    app = start_app()
    inline = exchange(ws_url(app), request_for(data_url(buffer.getvalue(), "image/png")))
    assert inline.last["code"] == "unsupported_image" and "JPEG, PNG or WebP" in inline.last["message"]
    fetched = exchange(ws_url(app), request_for(image_server.url("/red.gif")))
    assert fetched.types == ["queued", "status", "result"]


def test_the_masks_of_an_inline_image_match_those_of_the_same_image_by_url(start_app, image_server):
    app = start_app()
    by_url = exchange(ws_url(app), request_for(image_server.url("/rgb.png"))).last
    inline = exchange(ws_url(app), request_for(data_url(files.png_rgb(64, 48)))).last
    np.testing.assert_array_equal(
        masks.decode(by_url["masks"][0]["segmentation"]), masks.decode(inline["masks"][0]["segmentation"])
    )


def test_another_replica_leaves_an_inline_image_to_the_one_that_received_it(start_app, gate, tmp_path):
    """Two servers on one SQLite file, each with its own IMAGE_DIR: only the receiver can read the image."""
    import threading

    from server.store.sqlite import SQLiteStore
    from tests.support.watched_store import WatchedStore
    from harness.waiting import wait_for


    receiver = start_app(model=gate, store=SQLiteStore(tmp_path / "cap.sqlite3"))
    others_store = WatchedStore(tmp_path / "cap.sqlite3")
    other = start_app(store=others_store, image_dir=tmp_path / "other-images", poll_interval=0.1)
    outcomes = []
    threads = [
        threading.Thread(target=lambda: outcomes.append(exchange(ws_url(receiver), request_for(data_url(files.png_rgb(32, 24))), timeout=30)))
        for _ in range(2)
    ]
    threads[0].start()
    assert gate.entered.wait(10)  # the receiver's processor is busy with the first request
    threads[1].start()
    assert wait_for(lambda: receiver.store.count_queued() == 1)
    seen_before = others_store.saw_queued
    # Three of the other server's polls that find the queued record: each time it must leave it.
    assert wait_for(lambda: others_store.saw_queued >= seen_before + 3)
    queued = [r for r in receiver.store.records() if r["status"] == "queued"]
    assert len(queued) == 1, [r["status"] for r in receiver.store.records()]
    gate.opened.set()
    for thread in threads:
        thread.join(30)
    assert [o.types for o in outcomes] == [["queued", "status", "result"]] * 2
    assert {r["serverId"] for r in receiver.store.records()} == {receiver.server_id}
    assert other.processor.model is not None  # it was running all along
