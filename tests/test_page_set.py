"""The page as a labelling tool: accepts never lost, a label set with stable
ids, polygons traced at export, refused images said plainly.

Same browser, server and helpers as tests/test_page.py; the masks are the tiny
random-weight model's, so the checks compare with what the server sent.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from harness.client import exchange
from tests.conftest import ModelGate, ws_url
from tests.support.mask_shapes import filled, rasterised
from tests.test_page import (  # noqa: F401  (browser and page are fixtures)
    ARTIFACTS,
    BALL,
    CRATE,
    GRASS,
    HEIGHT,
    WIDTH,
    Frames,
    assert_shows,
    browser,
    candidates,
    click_image,
    decode,
    on_screen,
    open_image,
    page,
    read_layer,
    rle_cases,
    scene_png,
    scenes,
    shown_mask,
    view_transform,
    visit,
    wait_for,
    wait_until_prepared,
)

LABELS = "ball\ncrate\ncone\n"
SELECTED_EXTRA = 80  # the page's: a selected object's fill is this much stronger


def import_labels(page, tmp_path: Path) -> None:
    """Import LABELS from a list file: ball 1, crate 2, cone 3."""
    listed = tmp_path / "labels.txt"
    listed.write_text(LABELS)
    page.set_input_files("#import-labels", listed)
    page.wait_for_function("() => document.querySelectorAll('#label-set li').length === 3")


def objects_in_list(page) -> list[str]:
    return page.eval_on_selector_all("#objects li .name", "inputs => inputs.map(input => input.value)")


def full_size(frames: Frames, result: dict) -> dict:
    """The mask of `result` at full size: as the page got it again once accepted (`render`) when it was asked at
    the canvas's size, or itself when the canvas shows the image at full size or more."""
    if "mask_scale" not in result:
        return candidates(result)[0]
    mask = candidates(frames.rendered(result)[1])[0]
    assert mask["segmentation"]["size"] != candidates(result)[0]["segmentation"]["size"]
    return mask


def assert_objects_become(page, expected: np.ndarray) -> None:
    """The objects layer comes to hold exactly `expected` (a full-size mask replaces the canvas-sized one when it comes)."""
    wait_for(page, lambda: True if np.array_equal(read_layer(page, "objects-layer")[..., 3] > 0, expected) else None)


def export_coco(page) -> dict:
    with page.expect_download() as download:
        page.click("#export-coco")
    return json.loads(Path(download.value.path()).read_text())


def test_enter_while_segmenting_accepts_the_mask_when_it_arrives(start_app, scenes, page, tiny_sam):
    from server.models.sam1 import SamModel

    gate = ModelGate(SamModel(tiny_sam, "tiny"), opened=True)
    app = start_app(model=gate)
    frames = Frames(page)
    visit(page, app)
    open_image(page, scenes[0])
    gate.opened.clear()
    gate.entered.clear()
    count = len(frames.sent)
    click_image(page, *BALL)
    held = frames.sent_after(count)
    assert gate.entered.wait(20)
    page.fill("#label", "ball")
    page.press("#label", "Enter")  # the mask is still in the model
    assert page.inner_text("#candidate") == "accepting as the mask arrives…"
    click_image(page, *CRATE)  # held off: the prompt stays until the accept is done
    gate.opened.set()
    result = frames.answer(held)
    page.wait_for_function("() => document.querySelectorAll('#objects li').length === 1", timeout=5000)
    assert objects_in_list(page) == ["ball"]
    assert_objects_become(page, decode(full_size(frames, result)["segmentation"]))
    assert [m["client_ref"] for m in frames.requests()] == [held["client_ref"]]


