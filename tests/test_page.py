"""The page at GET /: served by CAP itself, and used in a real browser.

The browser is Debian's chromium, driven by Playwright (scripts/test installs
both; no browser is downloaded). The page talks to a real server with the
tiny random-weight SAM, and the images come from the real local image server.
The masks are meaningless, so the checks compare what the page drew with what
the server sent (decoded by pycocotools), never with what a mask should look
like.
"""

from __future__ import annotations

import base64
import io
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from server.routes import PAGE
from tests.conftest import ws_url
from tests.support.client import exchange

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"  # gitignored; docs/page.png is copied from here by hand
CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1200, 800  # larger than the page shows it, so mouse positions are scaled
TIMEOUT_MS = 60_000

# The page's colours, written out: a change to them in the page must show up here.
COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180)]


def scene_png() -> bytes:
    """A 1200x800 picture with a few shapes to draw boxes around."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    sky = np.stack([120 + x * 60 // WIDTH, 170 + y * 40 // HEIGHT, np.full_like(x, 230)], axis=2)
    image = Image.fromarray(sky.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 560, WIDTH, HEIGHT], fill=(90, 150, 70))  # grass
    draw.ellipse([150, 250, 450, 550], fill=(235, 150, 40), outline=(120, 70, 10), width=6)  # a ball
    draw.rectangle([650, 180, 1000, 600], fill=(60, 80, 170), outline=(20, 30, 80), width=6)  # a crate
    draw.polygon([(1050, 600), (1120, 420), (1190, 600)], fill=(200, 60, 60))  # a cone
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


# --- serving the page (plain HTTP, no browser) ----------------------------------------


def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_get_slash_serves_the_page_and_the_other_paths_still_work(start_app):
    app = start_app()
    assert http_get(app.port, "/") == (200, "text/html; charset=utf-8", PAGE)
    assert http_get(app.port, "/?token=x")[2] == PAGE
    assert http_get(app.port, "/ping")[::2] == (200, b"pong")
    assert json.loads(http_get(app.port, "/health")[2])["model_loaded"] is True
    assert http_get(app.port, "/index.html")[0] == 404


def test_the_page_is_open_but_the_websocket_still_needs_the_token(start_app, image_server):
    app = start_app(api_token="s3cret")
    assert http_get(app.port, "/")[::2] == (200, PAGE)
    refused = http_get(app.port, "/", {"Upgrade": "websocket", "Connection": "Upgrade",
                                       "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                       "Sec-WebSocket-Version": "13"})
    assert refused[0] == 401
    request = {"image_url": image_server.url("/rgb.png"), "boxes": [{"x": 1, "y": 1, "width": 9, "height": 9}]}
    assert exchange(ws_url(app) + "?token=s3cret", request).types == ["queued", "status", "result"]


def test_the_page_needs_nothing_from_elsewhere():
    text = PAGE.decode()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "the page must work offline"
    assert "<script src" not in text and "<link" not in text


# --- in a real browser ----------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium when run as root with apt-get")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-background-networking"]
        )
        yield chromium
        chromium.close()


class Frames:
    """Every WebSocket frame the page sends and receives, as JSON."""

    def __init__(self, page):
        self.sent: list[dict] = []
        self.received: list[dict] = []
        page.on("websocket", self._watch)

    def _watch(self, ws) -> None:
        ws.on("framesent", lambda payload: self.sent.append(json.loads(payload)))
        ws.on("framereceived", lambda payload: self.received.append(json.loads(payload)))


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1000, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    yield page
    context.close()
    assert script_errors == [], "the page's script raised"


def load_image(page, port: int, image_url: str) -> None:
    page.goto(f"http://127.0.0.1:{port}/")
    page.fill("#image-url", image_url)
    page.click("#load-url")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Image loaded')")


def drag_box(page, x0: float, y0: float, x1: float, y1: float) -> None:
    """Drag with the mouse from image pixel (x0, y0) to (x1, y1)."""
    area = page.locator("#boxes").bounding_box()
    scale = area["width"] / page.eval_on_selector("#boxes", "canvas => canvas.width")  # shown / image pixels
    page.mouse.move(area["x"] + x0 * scale, area["y"] + y0 * scale)
    page.mouse.down()
    page.mouse.move(area["x"] + x1 * scale, area["y"] + y1 * scale, steps=8)
    page.mouse.up()


def wait_for_answer(page) -> None:
    page.wait_for_function("/^(Done|Error)/.test(document.getElementById('status').textContent)")


def read_mask_canvas(page) -> np.ndarray:
    """The mask layer's pixels, H×W×4 RGBA, read back from the canvas in the browser."""
    url = page.evaluate("document.getElementById('masks').toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2]))).convert("RGBA"))


def decode(segmentation: dict) -> np.ndarray:
    return mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()}).astype(bool)


