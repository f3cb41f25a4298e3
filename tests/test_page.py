"""The page at GET /: served by CAP itself, and used in a real browser.

The browser is Debian's chromium, driven by Playwright (scripts/test installs
both; no browser is downloaded). The page talks to a real server with the
tiny random-weight SAM, and the images come from the real local image server.
The masks are meaningless, so the checks compare what the page sent, drew and
exported with what the server sent (decoded by pycocotools), never with what
a mask should look like.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from harness.client import exchange
from server import jobs
from server.routes import PAGE, PAGE_DIR, PAGE_FILES
from tests.conftest import ModelGate, ws_url

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"  # gitignored; docs/page*.png are copied from here by hand
CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1200, 800  # larger than the page shows it, so mouse positions are scaled
TIMEOUT_MS = 30_000

# The page's colours, written out: a change to them in the page must show up here.
POSITIVE, NEGATIVE = (40, 200, 60), (230, 40, 40)
MASK_ALPHA, SELECTED_ALPHA = 140, 220

# Places in scene_png() and their colours.
BALL, CRATE, GRASS, CONE = (300, 400), (825, 390), (560, 700), (1120, 560)
SCENE_COLOURS = {BALL: (235, 150, 40), CRATE: (60, 80, 170), GRASS: (90, 150, 70), CONE: (200, 60, 60)}


def scene_png(width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """A picture with a few shapes to click on (at 1200x800: a ball, a crate, a cone, grass)."""
    y, x = np.mgrid[0:height, 0:width]
    sky = np.stack([120 + x * 60 // width, 170 + y * 40 // height, np.full_like(x, 230)], axis=2)
    image = Image.fromarray(sky.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    sx, sy = width / WIDTH, height / HEIGHT
    draw.rectangle([0, 560 * sy, width, height], fill=(90, 150, 70))  # grass
    draw.ellipse([150 * sx, 250 * sy, 450 * sx, 550 * sy], fill=(235, 150, 40), outline=(120, 70, 10), width=6)
    draw.rectangle([650 * sx, 180 * sy, 1000 * sx, 600 * sy], fill=(60, 80, 170), outline=(20, 30, 80), width=6)
    draw.polygon([(1050 * sx, 600 * sy), (1120 * sx, 420 * sy), (1190 * sx, 600 * sy)], fill=(200, 60, 60))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def scenes(image_server):
    """The scene at two sizes, as two different images on the image server."""
    image_server.add("/scene.png", scene_png())
    image_server.add("/small-scene.png", scene_png(600, 400))
    return image_server.url("/scene.png"), image_server.url("/small-scene.png")


# --- serving the page (plain HTTP, no browser) ----------------------------------------


def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_get_slash_serves_the_page_and_its_files(start_app):
    app = start_app()
    assert http_get(app.port, "/") == (200, "text/html; charset=utf-8", PAGE)
    assert http_get(app.port, "/?token=x")[2] == PAGE
    assert http_get(app.port, "/page/app.js") == (200, "text/javascript; charset=utf-8", (PAGE_DIR / "app.js").read_bytes())
    assert http_get(app.port, "/page/page.css")[:2] == (200, "text/css; charset=utf-8")
    assert sorted(PAGE_FILES) == sorted(f"/page/{p.name}" for p in PAGE_DIR.iterdir() if p.suffix in (".js", ".css", ".svg"))
    assert http_get(app.port, "/page/favicon.svg")[:2] == (200, "image/svg+xml")
    for missing in ["/index.html", "/page/", "/page/index.html", "/page/../routes.py", "/page/%2e%2e/routes.py"]:
        assert http_get(app.port, missing)[0] == 404, missing
    assert http_get(app.port, "/ping")[::2] == (200, b"pong")
    assert json.loads(http_get(app.port, "/health")[2])["model_loaded"] is True


def test_the_page_is_open_but_the_websocket_still_needs_the_token(start_app, image_server):
    app = start_app(api_token="s3cret")
    assert http_get(app.port, "/")[::2] == (200, PAGE)
    assert http_get(app.port, "/page/app.js")[0] == 200
    refused = http_get(app.port, "/", {"Upgrade": "websocket", "Connection": "Upgrade",
                                       "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                                       "Sec-WebSocket-Version": "13"})
    assert refused[0] == 401
    request = {"image_url": image_server.url("/rgb.png"), "boxes": [{"x": 1, "y": 1, "width": 9, "height": 9}]}
    assert exchange(ws_url(app) + "?token=s3cret", request).types == ["queued", "status", "result"]


def test_the_page_and_its_files_send_a_content_security_policy_and_refuse_framing(start_app):
    app = start_app()
    for path in ["/", "/page/app.js", "/page/page.css"]:
        with urllib.request.urlopen(f"http://127.0.0.1:{app.port}{path}", timeout=10) as response:
            policy = response.headers["Content-Security-Policy"]
            assert response.headers["X-Frame-Options"] == "DENY", path
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
        assert directives["script-src"] == directives["style-src"] == directives["connect-src"] == "'self'"
        assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy


def test_the_browser_enforces_the_policy_and_the_page_works_under_it(start_app, scenes, page):
    app = start_app()
    visit(page, app)
    open_image(page, scenes[1])  # an image from elsewhere, the WebSocket, /health: all allowed
    injected = page.evaluate("""() => new Promise(resolve => {
        document.addEventListener('securitypolicyviolation', event => resolve(event.violatedDirective), {once: true});
        setTimeout(() => resolve('no violation'), 5000);
        const script = document.createElement('script');
        script.textContent = 'window.injected = true';
        document.head.append(script);
    })""")
    assert injected.startswith("script-src") and page.evaluate("window.injected") is None
    assert page.evaluate("window.self === window.top")
    frame = page.evaluate("""port => new Promise(resolve => {
        const frame = document.createElement('iframe');
        frame.src = `http://127.0.0.1:${port}/`;
        frame.onload = () => { try { resolve(frame.contentDocument.title) } catch { resolve('blocked') } };
        document.body.append(frame);
        setTimeout(() => resolve('timeout'), 5000);
    })""", app.port)
    assert frame != "CAP: click an object, get its mask"  # the page is never shown in a frame, not even its own
    assert any("script-src" in v for v in CSP_VIOLATIONS[page])  # the console reports what was refused
    CSP_VIOLATIONS[page].clear()  # those two were this test's own doing


def test_the_page_needs_nothing_from_elsewhere():
    html = PAGE.decode()
    assert re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", html) == ["/page/favicon.svg", "/page/page.css", "/page/app.js"]
    for path in PAGE_DIR.glob("*.js"):
        text = path.read_text()
        assert not re.search(r"https?://", text), f"{path.name} must work offline"
        for target in re.findall(r"""\bfrom\s+["']([^"']+)""", text):
            assert re.fullmatch(r"\./\w+\.js", target) and (PAGE_DIR / target).exists(), (path.name, target)
        assert re.findall(r"""\bfetch\(\s*["']([^"']+)""", text) in ([], ["/health"]), path.name


# --- in a real browser ----------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium when run as root with apt-get")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


class Frames:
    """Every WebSocket frame the page sends and receives, as JSON, in order."""

    def __init__(self, page):
        self.page = page
        self.sent: list[dict] = []
        self.received: list[dict] = []
        page.on("websocket", self._watch)

    def _watch(self, ws) -> None:
        ws.on("framesent", lambda payload: self.sent.append(json.loads(payload)))
        ws.on("framereceived", lambda payload: self.received.append(json.loads(payload)))

    def answer(self, request: dict, timeout: float = 20) -> dict:
        """The result or error for `request`, waiting for it."""
        return wait_for(self.page, lambda: next(
            (m for m in self.received if m.get("client_ref") == request["client_ref"] and m["type"] in ("result", "error")),
            None), timeout)

    def requests(self) -> list[dict]:
        """The prompt requests (not the preparing ones, nor the `render`s of accepted objects)."""
        return [m for m in self.sent if m.get("prompts") and "render" not in m["prompts"][0]]

    def rendered(self, result: dict, timeout: float = 20) -> tuple[dict, dict]:
        """The `render` request that asked `result`'s mask again, and its result (a superseded one is asked again)."""
        def find():
            for request in self.sent:
                if request.get("prompts") == [{"render": {"id": result["id"], "index": 0}}]:
                    answer = next((m for m in self.received if m.get("client_ref") == request["client_ref"]
                                   and m["type"] == "result"), None)
                    if answer is not None:
                        return request, answer
            return None

        return wait_for(self.page, find, timeout)

    def sent_after(self, count: int) -> dict:
        """The first message sent after the first `count`, waiting for it."""
        return wait_for(self.page, lambda: self.sent[count] if len(self.sent) > count else None)

    def ask(self, action) -> tuple[dict, dict]:
        """Do `action`, wait for the mask the page then shows, and return the request and the result it came from."""
        before = len(self.sent)
        action()
        self.sent_after(before)
        self.page.wait_for_function("() => /^(candidate|score)/.test(document.getElementById('candidate').textContent)")  # the current prompt's mask is shown
        shown = self.page.get_attribute("#current-layer", "data-answer").partition(":")[0]
        result = wait_for(self.page, lambda: next(
            (m for m in self.received if m.get("id") == shown and m["type"] == "result"), None))
        return next(m for m in self.sent if m.get("client_ref") == result["client_ref"]), result


def wait_for(page, find, timeout: float = 20):
    """Let the page run until `find()` returns something."""
    deadline = time.monotonic() + timeout
    while (found := find()) is None:
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(20)
    return found


CSP_VIOLATIONS: dict[object, list[str]] = {}  # page -> what its console said the Content-Security-Policy refused


@pytest.fixture
def page(browser):
    """A fresh browser tab; at the end, it must have seen no script error and no CSP violation."""
    context = browser.new_context(viewport={"width": 1000, "height": 760}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    violations = CSP_VIOLATIONS.setdefault(page, [])
    page.on("console", lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None)
    yield page
    context.close()
    CSP_VIOLATIONS.pop(page)
    assert script_errors == [], "the page's script raised"
    assert violations == [], "the page did something its Content-Security-Policy refuses"


def visit(page, app, token: str | None = None) -> None:
    page.goto(f"http://127.0.0.1:{app.port}/")
    if token is not None:
        page.fill("#token", token)
        page.press("#token", "Enter")


def open_image(page, url: str) -> None:
    page.fill("#image-url", url)
    page.click("#load-url")
    wait_until_prepared(page)


def wait_until_prepared(page) -> None:
    page.wait_for_function("() => /^Prepared in/.test(document.getElementById('progress').textContent)")
    page.wait_for_function("() => document.getElementById('view').dataset.transform !== undefined")


def view_transform(page) -> tuple[float, float, float, dict]:
    """The view's transform (screen = image * scale + offset, in CSS pixels of the canvas) and the canvas's box."""
    scale, x, y = json.loads(page.get_attribute("#view", "data-transform"))
    return scale, x, y, page.locator("#view").bounding_box()


def on_screen(page, x: float, y: float) -> tuple[float, float]:
    """Where image pixel (x, y) is on the page."""
    scale, ox, oy, box = view_transform(page)
    return box["x"] + ox + x * scale, box["y"] + oy + y * scale


def click_image(page, x: float, y: float, *, button: str = "left", shift: bool = False) -> None:
    if shift:
        page.keyboard.down("Shift")
    page.mouse.click(*on_screen(page, x, y), button=button)
    if shift:
        page.keyboard.up("Shift")


def drag_image(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*on_screen(page, *start))
    page.mouse.down()
    page.mouse.move(*on_screen(page, *end), steps=6)
    page.mouse.up()


def screen_pixel(page, x: float, y: float) -> tuple[int, int, int]:
    """The colour the page shows at page position (x, y)."""
    png = page.screenshot(clip={"x": int(x), "y": int(y), "width": 1, "height": 1})
    return tuple(Image.open(io.BytesIO(png)).convert("RGB").getpixel((0, 0)))


def read_layer(page, layer: str) -> np.ndarray:
    """A mask layer's pixels (H×W×4 RGBA, in image pixels), read back from its canvas."""
    url = page.evaluate("id => document.getElementById(id).toDataURL('image/png')", layer)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2]))).convert("RGBA"))