def test_polygons_are_traced_at_export_whenever_they_are_ticked(start_app, scenes, page):
    app = start_app()
    frames = Frames(page)
    visit(page, app)
    open_image(page, scenes[0])
    request, result = frames.ask(lambda: click_image(page, *BALL))
    assert request["output"] == ["rle"]
    page.keyboard.press("Enter")
    full = decode(full_size(frames, result)["segmentation"])
    assert_objects_become(page, full)
    page.check("#polygons")  # after the mask came
    (annotation,) = export_coco(page)["annotations"]
    rings = annotation["segmentation"]
    assert isinstance(rings, list) and rings
    np.testing.assert_array_equal(rasterised(rings, HEIGHT, WIDTH), filled(full))


def test_the_pages_polygons_rasterise_to_the_filled_mask(start_app, page):
    app = start_app()
    visit(page, app)
    random = np.random.default_rng(3)
    masks = rle_cases() + [random.random((40, 60)) < density for density in (0.1, 0.5, 0.9)]
    ring = np.zeros((9, 9), np.uint8)
    ring[2:7, 2:7], ring[4, 4] = 1, 0  # a hole
    masks.append(ring)
    traced = page.evaluate("""async masks => {
        const {outerRings} = await import('/page/polygons.js');
        return masks.map(({pixels, width, height}) => outerRings(Uint8Array.from(pixels), width, height));
    }""", [{"pixels": m.astype(np.uint8).ravel().tolist(), "width": m.shape[1], "height": m.shape[0]} for m in masks])
    for mask, rings in zip(masks, traced):
        np.testing.assert_array_equal(rasterised(rings, *mask.shape), filled(mask.astype(bool)))
        assert all(len(r) >= 8 and len(r) % 2 == 0 for r in rings)


def test_the_label_set_gives_stable_ids_and_the_digit_keys_pick_labels(start_app, scenes, page, tmp_path):
    app = start_app()
    frames = Frames(page)
    visit(page, app)
    import_labels(page, tmp_path)
    open_image(page, scenes[0])
    page.locator("#stage").focus()
    page.keyboard.press("2")
    assert page.input_value("#label") == "crate"
    frames.ask(lambda: click_image(page, *CRATE))
    page.keyboard.press("Enter")
    coco = export_coco(page)
    assert coco["categories"] == [{"id": 1, "name": "ball", "supercategory": ""},
                                  {"id": 2, "name": "crate", "supercategory": ""},
                                  {"id": 3, "name": "cone", "supercategory": ""}]
    assert [a["category_id"] for a in coco["annotations"]] == [2]
    # A label typed for an object joins the set with the next id; the others keep theirs.
    page.fill("#label", "sky")
    frames.ask(lambda: click_image(page, 100, 100))
    page.press("#label", "Enter")
    assert [a["category_id"] for a in export_coco(page)["annotations"]] == [2, 4]
    # The ids stay on another image, and after a reload.
    page.reload()
    open_image(page, scenes[1])
    page.locator("#stage").focus()
    page.keyboard.press("1")
    frames.ask(lambda: click_image(page, 150, 200))
    page.keyboard.press("Enter")
    coco = export_coco(page)
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4]
    (small,) = [image["id"] for image in coco["images"] if image["file_name"] == "small-scene.png"]
    assert [a["category_id"] for a in coco["annotations"] if a["image_id"] == small] == [1]


def test_a_refused_image_is_not_shown_and_the_error_says_what_to_do(start_app, scenes, page):
    app = start_app(max_image_pixels=500_000)
    frames = Frames(page)
    visit(page, app)
    page.fill("#image-url", scenes[0])  # 1200x800: 0.96 Mpx
    page.click("#load-url")
    error = frames.answer(frames.sent_after(0))
    assert error["code"] == "image_too_large"
    sentence = "0.96 Mpx is over this server's 0.5 Mpx limit: scale the image down."
    page.wait_for_function("() => document.getElementById('error').textContent !== ''")
    assert page.inner_text("#error") == sentence and page.inner_text("#hint") == sentence
    page.wait_for_timeout(300)
    box = page.locator("#view").bounding_box()
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=box))).convert("RGB"))
    assert (shot == (58, 63, 68)).all(axis=2).mean() > 0.99, "the refused image is still drawn"
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_timeout(300)
    assert frames.requests() == []


