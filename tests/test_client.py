"""`python -m server.client`: its pure helpers, and the command against a real server."""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from harness import image_files as files
from harness.ports import free_port
from harness.processes import server_env
from server import client
from tests.conftest import ws_url

REPO = Path(__file__).resolve().parent.parent


def run_client(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, "-m", "server.client", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def rle(mask: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode()}


def decode(segmentation: dict) -> np.ndarray:
    return mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()}).astype(bool)


def pixels_of(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# --- pure helpers -------------------------------------------------------------------


def test_parse_box():
    assert client.parse_box("10,20,30.5,40") == {"x": 10, "y": 20, "width": 30.5, "height": 40}
    for bad in ["10,20,30", "a,b,c,d", "1,2,3,4,5", "1,2,0,4", "1,2,3,-4"]:
        with pytest.raises(argparse.ArgumentTypeError):
            client.parse_box(bad)


def test_media_type_from_the_first_bytes():
    webp = io.BytesIO()
    Image.new("RGB", (4, 4)).save(webp, "WEBP")
    assert client.media_type(files.png_rgb(4, 4)) == "image/png"
    assert client.media_type(files.jpeg_rgb(4, 4)) == "image/jpeg"
    assert client.media_type(webp.getvalue()) == "image/webp"
    assert client.media_type(b"GIF89a....") is None
    assert client.media_type(b"") is None


def test_data_url_holds_the_exact_bytes():
    data = files.jpeg_rgb(8, 8)
    url = client.data_url(data)
    assert url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.partition(",")[2]) == data
    with pytest.raises(ValueError):
        client.data_url(files.html_page())


def test_overlay_blends_each_mask_in_its_colour_and_outlines_its_box():
    pixels = files.rgb_pattern(40, 30)
    first = np.zeros((30, 40), dtype=bool)
    first[5:15, 5:15] = True
    second = np.zeros((30, 40), dtype=bool)
    second[10:25, 20:35] = True
    result = {
        "image": {"width": 40, "height": 30},
        "masks": [
            {"box": {"x": 2, "y": 2, "width": 16, "height": 16}, "score": 0.9, "area": 100, "segmentation": rle(first)},
            [  # multimask: the best-scoring candidate is drawn
                {"box": {"x": 18, "y": 8, "width": 20, "height": 20}, "score": 0.1, "segmentation": rle(~second)},
                {"box": {"x": 18, "y": 8, "width": 20, "height": 20}, "score": 0.8, "segmentation": rle(second)},
            ],
        ],
    }
    out = np.asarray(client.overlay(pixels, result)).astype(int)
    outline = np.zeros((30, 40), dtype=bool)
    for x, y, w, h in [(2, 2, 16, 16), (18, 8, 20, 20)]:
        outline[y : y + h, x : x + w] = True
        outline[y + 2 : y + h - 2, x + 2 : x + w - 2] = False  # a 2-pixel outline
    for mask, colour in [(first, client.COLOURS[0]), (second, client.COLOURS[1])]:
        inside = mask & ~outline
        expected = np.round(0.5 * pixels[inside] + 0.5 * np.array(colour))
        np.testing.assert_array_equal(out[inside], expected)
    untouched = ~(first | second | outline)
    np.testing.assert_array_equal(out[untouched], pixels[untouched])
    assert (out[outline & ~second & ~first] == client.COLOURS[0]).all(axis=1).any()


def test_overlay_refuses_an_image_of_another_size():
    with pytest.raises(ValueError, match="40x30"):
        client.overlay(files.rgb_pattern(20, 10), {"image": {"width": 40, "height": 30}, "masks": []})


def test_describe_result_lists_boxes_scores_and_timings():
    mask = {"box": {"x": 1, "y": 2, "width": 3, "height": 4}, "score": 0.91234, "area": 7}
    lines = client.describe_result(
        {"image": {"width": 64, "height": 48}, "masks": [mask, [mask, dict(mask, score=0.5)]],
         "timings": {"queue_ms": 1.234, "total_ms": 99.0}}
    )
    assert lines == [
        "result: 2 masks for the 64x48 image",
        "  box 1 x=1 y=2 w=3 h=4: score 0.912 (area 7 px)",
        "  box 2 x=1 y=2 w=3 h=4: score 0.912 (area 7 px), 0.500 (area 7 px)",
        "timings: queue 1.2 ms, total 99.0 ms",
    ]