def decode(segmentation: dict) -> np.ndarray:
    return mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()}).astype(bool)


def shown_mask(page, result: dict, candidate: int = 0) -> np.ndarray:
    """Wait until the current layer shows `result`'s mask, and return what it shows."""
    page.wait_for_function(f"() => document.getElementById('current-layer').dataset.answer === '{result['id']}:{candidate}'")
    return read_layer(page, "current-layer")[..., 3]


def candidates(result: dict) -> list[dict]:
    (answer,) = result["masks"]
    return answer if isinstance(answer, list) else [answer]


def assert_shows(page, result: dict, candidate: int = 0) -> None:
    """The current layer holds exactly that mask of that result."""
    alpha = shown_mask(page, result, candidate)
    expected = decode(candidates(result)[candidate]["segmentation"])
    np.testing.assert_array_equal(alpha > 0, expected)
    assert set(np.unique(alpha)) <= {0, MASK_ALPHA}


def test_a_click_a_negative_click_undo_and_redo(start_app, scenes, page):
    app = start_app()
    frames = Frames(page)
    visit(page, app)
    open_image(page, scenes[0])

    # Opening the image opened a session and prepared it.
    (prepare,) = frames.sent
    assert prepare == {"image_url": scenes[0], "prompts": [], "keep_open": True, "client_ref": prepare["client_ref"]}
    prepared = frames.answer(prepare)
    assert prepared["masks"] == [] and prepared["image"]["width"] == WIDTH
    sha = prepared["image"]["sha256"]

    # A click: one positive point, asked for by the image's hash; its mask is drawn.
    first, result1 = frames.ask(lambda: click_image(page, *BALL))
    assert frames.requests() == [first]
    assert first["image_sha256"] == sha and "image_url" not in first
    assert first["keep_open"] is True and first["multimask"] is False and first["output"] == ["rle"]
    ((point,),) = [p["points"] for p in first["prompts"]]
    assert (point["x"], point["y"], point["label"]) == (pytest.approx(BALL[0], abs=1), pytest.approx(BALL[1], abs=1), 1)
    assert "mask_input" not in first["prompts"][0] and "box" not in first["prompts"][0]
    assert_shows(page, result1)
    assert page.inner_text("#progress").startswith("Mask in ")

    # A Shift-click adds a negative point and refines the first mask.
    second, result2 = frames.ask(lambda: click_image(page, *GRASS, shift=True))
    assert [(p["label"]) for p in second["prompts"][0]["points"]] == [1, 0]
    assert second["prompts"][0]["points"][0] == point
    assert second["prompts"][0]["mask_input"] == {"id": result1["id"], "index": 0}
    assert result2["id"] != result1["id"]
    assert_shows(page, result2)

    # A right-click is a negative point too.
    third, result3 = frames.ask(lambda: click_image(page, *CONE, button="right"))
    assert [(p["label"]) for p in third["prompts"][0]["points"]] == [1, 0, 0]
    assert third["prompts"][0]["mask_input"] == {"id": result2["id"], "index": 0}
    assert_shows(page, result3)

    # Undo brings back each step's own mask, without asking again; redo too.
    asked = len(frames.sent)
    page.keyboard.press("Control+z")
    assert_shows(page, result2)
    page.keyboard.press("Control+z")
    assert_shows(page, result1)
    page.keyboard.press("Control+Shift+z")
    assert_shows(page, result2)
    assert len(frames.sent) == asked

    # Escape clears the prompt (a step too); undo brings it back.
    page.keyboard.press("Escape")
    page.wait_for_function("() => document.getElementById('current-layer').dataset.answer === ''")
    assert read_layer(page, "current-layer")[..., 3].max() == 0
    page.keyboard.press("Control+z")
    assert_shows(page, result2)
    assert len(frames.sent) == asked

    # Clicking a point removes it: a new prompt, asked for without the old mask.
    x, y = on_screen(page, *GRASS)
    fourth, result4 = frames.ask(lambda: page.mouse.click(x + 2, y + 1))
    assert fourth["prompts"][0]["points"] == [point] and "mask_input" not in fourth["prompts"][0]
    assert_shows(page, result4)