def test_the_favicon_is_served_and_the_console_stays_clean(start_app, scenes, page):
    app = start_app()
    errors, failed = [], []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
    with page.expect_response(lambda response: response.url.endswith("/page/favicon.svg")) as icon:
        visit(page, app)
    assert icon.value.status == 200 and icon.value.headers["content-type"] == "image/svg+xml"
    open_image(page, scenes[1])
    page.wait_for_timeout(300)
    assert errors == [] and failed == []


# --- the image set ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def three(image_server):
    """Three different images on the image server."""
    for name, size in [("one.png", (1200, 800)), ("two.png", (600, 400)), ("three.png", (900, 600))]:
        image_server.add(f"/set/{name}", scene_png(*size))
    return [image_server.url(f"/set/{name}") for name in ("one.png", "two.png", "three.png")]


def move(page, key: str, name: str) -> None:
    """Press F or D, and wait until the image `name` can be clicked."""
    page.locator("#stage").focus()
    page.keyboard.press(key)
    page.wait_for_function(f"() => document.getElementById('stage').dataset.ready === {json.dumps(name)}")


def set_items(page) -> list[str]:
    return page.eval_on_selector_all("#image-set li", "items => items.map(item => item.textContent)")


def prepared_of(frames: Frames, url: str) -> dict:
    """The result of the request that sent the image at `url` with no prompts."""
    sent = wait_for(frames.page, lambda: next((m for m in frames.sent if m.get("image_url") == url and m["prompts"] == []), None))
    return frames.answer(sent)


def test_a_set_of_images_moves_with_f_and_d_and_the_next_one_is_prepared_ahead(start_app, three, page, tmp_path):
    app = start_app()
    frames = Frames(page)
    visit(page, app)
    import_labels(page, tmp_path)
    page.fill("#image-url", " ".join(three))
    page.click("#load-url")
    wait_until_prepared(page)
    assert len(set_items(page)) == 3 and page.inner_text("#image-position") == "1 of 3"
    # While the first is worked on, the second is sent with no prompts, on a session of its own.
    ahead = wait_for(page, lambda: next((m for m in frames.received if m.get("type") == "result"
                                         and m.get("image", {}).get("width") == 600), None))
    assert ahead["masks"] == [] and ahead["cached_embedding"] is False
    page.wait_for_function("() => !/not prepared/.test(document.querySelectorAll('#image-set li')[1].textContent)")
    assert not any(m.get("image_url") == three[2] for m in frames.sent)  # only the next one

    # Label with the keys, zoom, and move on with F.
    page.locator("#stage").focus()
    page.keyboard.press("1")
    _, ball = frames.ask(lambda: click_image(page, *BALL))
    page.keyboard.press("Enter")
    page.mouse.move(*on_screen(page, 600, 400))
    page.mouse.wheel(0, -300)
    page.wait_for_timeout(100)
    zoomed = view_transform(page)[:3]
    count = len(frames.sent)
    move(page, "f", "two.png")
    assert page.inner_text("#image-position") == "2 of 3" and objects_in_list(page) == []
    reprepare = frames.sent[count]  # the second image, named by its hash
    assert reprepare["prompts"] == [] and reprepare.get("image_sha256") == ahead["image"]["sha256"]
    assert frames.answer(reprepare)["cached_embedding"] is True
    assert prepared_of(frames, three[2])["masks"] == []  # now the third is prepared ahead
    # Its first click finds the embedding cached: the encoder does not run for it.
    request, result = frames.ask(lambda: click_image(page, 150, 200))
    assert result["cached_embedding"] is True
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    assert objects_in_list(page) == ["crate"]

    # D goes back: the first image's objects, view and history are its own.
    move(page, "d", "one.png")
    page.wait_for_function("() => document.querySelectorAll('#objects li').length === 1")
    assert objects_in_list(page) == ["ball"] and view_transform(page)[:3] == zoomed
    assert_objects_become(page, decode(full_size(frames, ball)["segmentation"]))
    page.keyboard.press("Control+z")
    assert objects_in_list(page) == []
    page.keyboard.press("Control+Shift+z")
    items = set_items(page)
    assert "1 object" in items[0] and "1 object" in items[1] and "no objects" in items[2]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "page-set.png")