def test_describe_result_says_which_masks_came_without_their_polygons():
    prompt = {"points": [{"x": 1, "y": 2, "label": 1}]}
    kept = {"prompt": prompt, "score": 0.5, "area": 7, "polygons": [[1, 2, 3, 2, 3, 4]]}
    omitted = {"prompt": prompt, "score": 0.25, "area": 9, "polygons_omitted": True}  # past MAX_POLYGON_VERTICES
    lines = client.describe_result(
        {"image": {"width": 64, "height": 48}, "masks": [[kept, omitted, omitted]], "timings": {"total_ms": 5.0}}
    )
    assert lines[1].endswith(", 1 polygon ring (2 masks without: too many vertices)")


# --- the command against a real server ----------------------------------------------


def test_an_image_url_gives_an_overlay_and_the_result(start_app, image_server, tmp_path):
    app = start_app()
    out, result_path = tmp_path / "overlay.png", tmp_path / "result.json"
    done = run_client(ws_url(app), "--image", image_server.url("/photo.jpg"), "--box", "10,20,100,80",
                      "--box", "150,100,120,90", "--out", str(out), "--json", str(result_path))
    assert done.returncode == client.EXIT_OK, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("queued: position 1 (id ") and lines[1] == "processing"
    assert lines[2] == "result: 2 masks for the 320x240 image"
    assert lines[3].startswith("  box 1 x=10 y=20 w=100 h=80: score ")
    assert lines[5].startswith("timings: queue ") and lines[5].endswith(" ms") and " total " in lines[5]
    assert lines[6:] == [f"wrote {result_path}", f"wrote {out}"]

    result = json.loads(result_path.read_text())
    assert result["type"] == "result" and len(result["masks"]) == 2
    overlay = Image.open(out)
    assert (overlay.format, overlay.size) == ("PNG", (320, 240))
    # Away from the masks and the box outlines, the overlay is the image itself.
    covered = decode(result["masks"][0]["segmentation"]) | decode(result["masks"][1]["segmentation"])
    covered[18:102, 8:112] = covered[98:192, 148:272] = True  # the boxes, outlines included
    image = pixels_of(files.jpeg_rgb(320, 240))
    np.testing.assert_array_equal(np.asarray(overlay.convert("RGB"))[~covered], image[~covered])


def test_a_local_file_is_sent_as_a_data_url(start_app, tmp_path):
    app = start_app()
    path, out, result_path = tmp_path / "local.png", tmp_path / "overlay.png", tmp_path / "result.json"
    path.write_bytes(files.png_rgb(64, 48))
    done = run_client(ws_url(app), "--image", str(path), "--box", "5,5,30,20", "--multimask",
                      "--out", str(out), "--json", str(result_path))
    assert done.returncode == client.EXIT_OK, done.stderr
    assert "result: 1 mask for the 64x48 image" in done.stdout.splitlines()
    assert Image.open(out).size == (64, 48)
    result = json.loads(result_path.read_text())
    assert len(result["masks"]) == 1 and len(result["masks"][0]) == 3  # --multimask
    record = app.store.get(result["id"])
    assert record["imageUrl"] == f"data:image/png;base64,... ({path.stat().st_size} bytes, sent inline)"


def test_the_sample_photograph_is_sent_and_files_are_written_only_where_asked(start_app, tmp_path):
    """The quick start's command: the shipped sample, from another folder, without --out or --json."""
    app = start_app()
    sample = REPO / "examples" / "images" / "chelsea.jpg"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_client(ws_url(app), "--image", str(sample), "--box", "130,60,80,70", cwd=elsewhere)
    assert done.returncode == client.EXIT_OK, done.stderr
    assert "result: 1 mask for the 451x300 image" in done.stdout.splitlines()
    assert "wrote" not in done.stdout
    assert list(elsewhere.iterdir()) == []  # no overlay.png left behind in the working folder


def test_a_server_error_exits_1_with_the_servers_sentence(start_app, image_server, tmp_path):
    app = start_app()
    out = tmp_path / "overlay.png"
    done = run_client(ws_url(app), "--image", image_server.url("/missing.png"), "--box", "1,1,5,5", "--out", str(out))
    assert done.returncode == client.EXIT_SERVER_ERROR
    assert done.stderr.startswith("cap client: error image_download_failed: The image server 127.0.0.1 answered HTTP 404")
    assert not out.exists()
    outside = run_client(ws_url(app), "--image", image_server.url("/photo.jpg"), "--box", "400,400,5,5",
                         "--out", str(out))
    assert outside.returncode == client.EXIT_SERVER_ERROR and "error invalid_request:" in outside.stderr
    assert not out.exists()