def test_three_candidates_and_cycling_through_them(start_app, scenes, page):
    app = start_app()
    frames = Frames(page)
    visit(page, app)
    open_image(page, scenes[1])
    page.keyboard.press("m")
    request, result = frames.ask(lambda: click_image(page, 150, 200))
    assert request["multimask"] is True
    scores = [mask["score"] for mask in candidates(result)]
    assert len(scores) == 3
    best = int(np.argmax(scores))
    assert_shows(page, result, best)
    for step in (1, 2, 3):
        page.keyboard.press("c")
        assert_shows(page, result, (best + step) % 3)
    assert page.inner_text("#candidate") == f"candidate {best + 1} of 3, score {scores[best]:.3f}"
    # A further click refines the chosen candidate.
    page.keyboard.press("c")
    chosen = (best + 1) % 3
    refined, _ = frames.ask(lambda: click_image(page, 400, 300, shift=True))
    assert refined["prompts"][0]["mask_input"] == {"id": result["id"], "index": 0, "candidate": chosen}
    # Undo goes back to the chosen candidate; one candidate again asks again.
    page.keyboard.press("Control+z")
    assert_shows(page, result, chosen)
    single, answer = frames.ask(lambda: page.keyboard.press("m"))
    assert single["multimask"] is False and single["prompts"] == request["prompts"]
    assert_shows(page, answer)