def open_set(page, urls: list[str]) -> None:
    page.fill("#image-url", " ".join(urls))
    page.click("#load-url")
    wait_until_prepared(page)


def label_one(page, frames: Frames, key: str, where: tuple[float, float]) -> dict:
    """Pick a label with its key, click, accept: the full-size mask the server then sent, and the page shows."""
    page.locator("#stage").focus()
    page.keyboard.press(key)
    _, result = frames.ask(lambda: click_image(page, *where))
    count = page.locator("#objects li").count()
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => document.querySelectorAll('#objects li').length === {count + 1}")
    mask = full_size(frames, result)
    assert_objects_become(page, decode(mask["segmentation"]))
    return mask


def download_of(page, button: str):
    with page.expect_download() as download:
        page.click(button)
    return download.value


def test_the_sets_exports_decode_against_the_servers_masks_and_a_coco_file_imports_back(
    start_app, three, page, browser, tmp_path
):
    app = start_app()
    frames = Frames(page)
    visit(page, app)
    import_labels(page, tmp_path)
    open_set(page, three)
    ball = label_one(page, frames, "1", BALL)
    move(page, "f", "two.png")
    crate = label_one(page, frames, "2", (300, 200))
    page.wait_for_function("() => !/not prepared/.test(document.querySelectorAll('#image-set li')[2].textContent)")

    coco_file = download_of(page, "#export-coco")
    assert coco_file.suggested_filename == "images.coco.json"
    coco = json.loads(Path(coco_file.path()).read_text())
    assert [(i["id"], i["file_name"], i["width"], i["height"]) for i in coco["images"]] == [
        (1, "one.png", 1200, 800), (2, "two.png", 600, 400), (3, "three.png", 900, 600)]
    assert [(a["id"], a["image_id"], a["category_id"]) for a in coco["annotations"]] == [(1, 1, 1), (2, 2, 2)]
    for annotation, sent in zip(coco["annotations"], (ball, crate)):
        image = coco["images"][annotation["image_id"] - 1]
        rle = {**annotation["segmentation"], "counts": annotation["segmentation"]["counts"].encode()}
        assert tuple(rle["size"]) == (image["height"], image["width"])
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), decode(sent["segmentation"]))

    with zipfile.ZipFile(download_of(page, "#export-pngs").path()) as archive:
        assert archive.namelist() == ["one/001-ball.png", "two/001-crate.png"]
        for name, sent in zip(archive.namelist(), (ball, crate)):
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(archive.read(name)))) == 255, decode(sent["segmentation"]))
    with zipfile.ZipFile(download_of(page, "#export-index").path()) as archive:
        assert archive.namelist() == ["one.labels.png", "two.labels.png", "three.labels.png"]
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(archive.read("two.labels.png")))),
                                      decode(crate["segmentation"]).astype(np.uint8) * 2)

    # Another browser, nothing kept: the same images, then the COCO file, bring the objects back.
    context = browser.new_context(viewport={"width": 1000, "height": 760}, accept_downloads=True)
    try:
        other = context.new_page()
        visit(other, app)
        open_set(other, three)
        other.set_input_files("#import-coco", coco_file.path())
        other.wait_for_function("() => document.querySelectorAll('#objects li').length === 1")
        assert objects_in_list(other) == ["ball"]
        np.testing.assert_array_equal(read_layer(other, "objects-layer")[..., 3] > 0, decode(ball["segmentation"]))
        move(other, "f", "two.png")
        assert objects_in_list(other) == ["crate"]
        again = json.loads(Path(download_of(other, "#export-coco").path()).read_text())
        assert again["categories"] == coco["categories"]
        assert [a["segmentation"] for a in again["annotations"]] == [a["segmentation"] for a in coco["annotations"]]
    finally:
        context.close()