def expected_layer(result: dict) -> np.ndarray:
    """What the mask layer must hold: each box's mask in its colour, later boxes on top."""
    layer = np.zeros((result["image"]["height"], result["image"]["width"], 4), dtype=np.uint8)
    for index, answer in enumerate(result["masks"]):
        layer[decode(answer["segmentation"])] = (*COLOURS[index], 255)
    return layer


def test_a_person_drags_two_boxes_and_sees_the_masks(start_app, image_server, page):
    image_server.add("/scene.png", scene_png())
    app = start_app()
    frames = Frames(page)
    load_image(page, app.port, image_server.url("/scene.png"))
    wanted = [(100, 200, 500, 600), (600, 150, 1050, 650)]  # x0, y0, x1, y1 in image pixels
    for box in wanted:
        drag_box(page, *box)
    assert page.locator("#box-list li").count() == 2

    page.click("#send")
    wait_for_answer(page)

    # What went over the wire: one request with the dragged boxes, then queued, processing, result.
    (request,) = frames.sent
    assert request["image_url"] == image_server.url("/scene.png")
    for sent, (x0, y0, x1, y1) in zip(request["boxes"], wanted):
        assert sent["x"] == pytest.approx(x0, abs=2) and sent["y"] == pytest.approx(y0, abs=2)
        assert sent["width"] == pytest.approx(x1 - x0, abs=2) and sent["height"] == pytest.approx(y1 - y0, abs=2)
    assert [m["type"] for m in frames.received] == ["queued", "status", "result"]
    result = frames.received[-1]

    # The status told the story as it happened, and ends with the result.
    assert re.fullmatch(r"Done: 2 masks in \d+\.\d\d s", page.inner_text("#status"))
    log = page.locator("#log li").all_inner_texts()
    assert log[0].startswith("queued at position 1") and log[1] == "processing" and log[2].startswith("result: 2 masks")

    # The canvas holds exactly the masks the server sent, in each box's colour.
    layer = read_mask_canvas(page)
    expected = expected_layer(result)
    assert layer.shape == (HEIGHT, WIDTH, 4)
    np.testing.assert_array_equal(layer, expected)
    for index, sent in enumerate(request["boxes"]):
        x, y, w, h = (int(sent[key]) for key in ("x", "y", "width", "height"))
        inside = layer[y : y + h, x : x + w]
        mine = (inside == (*COLOURS[index], 255)).all(axis=2)
        # With random weights a mask could be empty; for this scene and seed it is not,
        # and this keeps the comparison above from passing vacuously.
        assert mine.any(), f"no pixels of mask {index + 1} inside box {index + 1}"
        top = decode(result["masks"][index]["segmentation"])[y : y + h, x : x + w]
        for later in result["masks"][index + 1 :]:
            top &= ~decode(later["segmentation"])[y : y + h, x : x + w]
        np.testing.assert_array_equal(mine, top)

    # Each box's score, as the server sent it.
    scores = page.locator("#results li").all_inner_texts()
    assert scores == [f"score {m['score']:.3f}, area {m['area']} px" for m in result["masks"]]

    # The downloads: the result as JSON, the mask layer as PNG.
    with page.expect_download() as download:
        page.click("#download-json")
    assert json.loads(Path(download.value.path()).read_text()) == result
    with page.expect_download() as download:
        page.click("#download-png")
    np.testing.assert_array_equal(np.asarray(Image.open(download.value.path()).convert("RGBA")), expected)

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "page.png", full_page=True)


def test_a_removed_box_is_not_sent(start_app, image_server, page):
    app = start_app()
    frames = Frames(page)
    load_image(page, app.port, image_server.url("/photo.jpg"))  # 320x240, shown at full size
    drag_box(page, 10, 10, 60, 50)
    drag_box(page, 100, 100, 200, 180)
    drag_box(page, 5, 5, 6, 6)  # a click, not a box
    assert page.locator("#box-list li").count() == 2
    page.locator("#box-list li").first.get_by_role("button", name="remove").click()
    page.click("#send")
    wait_for_answer(page)
    (request,) = frames.sent
    assert request["boxes"] == [{"x": 100, "y": 100, "width": 100, "height": 80}]
    assert page.inner_text("#status").startswith("Done: 1 mask in ")