def test_a_box_is_drawn_moved_and_resized(start_app, scenes, page):
    app = start_app()
    frames = Frames(page)
    visit(page, app)
    open_image(page, scenes[0])

    request, result = frames.ask(lambda: drag_image(page, (600, 150), (1050, 650)))
    box = request["prompts"][0]["box"]
    assert box == {"x": pytest.approx(600, abs=2), "y": pytest.approx(150, abs=2),
                   "width": pytest.approx(450, abs=3), "height": pytest.approx(500, abs=3)}
    assert_shows(page, result)

    # Dragging the left edge moves the box; dragging the bottom-right corner resizes it.
    request, moved_result = frames.ask(lambda: drag_image(page, (box["x"], box["y"] + 200), (box["x"] - 100, box["y"] + 250)))
    moved = request["prompts"][0]["box"]
    assert moved["width"] == box["width"] and moved["height"] == box["height"]
    assert (moved["x"], moved["y"]) == (pytest.approx(box["x"] - 100, abs=3), pytest.approx(box["y"] + 50, abs=3))
    corner = (moved["x"] + moved["width"], moved["y"] + moved["height"])
    request, result = frames.ask(lambda: drag_image(page, corner, (corner[0] - 200, corner[1] - 100)))
    resized = request["prompts"][0]["box"]
    assert (resized["x"], resized["y"]) == (moved["x"], moved["y"])
    assert resized["width"] == pytest.approx(moved["width"] - 200, abs=3)
    assert resized["height"] == pytest.approx(moved["height"] - 100, abs=3)
    assert_shows(page, result)

    # A point inside the box goes with it.
    request, _ = frames.ask(lambda: click_image(page, *CRATE))
    assert request["prompts"][0]["box"] == resized and request["prompts"][0]["points"][0]["label"] == 1
    # Each drag was one step: two undos go back to the moved box and its own mask.
    page.keyboard.press("Control+z")
    page.keyboard.press("Control+z")
    assert_shows(page, moved_result)


CURRENT = (30, 144, 255)