def test_a_reload_brings_the_set_back_and_files_opened_again_find_their_objects(start_app, page, tmp_path):
    app = start_app()
    frames = Frames(page)
    files, folder = [], tmp_path / "set"
    folder.mkdir()
    for name, size in [("a.png", (1200, 800)), ("b.png", (600, 400)), ("c.png", (900, 600))]:  # opened in name order
        files.append(folder / name)
        files[-1].write_bytes(scene_png(*size))
    visit(page, app)
    import_labels(page, tmp_path)
    page.set_input_files("#image-file", files)
    wait_until_prepared(page)
    ball = label_one(page, frames, "1", BALL)
    move(page, "f", "b.png")
    crate = label_one(page, frames, "2", (300, 200))
    page.locator("#image-set li").nth(1).get_by_role("checkbox").check()
    page.wait_for_timeout(200)
    assert page.evaluate("Object.keys(localStorage).filter(key => /object/.test(key))") == []  # kept in IndexedDB

    page.reload()
    page.wait_for_function("() => document.querySelectorAll('#image-set li').length === 3")
    kept = page.evaluate("""() => new Promise((resolve) => {
        const open = indexedDB.open("cap");
        open.onsuccess = () => {
            const all = open.result.transaction("objects").objectStore("objects").getAll();
            all.onsuccess = () => resolve(all.result.map((objects) => objects.map((o) => o.mask.segmentation)));
        };
    })""")  # IndexedDB keeps the full-size masks, not the ones drawn at the canvas's size
    assert sorted(kept, key=lambda objects: -objects[0]["size"][0]) == [[ball["segmentation"]], [crate["segmentation"]]]
    page.wait_for_function("() => document.getElementById('progress').textContent !== ''")
    assert page.inner_text("#progress") == "Open b.png again to go on with its objects."
    items = set_items(page)
    assert "1 object" in items[0] and "done" in page.get_attribute("#image-set li >> nth=1", "class")
    assert "1 object" in items[1] and "no objects" in items[2]

    # Their folder opened again: each image finds its objects.
    page.set_input_files("#image-folder", folder)
    wait_until_prepared(page)
    page.wait_for_function("() => document.querySelectorAll('#objects li').length === 1")
    assert page.inner_text("#image-position") == "1 of 3" and objects_in_list(page) == ["ball"]
    np.testing.assert_array_equal(read_layer(page, "objects-layer")[..., 3] > 0, decode(ball["segmentation"]))
    move(page, "f", "b.png")
    page.wait_for_function("() => document.querySelectorAll('#objects li').length === 1")
    np.testing.assert_array_equal(read_layer(page, "objects-layer")[..., 3] > 0, decode(crate["segmentation"]))

    # A copy under another name is the same image: its hash finds the objects.
    renamed = tmp_path / "renamed.png"
    renamed.write_bytes(files[1].read_bytes())
    page.set_input_files("#image-file", renamed)
    page.wait_for_function("() => document.getElementById('stage').dataset.ready === 'renamed.png'")
    page.wait_for_function("() => document.querySelectorAll('#objects li').length === 1")
    assert page.inner_text("#image-position") == "4 of 4" and objects_in_list(page) == ["crate"]


# --- editing a mask --------------------------------------------------------------------