def test_no_connection_exits_3(start_app, image_server, tmp_path):
    closed = free_port()
    done = run_client(f"ws://127.0.0.1:{closed}", "--image", image_server.url("/photo.jpg"), "--box", "1,1,5,5")
    assert done.returncode == client.EXIT_CONNECTION and "cannot connect" in done.stderr

    app = start_app(api_token="s3cret")
    args = [ws_url(app), "--image", image_server.url("/photo.jpg"), "--box", "1,1,5,5", "--out", str(tmp_path / "o.png")]
    refused = run_client(*args)
    assert refused.returncode == client.EXIT_CONNECTION and "HTTP 401" in refused.stderr and "--token" in refused.stderr
    assert run_client(*args, "--token", "s3cret").returncode == client.EXIT_OK


def test_what_the_command_cannot_read_exits_2(tmp_path):
    page = tmp_path / "page.html"
    page.write_bytes(files.html_page())
    server = "ws://127.0.0.1:9"  # never reached: each of these stops before connecting
    cases = [
        (["--image", str(tmp_path / "missing.png"), "--box", "1,1,5,5"], "cannot read"),
        (["--image", str(page), "--box", "1,1,5,5"], "only PNG, JPEG and WebP"),
        (["--image", "data:image/png;base64,AAAA", "--box", "1,1,5,5"], "makes the data: URL itself"),
        (["--image", str(page), "--box", "1,1,5"], "x,y,w,h"),
    ]
    for args, words in cases:
        done = run_client(server, *args)
        assert (done.returncode, words in done.stderr) == (client.EXIT_LOCAL, True), done.stderr


def test_points_make_one_prompt_with_at_most_one_box():
    request = client.build_request("u", [{"x": 1, "y": 2, "width": 3, "height": 4}], [(5, 6)], [(7, 8)], False, True)
    assert request["prompts"] == [{
        "points": [{"x": 5, "y": 6, "label": 1}, {"x": 7, "y": 8, "label": 0}],
        "box": {"x": 1, "y": 2, "width": 3, "height": 4},
    }]
    assert request["output"] == ["rle", "polygons"] and "boxes" not in request
    assert client.build_request("u", [{"x": 1, "y": 2, "width": 3, "height": 4}], [], [], False, False)["boxes"]
    for boxes, points in (([], []), ([{"x": 1, "y": 1, "width": 1, "height": 1}] * 2, [(1, 1)])):
        with pytest.raises(client.Failure):
            client.build_request("u", boxes, points, [], False, False)


def test_points_and_polygons_through_a_real_server(start_app, tmp_path):
    app = start_app()
    image = tmp_path / "scene.png"
    image.write_bytes(files.png_rgb(120, 80))
    done = run_client(ws_url(app), "--image", str(image), "--point", "30,20", "--negative", "90,60",
                      "--polygons", "--json", str(tmp_path / "r.json"), "--out", str(tmp_path / "o.png"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "prompt 1 1 positive and 1 negative points: score" in done.stdout and "polygon ring" in done.stdout
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["masks"][0]["prompt"]["points"] == [{"x": 30.0, "y": 20.0, "label": 1}, {"x": 90.0, "y": 60.0, "label": 0}]
    assert "polygons" in result["masks"][0] and pixels_of((tmp_path / "o.png").read_bytes()).shape == (80, 120, 3)


def test_the_clicks_example_opens_a_session_and_refines_each_click(start_app, image_server):
    image_server.add("/clicks.png", files.png_rgb(160, 120))
    app = start_app()
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "clicks.py"), ws_url(app), image_server.url("/clicks.png"), "40,30", "100,80:0"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("opened 160x120") and lines[1].startswith("1 points:") and lines[2].startswith("2 points:")
    records = sorted(app.store.records(), key=lambda r: r["createdAt"])
    assert [r["status"] for r in records] == ["finished"] * 3
    assert records[2]["prompts"][0]["mask_input"] == {"id": records[1]["id"], "index": 0}


def test_the_clicks_example_says_when_the_server_left_the_polygons_out(start_app, image_server):
    image_server.add("/clicks.png", files.png_rgb(160, 120))
    app = start_app(max_polygon_vertices=0)  # every mask's polygons are past the cap
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "clicks.py"), ws_url(app), image_server.url("/clicks.png"), "40,30"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "polygons omitted" in done.stdout.splitlines()[1], done.stdout


# --- the examples: a file or a URL, and a token ---------------------------------------------

CAT = REPO / "examples" / "images" / "chelsea.jpg"