def test_the_image_masks_and_points_stay_aligned_at_every_zoom_and_pan(start_app, scenes, page):
    app = start_app()
    frames = Frames(page)
    visit(page, app)
    open_image(page, scenes[0])
    box = page.locator("#view").bounding_box()
    assert view_transform(page)[0] == pytest.approx(min(box["width"] / WIDTH, box["height"] / HEIGHT))
    image = np.asarray(Image.open(io.BytesIO(scene_png())).convert("RGB")).astype(float)
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    marked = None

    def check_alignment():
        """The view shows each image pixel where the transform puts it, in the image's colour (blended with
        the mask's where the mask is, the mask stretched from the canvas's size it was asked at), and the
        point as a green dot over its own pixel."""
        scale, ox, oy, box = view_transform(page)
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=box))).convert("RGB")).astype(float)
        sy, sx = np.mgrid[0 : shot.shape[0], 0 : shot.shape[1]]
        u, v = (sx + 0.5 - ox) / scale, (sy + 0.5 - oy) / scale  # the image point at each screen pixel's centre
        keep = (u >= 0) & (v >= 0) & (u < WIDTH) & (v < HEIGHT)
        if marked:
            keep &= np.hypot(sx - (ox + marked[0] * scale), sy - (oy + marked[1] * scale)) > 12
        ui, vi = np.clip(u.astype(int), 0, WIDTH - 1), np.clip(v.astype(int), 0, HEIGHT - 1)
        mu, mv = u * mask.shape[1] / WIDTH, v * mask.shape[0] / HEIGHT  # the mask's own pixels
        if scale >= 1:  # image and mask pixels are drawn as squares: a screen pixel well inside one shows exactly it
            keep &= (np.abs(u % 1 - 0.5) < 0.35) & (np.abs(v % 1 - 0.5) < 0.35)
            keep &= (np.abs(mu % 1 - 0.5) < 0.35) & (np.abs(mv % 1 - 0.5) < 0.35)
        else:  # smoothed: only where the image and the mask are the same all around
            keep &= flat[vi, ui]
        mi, mj = np.clip(mv.astype(int), 0, mask.shape[0] - 1), np.clip(mu.astype(int), 0, mask.shape[1] - 1)
        alpha = np.where(mask[mi, mj], MASK_ALPHA / 255, 0)[..., None]
        expected = image[vi, ui] * (1 - alpha) + np.array(CURRENT) * alpha
        checked, worst = int(keep.sum()), float(np.abs(shot - expected).max(axis=2)[keep].max())
        assert checked > 10_000 and worst <= 8, f"at scale {scale:.2f}, {checked} pixels checked, one off by {worst}"
        if marked:
            assert screen_pixel(page, *on_screen(page, *marked)) == POSITIVE

    def flat_where(mask: np.ndarray, reach: int = 2) -> np.ndarray:
        """Pixels whose neighbours within `reach` have their colour (within 3) and their side of the mask."""
        rows = ((np.arange(HEIGHT) + 0.5) * mask.shape[0] / HEIGHT).astype(int)  # the mask at the image's size
        mask = mask[rows][:, ((np.arange(WIDTH) + 0.5) * mask.shape[1] / WIDTH).astype(int)]
        padded = np.pad(image, ((reach, reach), (reach, reach), (0, 0)), mode="edge")
        masked = np.pad(mask, reach, mode="edge")
        flat = np.ones(mask.shape, dtype=bool)
        for dy in range(2 * reach + 1):
            for dx in range(2 * reach + 1):
                flat &= np.abs(padded[dy : dy + HEIGHT, dx : dx + WIDTH] - image).max(axis=2) <= 3
                flat &= masked[dy : dy + HEIGHT, dx : dx + WIDTH] == mask
        return flat

    flat = flat_where(mask)
    check_alignment()
    request, result = frames.ask(lambda: click_image(page, *BALL))
    marked = tuple(request["prompts"][0]["points"][0][k] for k in ("x", "y"))
    mask = decode(candidates(result)[0]["segmentation"])
    flat = flat_where(mask)
    check_alignment()

    # The wheel zooms at the cursor: the image pixel under it stays there.
    last = None
    for offset, clicks in [((40, 30), -4), ((-60, 20), -5), ((10, -50), 2)]:  # from the point, which stays in view
        cursor = np.round(np.add(on_screen(page, *marked), offset))  # the mouse sits on whole pixels
        page.mouse.move(*cursor)
        before = view_transform(page)
        under = ((cursor[0] - before[3]["x"] - before[1]) / before[0], (cursor[1] - before[3]["y"] - before[2]) / before[0])
        for _ in range(abs(clicks)):
            page.mouse.wheel(0, 100 if clicks > 0 else -100)
        page.wait_for_function(f"() => JSON.parse(document.getElementById('view').dataset.transform)[0] !== {before[0]}")
        page.wait_for_timeout(50)
        last = view_transform(page)
        assert last[0] == pytest.approx(before[0] * np.exp(-0.15 * clicks))
        assert on_screen(page, *under) == (pytest.approx(cursor[0], abs=0.01), pytest.approx(cursor[1], abs=0.01))
        check_alignment()

    # Space-drag and middle-drag pan.
    page.mouse.move(400, 400)
    page.keyboard.down(" ")
    page.mouse.down()
    page.mouse.move(330, 350, steps=4)
    page.mouse.up()
    page.keyboard.up(" ")
    panned = view_transform(page)
    assert (panned[1] - last[1], panned[2] - last[2]) == (pytest.approx(-70), pytest.approx(-50))
    check_alignment()
    page.mouse.move(400, 400)
    page.mouse.down(button="middle")
    page.mouse.move(460, 420, steps=4)
    page.mouse.up(button="middle")
    assert view_transform(page)[1] - panned[1] == pytest.approx(60)
    check_alignment()
    assert len(frames.requests()) == 1  # zooming and panning asked nothing
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "page-zoomed.png")

    # A click at this zoom names the pixel under the cursor.
    scale, ox, oy, box = view_transform(page)
    target = ((box["width"] / 2 - ox) / scale, (box["height"] / 3 - oy) / scale)
    request, _ = frames.ask(lambda: click_image(page, *target))
    point = request["prompts"][0]["points"][-1]
    assert (point["x"], point["y"]) == (pytest.approx(target[0], abs=0.1), pytest.approx(target[1], abs=0.1))


def objects_in_list(page) -> list[str]:
    return page.eval_on_selector_all("#objects li .name", "inputs => inputs.map(input => input.value)")