def test_the_pages_rle_encoder_writes_what_pycocotools_writes(start_app, page):
    app = start_app()
    visit(page, app)
    masks = rle_cases()
    written = page.evaluate("""async masks => {
        const {encodeRle} = await import('/page/rle.js');
        return masks.map(({pixels, width, height}) => encodeRle(Uint8Array.from(pixels), width, height));
    }""", [{"pixels": m.ravel().tolist(), "width": m.shape[1], "height": m.shape[0]} for m in masks])
    for mask, segmentation in zip(masks, written):
        rle = mask_utils.encode(np.asfortranarray(mask))
        assert segmentation == {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


def objects_alpha(page) -> np.ndarray:
    return read_layer(page, "objects-layer")[..., 3]


def drag_on(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*on_screen(page, *start))
    page.mouse.down()
    page.mouse.move(*on_screen(page, *end), steps=8)
    page.mouse.up()


def test_an_object_is_refined_with_clicks_and_edited_with_brush_and_eraser_and_undo_takes_each_back(start_app, scenes, page):
    app = start_app()
    frames = Frames(page)
    visit(page, app)
    open_image(page, scenes[0])
    _, first = frames.ask(lambda: click_image(page, *BALL))
    page.keyboard.press("Enter")
    original = decode(full_size(frames, first)["segmentation"])
    assert_objects_become(page, original)

    # R: the object's prompt comes back with its mask; a click refines that mask on the server.
    page.keyboard.press("r")
    page.wait_for_function(f"() => document.getElementById('current-layer').dataset.answer === '{first['id']}:0'")
    request, second = frames.ask(lambda: click_image(page, *GRASS, shift=True))
    assert request["prompts"][0]["mask_input"] == {"id": first["id"], "index": 0}
    assert len(request["prompts"][0]["points"]) == 2
    page.keyboard.press("Enter")
    assert objects_in_list(page) == ["object"]
    refined = decode(full_size(frames, second)["segmentation"])
    assert_objects_become(page, refined)  # the brush waits for it

    # B: the brush adds pixels along the drag; E: the eraser takes them away.
    page.keyboard.press("b")
    drag_on(page, (560, 100), (760, 130))
    page.wait_for_function("() => document.getElementById('undo').disabled === false")
    brushed = wait_for(page, lambda: (lambda a: a if (a[100:131, 560:761] > 0).any() and not np.array_equal(a > 0, refined) else None)(objects_alpha(page) > 0))
    assert (brushed | refined == brushed).all() and brushed[100, 560] and brushed[130, 760] and brushed[115, 660]
    page.keyboard.press("e")
    drag_on(page, (560, 115), (760, 115))
    page.wait_for_timeout(100)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "page-edited.png")  # the eraser's stroke across the mask
    erased = objects_alpha(page) > 0
    assert not erased[115, 560:761].any() and (erased | brushed == brushed).all()

    # The COCO file holds the edited mask, encoded as pycocotools encodes it, with its area and box.
    (annotation,) = export_coco(page)["annotations"]
    rle = {**annotation["segmentation"], "counts": annotation["segmentation"]["counts"].encode()}
    np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), erased)
    assert annotation["area"] == int(erased.sum()) and annotation["bbox"] == mask_utils.toBbox(rle).tolist()

    # Undo takes back the eraser, the brush, the refinement (its accept, its click, its start); redo brings them again.
    for expected in (brushed, refined):
        page.keyboard.press("Control+z")
        page.wait_for_timeout(50)
        np.testing.assert_array_equal(objects_alpha(page) > 0, expected)
    page.keyboard.press("Control+z")  # refining again: the object is the current mask, at full size
    np.testing.assert_array_equal(shown_mask(page, second) > 0, refined)
    assert objects_alpha(page).max() == 0
    page.keyboard.press("Control+z")
    np.testing.assert_array_equal(shown_mask(page, first) > 0, original)
    page.keyboard.press("Control+z")
    page.wait_for_timeout(50)
    np.testing.assert_array_equal(objects_alpha(page) > 0, original)
    for _ in range(5):
        page.keyboard.press("Control+Shift+z")
    page.wait_for_timeout(50)
    np.testing.assert_array_equal(objects_alpha(page) > 0, erased)

    # Display: no fill with outlines leaves the edges opaque (the selected object keeps a light fill); A hides all.
    page.keyboard.press("Escape")
    page.locator("#opacity").fill("0")
    page.check("#outlines")
    alpha = objects_alpha(page)
    padded = np.pad(erased, 1)  # off the image is off the mask: pixels on the image's border are edges
    inside = erased & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    assert (alpha[inside] == SELECTED_EXTRA).all() and (alpha[erased & ~inside] == 255).all() and not alpha[~erased].any()
    page.locator("#stage").focus()
    page.keyboard.press("a")
    page.wait_for_timeout(50)
    assert objects_alpha(page).max() == 0