def run_example(name: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """examples/<name> in a process of its own, with none of the user's settings but `env` (API_TOKEN, say)."""
    return subprocess.run([sys.executable, str(REPO / "examples" / name), *args], env=server_env(**env),
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("token_from", ["API_TOKEN", "--token"])
def test_the_examples_send_a_file_with_the_token_a_server_asks_for(start_app, token_from):
    app = start_app(api_token="s3cret,older")
    by_env = {"API_TOKEN": "s3cret,older"} if token_from == "API_TOKEN" else {}  # the first of a rotating list
    flag = ["--token", "s3cret"] if token_from == "--token" else []
    segment = run_example("segment.py", ws_url(app), str(CAT), *flag, **by_env)
    assert segment.returncode == 0, segment.stderr
    messages = [json.loads(line) for line in segment.stdout.splitlines()]
    assert [m["type"] for m in messages] == ["queued", "status", "result"]
    assert messages[-1]["image"]["width"] == Image.open(CAT).width  # the file itself went, as a data: URL
    clicks = run_example("clicks.py", ws_url(app), str(CAT), "150,100", *flag, **by_env)
    assert clicks.returncode == 0, clicks.stderr
    assert clicks.stdout.startswith(f"opened {Image.open(CAT).width}x{Image.open(CAT).height}")


@pytest.mark.parametrize("example", ["segment.py", "clicks.py"])
def test_the_examples_say_in_one_sentence_what_is_wrong(start_app, example, tmp_path):
    app = start_app(api_token="s3cret")
    sentences = {
        "a wrong token": (run_example(example, ws_url(app), str(CAT), "--token", "wrong"), "HTTP 401): check the token."),
        "no token": (run_example(example, ws_url(app), str(CAT)), "needs a token: pass --token or set API_TOKEN."),
        "no such file": (run_example(example, ws_url(app), str(tmp_path / "none.jpg"), "--token", "s3cret"),
                         "none.jpg: No such file or directory."),
        "no server": (run_example(example, f"ws://127.0.0.1:{free_port()}/", str(CAT)), "Connection refused."),
    }
    for case, (done, ending) in sentences.items():
        assert done.returncode == 1 and done.stdout == "", (case, done.stdout, done.stderr)
        assert done.stderr.endswith(ending + "\n") and done.stderr.count("\n") == 1, (case, done.stderr)


def test_everything_asks_for_every_mask_and_prints_its_progress(start_app, tmp_path):
    app = start_app()
    image = tmp_path / "scene.png"
    image.write_bytes(files.png_rgb(64, 48))
    done = run_client(ws_url(app), "--image", str(image), "--everything",
                      '{"points_per_side": 4, "pred_iou_thresh": 0, "stability_score_thresh": 0}',
                      "--json", str(tmp_path / "r.json"), "--out", str(tmp_path / "o.png"), cwd=tmp_path)
    assert done.returncode == client.EXIT_OK, done.stderr
    assert "progress: 0 of 16" in done.stdout and "  mask 1 from x=" in done.stdout
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["masks"] and all("point" in mask and "crop_box" in mask for mask in result["masks"])
    assert app.store.get(result["id"])["everything"] == {"points_per_side": 4, "pred_iou_thresh": 0, "stability_score_thresh": 0}
    assert pixels_of((tmp_path / "o.png").read_bytes()).shape == (48, 64, 3)
    assert client.build_request("u", [], [], [], False, False, {})["everything"] == {}
    with pytest.raises(client.Failure):
        client.build_request("u", [{"x": 1, "y": 1, "width": 1, "height": 1}], [], [], False, False, {})
    refused = run_client("ws://127.0.0.1:9", "--image", str(image), "--everything", "[1]")
    assert refused.returncode == client.EXIT_LOCAL and "JSON object" in refused.stderr


def test_mask_scale_asks_smaller_masks_and_the_overlay_stretches_them_to_the_image(start_app, tmp_path):
    app = start_app()
    image = tmp_path / "scene.png"
    image.write_bytes(files.png_rgb(120, 80))
    done = run_client(ws_url(app), "--image", str(image), "--point", "30,20", "--mask-scale", "0.5",
                      "--json", str(tmp_path / "r.json"), "--out", str(tmp_path / "o.png"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "result: 1 mask for the 120x80 image, at mask scale 0.5 (areas in those pixels)" in done.stdout
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["mask_scale"] == 0.5 and result["masks"][0]["segmentation"]["size"] == [40, 60]
    assert pixels_of((tmp_path / "o.png").read_bytes()).shape == (80, 120, 3)