def test_objects_are_labelled_listed_hidden_deleted_and_exported(start_app, scenes, page, tmp_path):
    app = start_app()
    frames = Frames(page)
    visit(page, app)
    open_image(page, scenes[0])

    # Enter accepts the mask with the label typed; the label stays for the next object.
    ball_request, ball_result = frames.ask(lambda: click_image(page, *BALL))
    assert 0 < ball_request["mask_scale"] < 1  # asked at the canvas's size
    assert candidates(ball_result)[0]["segmentation"]["size"] != [HEIGHT, WIDTH]
    page.fill("#label", "ball")
    page.press("#label", "Enter")
    assert objects_in_list(page) == ["ball"]
    page.wait_for_function("() => document.getElementById('current-layer').dataset.answer === ''")
    assert page.input_value("#label") == "ball"
    crate_request, crate_result = frames.ask(lambda: click_image(page, *CRATE))
    assert "mask_input" not in crate_request["prompts"][0]  # a new object starts afresh
    page.click("#accept")
    assert objects_in_list(page) == ["ball", "ball"]
    cone_request, cone_result = frames.ask(lambda: drag_image(page, (1040, 410), (1195, 605)))
    frames.ask(lambda: click_image(page, 1120, 540))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "page.png")  # a box and a point, with two objects accepted
    page.keyboard.press("Control+z")
    assert_shows(page, cone_result)
    page.fill("#label", "cone")
    page.click("#accept")
    assert objects_in_list(page) == ["ball", "ball", "cone"]

    # Each accepted object is asked again at full size (`render`): the masks of its prompt at full size.
    sha = frames.answer(frames.sent[0])["image"]["sha256"]
    full = [candidates(exchange(ws_url(app), {"image_sha256": sha, "prompts": request["prompts"]}).last)[0]
            for request in (ball_request, crate_request, cone_request)]
    for result, mask in zip((ball_result, crate_result, cone_result), full):
        render, answer = frames.rendered(result)
        assert "mask_scale" not in render and "mask_scale" not in answer
        assert candidates(answer)[0]["segmentation"] == mask["segmentation"]
    ball, crate, cone = full
    masks = [decode(m["segmentation"]) for m in full]
    assert all(mask.shape == (HEIGHT, WIDTH) for mask in masks)

    # Relabel the second; the objects layer holds the three masks, later ones on top.
    page.locator("#objects li .name").nth(1).fill("crate")
    page.locator("#objects li .name").nth(1).press("Enter")
    assert objects_in_list(page) == ["ball", "crate", "cone"]
    alpha = read_layer(page, "objects-layer")[..., 3]
    np.testing.assert_array_equal(alpha > 0, masks[0] | masks[1] | masks[2])

    # Hide the first, delete the cone; undo each.
    page.locator("#objects li").nth(0).get_by_role("button", name="hide").click()
    np.testing.assert_array_equal(read_layer(page, "objects-layer")[..., 3] > 0, masks[1] | masks[2])
    page.locator("#objects li").nth(2).get_by_role("button", name="delete").click()
    assert objects_in_list(page) == ["ball", "crate"]
    np.testing.assert_array_equal(read_layer(page, "objects-layer")[..., 3] > 0, masks[1])
    page.keyboard.press("Control+z")
    assert objects_in_list(page) == ["ball", "crate", "cone"]
    page.keyboard.press("Control+z")
    np.testing.assert_array_equal(read_layer(page, "objects-layer")[..., 3] > 0, masks[0] | masks[1] | masks[2])
    # The selected object is drawn stronger.
    page.locator("#objects li .swatch").nth(1).click()
    alpha = read_layer(page, "objects-layer")[..., 3]
    assert (alpha[masks[1] & ~masks[2]] == SELECTED_ALPHA).all() and (alpha[masks[0] & ~masks[1] & ~masks[2]] == MASK_ALPHA).all()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "page-objects.png")

    # COCO: the full-size masks the server sent, untouched, with their labels, boxes, areas and scores.
    with page.expect_download() as download:
        page.click("#export-coco")
    assert download.value.suggested_filename == "scene.coco.json"
    coco = json.loads(Path(download.value.path()).read_text())
    assert coco["images"] == [{"id": 1, "file_name": "scene.png", "width": WIDTH, "height": HEIGHT, "sha256": sha}]
    assert coco["categories"] == [{"id": 1, "name": "ball", "supercategory": ""},
                                  {"id": 2, "name": "cone", "supercategory": ""},
                                  {"id": 3, "name": "crate", "supercategory": ""}]  # ids in the order labels joined the set
    for annotation, sent, category, mask in zip(coco["annotations"], (ball, crate, cone), (1, 3, 2), masks):
        assert annotation["category_id"] == category and annotation["image_id"] == 1 and annotation["iscrowd"] == 0
        assert annotation["segmentation"] == sent["segmentation"]
        assert (annotation["bbox"], annotation["area"], annotation["score"]) == (sent["bbox"], sent["area"], sent["score"])
        rle = {**annotation["segmentation"], "counts": annotation["segmentation"]["counts"].encode()}
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), mask)

    # One PNG per object, 255 on the mask.
    with page.expect_download() as download:
        page.click("#export-pngs")
    with zipfile.ZipFile(download.value.path()) as archive:
        assert archive.namelist() == ["001-ball.png", "002-crate.png", "003-cone.png"]
        for name, mask in zip(archive.namelist(), masks):
            png = Image.open(io.BytesIO(archive.read(name)))
            assert png.mode == "L"
            np.testing.assert_array_equal(np.asarray(png), mask.astype(np.uint8) * 255)

    # One label-index PNG: each pixel its label's category id, later objects on top.
    with page.expect_download() as download:
        page.click("#export-index")
    png = Image.open(download.value.path())
    expected = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    for category, mask in zip((1, 3, 2), masks):
        expected[mask] = category
    assert png.mode == "L"
    np.testing.assert_array_equal(np.asarray(png), expected)

    # The objects and the label survive a reload: the image reopens and finds them by its hash.
    page.reload()
    wait_until_prepared(page)
    page.wait_for_function("() => document.querySelectorAll('#objects li').length === 3")
    assert objects_in_list(page) == ["ball", "crate", "cone"]
    assert page.input_value("#label") == "cone"
    np.testing.assert_array_equal(read_layer(page, "objects-layer")[..., 3] > 0, masks[0] | masks[1] | masks[2])