def test_objects_an_earlier_page_kept_in_local_storage_move_to_indexeddb(start_app, scenes, page):
    app = start_app()
    frames = Frames(page)
    visit(page, app)
    open_image(page, scenes[0])
    request, result = frames.ask(lambda: click_image(page, *BALL))
    # The earlier page asked every mask at full size.
    mask = candidates(exchange(ws_url(app), {"image_sha256": request["image_sha256"], "prompts": request["prompts"]}).last)[0]
    old = [{"id": "old-1", "label": "ball", "colour": 0, "hidden": False, "request": result["id"],
            "mask": {k: mask[k] for k in ("segmentation", "area", "bbox", "score")}}]
    page.evaluate("([key, objects]) => localStorage.setItem(key, JSON.stringify(objects))",
                  [f"cap.objects.{result['image']['sha256']}", old])
    page.reload()
    wait_until_prepared(page)
    page.wait_for_function("() => document.querySelectorAll('#objects li').length === 1")
    assert objects_in_list(page) == ["ball"]
    np.testing.assert_array_equal(read_layer(page, "objects-layer")[..., 3] > 0, decode(mask["segmentation"]))
    assert page.evaluate("Object.keys(localStorage).filter(key => key.startsWith('cap.objects.'))") == []


def test_an_object_is_edited_and_exported_only_once_its_full_size_mask_has_come(start_app, scenes, page):
    """Until an accepted object's full-size mask comes (`render`), the brush, the eraser, R and the exports
    refuse, saying why: its canvas-sized mask would be replaced when that comes, and an edit lost."""
    app = start_app()
    held, routes = [], {}

    def route(ws) -> None:  # the page's render requests are held here until the test lets them go
        server = routes["server"] = ws.connect_to_server()
        ws.on_message(lambda message: held.append(message) if '"render"' in str(message) else server.send(message))

    page.route_web_socket(lambda url: True, route)
    frames = Frames(page)
    visit(page, app)
    open_image(page, scenes[0])
    _, result = frames.ask(lambda: click_image(page, *BALL))
    assert "mask_scale" in result
    page.keyboard.press("Enter")
    wait_for(page, lambda: held or None)
    small = objects_alpha(page) > 0
    waiting = "This object's full-size mask is still on its way: edit it in a moment."

    page.keyboard.press("b")
    drag_on(page, (560, 100), (760, 130))
    page.wait_for_timeout(100)
    assert page.inner_text("#error") == waiting
    np.testing.assert_array_equal(objects_alpha(page) > 0, small)
    page.keyboard.press("Escape")
    page.keyboard.press("r")
    page.wait_for_timeout(100)
    assert page.get_attribute("#current-layer", "data-answer") == ""  # not refining
    page.click("#export-coco")
    page.wait_for_function("() => /still on their way/.test(document.getElementById('error').textContent)")
    assert page.inner_text("#error") == "Full-size masks are still on their way for scene.png: export again in a moment."

    routes["server"].send(held[0])  # the full-size mask comes: it replaces the small one, and the export has it
    full = decode(full_size(frames, result)["segmentation"])
    assert_objects_become(page, full)
    (annotation,) = export_coco(page)["annotations"]
    rle = {**annotation["segmentation"], "counts": annotation["segmentation"]["counts"].encode()}
    np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), full)