def test_an_image_the_server_cannot_download_shows_the_servers_sentence(start_app, image_server, page):
    app = start_app()
    frames = Frames(page)
    # The browser sees an image at this URL; the image server answers CAP with a 404.
    missing = image_server.url("/only-the-browser-sees-this.png")
    page.route(missing, lambda route: route.fulfill(body=scene_png(), content_type="image/png"))
    load_image(page, app.port, missing)
    drag_box(page, 100, 100, 400, 400)
    page.click("#send")
    wait_for_answer(page)
    error = frames.received[-1]
    assert error["type"] == "error" and error["code"] == "image_download_failed" and "404" in error["message"]
    assert page.inner_text("#error") == error["message"]
    assert page.inner_text("#status") == "Error: image_download_failed"
    assert read_mask_canvas(page)[..., 3].max() == 0  # nothing drawn


def test_with_api_token_the_page_sends_the_token(start_app, image_server, page):
    app = start_app(api_token="s3cret")
    frames = Frames(page)
    load_image(page, app.port, image_server.url("/photo.jpg"))
    drag_box(page, 20, 20, 120, 100)
    page.fill("#token", "wrong")
    page.click("#send")
    wait_for_answer(page)
    assert frames.received == []  # refused at the upgrade: no socket, so no message
    assert "refused the token" in page.inner_text("#error")

    page.fill("#token", "s3cret")
    page.click("#send")
    wait_for_answer(page)
    assert [m["type"] for m in frames.received] == ["queued", "status", "result"]
    assert page.inner_text("#error") == ""


def test_a_local_file_is_sent_as_a_data_url(start_app, page, tmp_path):
    app = start_app()
    frames = Frames(page)
    path = tmp_path / "scene.png"
    path.write_bytes(scene_png())
    page.goto(f"http://127.0.0.1:{app.port}/")
    page.set_input_files("#image-file", path)
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Image loaded')")
    drag_box(page, 150, 250, 450, 550)
    page.click("#send")
    wait_for_answer(page)
    (request,) = frames.sent
    assert request["image_url"] == "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    result = frames.received[-1]
    assert result["type"] == "result" and result["image"] == {"width": WIDTH, "height": HEIGHT}
    np.testing.assert_array_equal(read_mask_canvas(page), expected_layer(result))


# --- the page's RLE decoder against pycocotools -----------------------------------------


def rle_cases() -> list[np.ndarray]:
    random = np.random.default_rng(7)
    cases = [
        np.zeros((5, 7), dtype=np.uint8),
        np.ones((5, 7), dtype=np.uint8),
        np.eye(6, 9, dtype=np.uint8),
        np.ones((1, 40), dtype=np.uint8),
        np.ones((40, 1), dtype=np.uint8),
        (random.random((37, 53)) > 0.5).astype(np.uint8),  # short runs
        (random.random((64, 48)) > 0.97).astype(np.uint8),  # sparse: long zero runs
    ]
    corner = np.zeros((9, 11), dtype=np.uint8)
    corner[0, 0] = corner[-1, -1] = corner[0, -1] = 1
    cases.append(corner)
    y, x = np.mgrid[0:480, 0:640]  # long runs, growing then shrinking: large and negative differences
    cases.append((((x - 300) ** 2 + (y - 200) ** 2 < 150**2) | ((x > 500) & (y > 400))).astype(np.uint8))
    return cases


def test_the_pages_rle_decoder_agrees_with_pycocotools(start_app, page):
    app = start_app()
    page.goto(f"http://127.0.0.1:{app.port}/")
    masks = rle_cases()
    encoded = []
    for mask in masks:
        rle = mask_utils.encode(np.asfortranarray(mask))
        encoded.append({"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()})
    decoded = page.evaluate("cases => cases.map(rle => decodeRle(rle).join(''))", encoded)  # "0110..."
    for mask, rle, text in zip(masks, encoded, decoded):
        from_page = (np.frombuffer(text.encode(), dtype=np.uint8) - ord("0")).reshape(mask.shape)
        np.testing.assert_array_equal(from_page, mask_utils.decode({**rle, "counts": rle["counts"].encode()}))
        np.testing.assert_array_equal(from_page, mask)
    bad = {"size": [3, 3], "counts": encoded[0]["counts"]}  # counts for 5x7 pixels
    message = page.evaluate("rle => { try { decodeRle(rle); } catch (e) { return e.message; } }", bad)
    assert "not 3x3" in message