def test_a_stale_answer_is_never_shown(start_app, scenes, page, tiny_sam):
    from server.models.sam1 import SamModel

    gate = ModelGate(SamModel(tiny_sam, "tiny"), opened=True)
    app = start_app(model=gate)
    frames = Frames(page)
    visit(page, app)
    page.evaluate("""() => {
        window.shownAnswers = [];
        const layer = document.getElementById('current-layer');
        new MutationObserver(() => window.shownAnswers.push(layer.dataset.answer))
            .observe(layer, {attributes: true, attributeFilter: ['data-answer']});
    }""")
    open_image(page, scenes[0])
    _, result1 = frames.ask(lambda: click_image(page, *BALL))
    assert_shows(page, result1)

    # A second click is held in the model; undo goes back to the first mask meanwhile.
    gate.opened.clear()
    gate.entered.clear()
    count = len(frames.sent)
    click_image(page, *CRATE)
    held = frames.sent_after(count)
    assert gate.entered.wait(20)
    page.keyboard.press("Control+z")
    gate.opened.set()
    late = frames.answer(held)
    assert late["type"] == "result"
    page.wait_for_timeout(200)
    assert page.get_attribute("#current-layer", "data-answer") == f"{result1['id']}:0"
    # It belongs to the step undone: redo shows it, without asking again.
    asked = len(frames.sent)
    page.keyboard.press("Control+Shift+z")
    assert_shows(page, late)
    assert len(frames.sent) == asked

    # A click on image A is held in the model while image B is opened.
    gate.opened.clear()
    gate.entered.clear()
    count = len(frames.sent)
    click_image(page, *CONE)
    on_a = frames.sent_after(count)
    assert gate.entered.wait(20)
    page.fill("#image-url", scenes[1])
    page.click("#load-url")
    gate.opened.set()
    wait_until_prepared(page)
    prepare_b = frames.sent[-1]
    b = frames.answer(prepare_b)["image"]
    assert prepare_b["image_url"] == scenes[1] and (b["width"], b["height"]) == (600, 400)
    assert page.get_attribute("#current-layer", "data-answer") == ""
    assert read_layer(page, "current-layer")[..., 3].max() == 0
    _, on_b = frames.ask(lambda: click_image(page, 150, 200))
    assert_shows(page, on_b)
    # A's request was admitted (its `queued` named it) and its record has ended; its answer was never drawn.
    a_id = next((m["id"] for m in frames.received if m.get("client_ref") == on_a["client_ref"] and m.get("id")), None)
    assert a_id is not None, "image A's request was never queued: nothing here tests its answer"
    assert wait_for(page, lambda: jobs.is_terminal(app.store.get(a_id)) or None), "image A's request never ended"
    page.wait_for_timeout(200)
    shown = page.evaluate("window.shownAnswers")
    assert shown and not any(s.startswith(a_id) for s in shown), "image A's answer was drawn"
    assert read_layer(page, "current-layer").shape[:2] == (400, 600)


def test_preparing_shows_the_time_it_takes(start_app, scenes, page, gate):
    app = start_app(model=gate)
    visit(page, app)
    page.fill("#image-url", scenes[1])
    page.click("#load-url")
    assert gate.entered.wait(20)
    page.wait_for_function("() => /^preparing… \\d+\\.\\d s$/.test(document.getElementById('progress').textContent)")
    first = float(page.inner_text("#progress").split()[1])
    page.wait_for_timeout(400)
    later = float(page.inner_text("#progress").split()[1])
    assert later >= first + 0.3
    gate.opened.set()
    wait_until_prepared(page)
    assert re.fullmatch(r"Prepared in \d+\.\d\d s: click the object\.", page.inner_text("#progress"))


def test_a_wrong_token_is_said_plainly_and_the_right_one_works(start_app, scenes, page):
    app = start_app(api_token="s3cret")
    frames = Frames(page)
    visit(page, app)
    page.wait_for_function("() => document.getElementById('connection').dataset.state === 'token'")
    assert page.inner_text("#connection") == "This server needs an API token: type it in the Token field."
    page.fill("#token", "wrong")
    page.press("#token", "Enter")
    page.wait_for_function("() => /refused/.test(document.getElementById('connection').textContent)")
    page.fill("#image-url", scenes[1])
    page.click("#load-url")
    page.wait_for_function("() => document.getElementById('connection').dataset.state === 'token'")
    assert page.inner_text("#connection") == "The server refused the API token: type the right one in the Token field."
    assert frames.sent == []  # refused at the upgrade: no socket
    page.fill("#token", "s3cret")
    page.press("#token", "Enter")
    wait_until_prepared(page)
    assert page.inner_text("#connection") == "Connected."
    # The token survives a reload.
    page.reload()
    assert page.input_value("#token") == "s3cret"
    wait_until_prepared(page)


def test_a_server_that_goes_away_is_said_gone_and_the_page_reconnects(start_app, scenes, page):
    app = start_app()
    port = app.port
    frames = Frames(page)
    visit(page, app)
    open_image(page, scenes[1])
    app.stop()
    page.wait_for_function("() => document.getElementById('connection').dataset.state === 'gone'")
    assert page.inner_text("#connection").startswith("The server is gone")
    start_app(port=port)
    page.wait_for_function("() => document.getElementById('connection').textContent === 'Connected.'", timeout=15_000)
    wait_until_prepared(page)
    assert_shows(page, frames.ask(lambda: click_image(page, 150, 200))[1])


def test_an_idle_session_and_a_forgotten_mask_are_picked_up_again(start_app, scenes, page):
    app = start_app(session_idle_seconds=1, mask_cache_size=1)
    frames = Frames(page)
    visit(page, app)
    open_image(page, scenes[1])
    page.wait_for_function("() => document.getElementById('connection').dataset.state === 'idle'")
    # The next click opens a new session, names the image by its hash, and gets its mask.
    request1, result1 = frames.ask(lambda: click_image(page, 150, 200))
    reprepared = frames.sent[-2]
    assert reprepared["prompts"] == [] and reprepared["image_sha256"] == request1["image_sha256"]
    frames.ask(lambda: click_image(page, 400, 300, shift=True))
    # The server keeps one mask: refining the first one again is refused, and the page asks without it.
    page.keyboard.press("Control+z")
    assert_shows(page, result1)
    request, result = frames.ask(lambda: click_image(page, 500, 100, shift=True))
    (refused,) = [m for m in frames.requests()
                  if m["prompts"][0].get("mask_input") == {"id": result1["id"], "index": 0}
                  and m["prompts"][0]["points"] == request["prompts"][0]["points"]]
    assert frames.answer(refused)["code"] == "mask_unknown"
    assert "mask_input" not in request["prompts"][0] and request["prompts"][0]["points"] == refused["prompts"][0]["points"]
    assert_shows(page, result)
    assert page.inner_text("#error") == ""


def test_a_local_file_is_sent_as_a_data_url(start_app, page, tmp_path):
    app = start_app()
    frames = Frames(page)
    path = tmp_path / "scene.png"
    path.write_bytes(scene_png(600, 400))
    visit(page, app)
    page.set_input_files("#image-file", path)
    wait_until_prepared(page)
    (prepare,) = frames.sent
    assert prepare["image_url"] == "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    request, result = frames.ask(lambda: click_image(page, 150, 200))
    assert "image_url" not in request
    assert_shows(page, result)
    # A reload cannot reopen a file; it says how to go on.
    page.reload()
    page.wait_for_function("() => document.getElementById('progress').textContent !== ''")
    assert page.inner_text("#progress") == "Open scene.png again to go on with its objects."


def test_an_image_the_server_cannot_download_shows_the_servers_sentence(start_app, image_server, page):
    app = start_app()
    frames = Frames(page)
    # The browser sees an image at this URL; the image server answers CAP with a 404.
    missing = image_server.url("/only-the-browser-sees-this.png")
    page.route(missing, lambda route: route.fulfill(body=scene_png(600, 400), content_type="image/png"))
    visit(page, app)
    page.fill("#image-url", missing)
    page.click("#load-url")
    error = frames.answer(frames.sent_after(0))
    assert error["type"] == "error" and error["code"] == "image_download_failed" and "404" in error["message"]
    page.wait_for_function("() => document.getElementById('error').textContent !== ''")
    assert page.inner_text("#error") == error["message"]


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
    visit(page, app)
    masks = rle_cases()
    encoded = []
    for mask in masks:
        rle = mask_utils.encode(np.asfortranarray(mask))
        encoded.append({"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()})
    decoded = page.evaluate("""async cases => {
        const {decodeRle} = await import('/page/rle.js');
        return cases.map(rle => decodeRle(rle).join(''));  // "0110..."
    }""", encoded)
    for mask, rle, text in zip(masks, encoded, decoded):
        from_page = (np.frombuffer(text.encode(), dtype=np.uint8) - ord("0")).reshape(mask.shape)
        np.testing.assert_array_equal(from_page, mask_utils.decode({**rle, "counts": rle["counts"].encode()}))
        np.testing.assert_array_equal(from_page, mask)
    bad = {"size": [3, 3], "counts": encoded[0]["counts"]}  # counts for 5x7 pixels
    message = page.evaluate("""async rle => {
        const {decodeRle} = await import('/page/rle.js');
        try { decodeRle(rle); } catch (e) { return e.message; }
    }""", bad)
    assert "not 3x3" in message


def test_everything_gives_unlabelled_objects_to_accept_label_or_delete(start_app, scenes, page, tmp_path):
    app = start_app()
    frames = Frames(page)
    visit(page, app)
    open_image(page, scenes[1])
    parameters = {"points_per_side": 4, "pred_iou_thresh": 0, "stability_score_thresh": 0, "box_nms_thresh": 1.0}
    page.fill("#everything-parameters", json.dumps(parameters))
    page.click("#everything")
    request = wait_for(page, lambda: next((m for m in frames.sent if "everything" in m), None))
    assert request["everything"] == parameters and request["image_sha256"] and "prompts" not in request
    result = frames.answer(request)
    assert result["type"] == "result" and len(result["masks"]) == 48
    assert any(m["type"] == "progress" and m["client_ref"] == request["client_ref"] for m in frames.received)
    page.wait_for_function("() => /^Everything in/.test(document.getElementById('progress').textContent)")
    assert objects_in_list(page) == [""] * 48  # unlabelled, as they came
    alpha = read_layer(page, "objects-layer")[..., 3]
    union = np.logical_or.reduce([decode(m["segmentation"]) for m in result["masks"]])
    np.testing.assert_array_equal(alpha > 0, union)

    # Accept the first with the label typed; label the second in its row; delete the third.
    page.fill("#label", "stone")
    page.locator("#objects li").nth(0).get_by_role("button", name="accept").click()
    page.locator("#objects li .name").nth(1).fill("tree")
    page.locator("#objects li .name").nth(1).press("Enter")
    page.locator("#objects li").nth(2).get_by_role("button", name="delete").click()
    assert objects_in_list(page)[:2] == ["stone", "tree"] and len(objects_in_list(page)) == 47
    assert page.locator("#objects li.proposed").count() == 45

    # Only the objects a person accepted are exported.
    with page.expect_download() as download:
        page.click("#export-coco")
    coco = json.loads(Path(download.value.path()).read_text())
    assert [c["name"] for c in coco["categories"]] == ["stone", "tree"] and len(coco["annotations"]) == 2
    assert app.store.get(result["id"])["everything"] == parameters
