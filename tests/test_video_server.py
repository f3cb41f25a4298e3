"""Video over a real WebSocket (docs/protocol.md, "Video"): open, prompt, remove, propagate, limits, the session's end.

The server is the real `App` with SAM 2.1 hiera_t (random weights) built at a
256-pixel input, so that each frame costs the CPU a fraction of what 1024
does; the clips are made by OpenCV and served by the real local HTTP server.
Equality with sam2's predictor is tests/test_video_reference.py's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys

import pytest
from sam2.build_sam import build_sam2_video_predictor

from harness import video_clips
from harness.client import session as open_session
from harness.http_server import ImageHTTPServer
from harness.processes import REPO, server_env
from harness.waiting import wait_for
from server import jobs, masks
from server.models.registry import model_type as row_of
from server.models.sam2 import Sam2Model
from tests.conftest import ws_url

pytestmark = pytest.mark.slow  # a SAM 2.1 model on the CPU

CLIP = video_clips.clip(frames=3, width=48, height=32)
SHA = hashlib.sha256(CLIP).hexdigest()
WEBM = video_clips.clip(frames=2, width=48, height=32, container="webm")
OPEN = {"keep_open": True}
POINT = [{"x": 12, "y": 10, "label": 1}]


@pytest.fixture(scope="module")
def sam2_small():
    predictor = build_sam2_video_predictor(
        row_of("sam2.1_hiera_t").config, ckpt_path=None, device="cpu", hydra_overrides_extra=["++model.image_size=256"]
    )
    predictor.fill_hole_area = 0  # as server.models.sam2.build leaves it
    return Sam2Model(predictor, "sam2.1_hiera_t", cache_size=1)


@pytest.fixture(scope="module")
def clips():
    with ImageHTTPServer() as server:
        server.add("/clip.mp4", CLIP, content_type="video/mp4")
        server.add("/five.mp4", video_clips.clip(frames=5, width=48, height=32), content_type="video/mp4")
        server.add("/notes.txt", b"#EXTM3U\nfile:///etc/passwd\n", content_type="video/mp4")
        yield server


def all_terminal(app) -> bool:
    return all(jobs.is_terminal(record) and not jobs.order_violations(record) for record in app.store.records())


def test_open_prompt_remove_and_propagate_answer_each_frame_in_order(start_app, sam2_small, clips):
    app = start_app(model=sam2_small)
    with open_session(ws_url(app), timeout=300) as session:
        session.send({"video_url": clips.url("/clip.mp4"), **OPEN, "client_ref": "o"})
        opened = session.answer()
        assert [m["type"] for m in opened][:2] == ["queued", "status"] and opened[-1]["type"] == "result", opened
        assert "progress" in [m["type"] for m in opened]
        assert opened[-1]["video"] == {"sha256": SHA, "frames": 3, "width": 48, "height": 32, "fps": 10.0}
        assert opened[-1]["client_ref"] == "o"

        prompted = session.ask({
            "video_sha256": SHA, "frame": 1,
            "prompts": [{"object": 7, "points": POINT}, {"object": 3, "box": {"x": 20, "y": 5, "width": 40, "height": 30}}],
        })
        assert prompted["type"] == "result" and prompted["frame"] == 1 and prompted["video_sha256"] == SHA, prompted
        assert [mask["object"] for mask in prompted["masks"]] == [7, 3]
        for mask in prompted["masks"]:
            assert masks.decode(mask["segmentation"]).shape == (32, 48) and len(mask["bbox"]) == 4

        removed = session.ask({"video_sha256": SHA, "remove_object": 3})
        assert removed["type"] == "result" and removed["objects"] == [7], removed

        session.send({"video_sha256": SHA, "propagate": {"from": 1, "direction": "backward"}, **OPEN})
        answers = session.answer()
        frames = [m for m in answers if m["type"] == "frame"]
        assert [m["frame"] for m in frames] == [1, 0] and answers[-1]["type"] == "result", answers
        assert answers[-1]["frames"] == 2 and all([mask["object"] for mask in m["masks"]] == [7] for m in frames)
        types = [m["type"] for m in answers]
        assert types.index("status") < types.index("frame")

        outside = session.ask({"video_sha256": SHA, "frame": 3, "prompts": [{"object": 1, "points": POINT}]})
        assert outside["type"] == "error" and outside["code"] == "invalid_request" and "frames 0 to 2" in outside["message"]
        unknown = session.ask({"video_sha256": "0" * 64, "propagate": {"from": 0, "direction": "forward"}})
        assert unknown["type"] == "error" and unknown["code"] == "video_unknown"
        again = session.ask({"video_sha256": SHA, "propagate": {"from": 0, "direction": "forward", "frames": 1}})
        assert again["type"] == "result" and again["frames"] == 2, again  # the session went on
        held = app.budget.used
        assert held >= 3 * 256 * 256 * 3 and app.processor.video.sessions.bytes_held() == 3 * 256 * 256 * 3
    # The session ended: its clip and its share of the pixel budget are freed.
    assert wait_for(lambda: app.processor.video.sessions.bytes_held() == 0 and app.budget.used == 0, 10)
    assert wait_for(lambda: all_terminal(app), 10)
    kinds = sorted(record["video"]["kind"] for record in app.store.records())
    assert kinds == ["open", "prompt", "propagate", "propagate", "remove"]  # the frame outside had no record
    opened_record = next(record for record in app.store.records() if record["video"]["kind"] == "open")
    assert (opened_record["imageUrl"], opened_record["imageSha256"]) == (clips.url("/clip.mp4"), SHA)
    assert (opened_record["width"], opened_record["height"]) == (48, 32)
    propagation = next(r for r in app.store.records() if r["video"]["kind"] == "propagate" and r["status"] == "finished")
    assert propagation["video"]["propagate"] == {"from": 1, "direction": "backward"} and propagation["video"]["frame"] == 1


def test_a_newer_request_stops_a_propagation_between_frames(start_app, sam2_small, clips):
    app = start_app(model=sam2_small)
    with open_session(ws_url(app), timeout=300) as session:
        sha = session.ask({"video_url": clips.url("/five.mp4")})["video"]["sha256"]
        assert session.ask({"video_sha256": sha, "frame": 0, "prompts": [{"object": 1, "points": POINT}]})["type"] == "result"
        session.send({"video_sha256": sha, "propagate": {"from": 0, "direction": "forward"}, **OPEN})
        while session.next()["type"] != "frame":
            pass
        session.send({"video_sha256": sha, "remove_object": 1, **OPEN})
        answers = session.answer()
        assert answers[-1]["type"] == "error" and answers[-1]["code"] == "superseded", answers
        assert session.answer()[-1]["objects"] == []
    stopped = next(r for r in app.store.records() if r["video"]["kind"] == "propagate")
    assert stopped["status"] == "interrupted"
    assert wait_for(lambda: all_terminal(app), 10)


def test_limits_and_undecodable_files_are_typed_errors_and_the_session_goes_on(start_app, sam2_small, clips):
    app = start_app(model=sam2_small, max_video_frames=2, max_video_bytes=len(CLIP) + 10)
    with open_session(ws_url(app), timeout=300) as session:
        frames = session.ask({"video_url": clips.url("/clip.mp4")})
        assert frames["code"] == "video_too_large" and "MAX_VIDEO_FRAMES (2)" in frames["message"], frames
        assert session.ask({"video_url": clips.url("/five.mp4")})["code"] == "video_too_large"  # MAX_VIDEO_BYTES
        assert session.ask({"video_url": clips.url("/notes.txt")})["code"] == "unsupported_video"
        webm = session.ask({"video_url": "data:video/webm;base64," + base64.b64encode(WEBM).decode()})
        assert webm["type"] == "result" and webm["video"]["frames"] == 2, webm
    assert wait_for(lambda: all_terminal(app) and app.budget.used == 0, 10)


def test_an_open_without_keep_open_is_invalid_and_closes(start_app, sam2_small, clips):
    app = start_app(model=sam2_small)
    with open_session(ws_url(app)) as session:
        session.send({"video_url": clips.url("/clip.mp4")})
        [error] = session.answer()
        assert error["code"] == "invalid_request" and "keep_open" in error["message"]
        assert session.closed()[0] == 1008


def test_a_sam1_server_says_video_needs_sam2(start_app, clips):
    app = start_app()  # the tiny SAM 1
    with open_session(ws_url(app)) as session:
        answer = session.ask({"video_url": clips.url("/clip.mp4")})
        assert answer["code"] == "invalid_request" and "SAM 2.1" in answer["message"], answer
    assert wait_for(lambda: all_terminal(app), 10)


def test_the_example_tracks_a_clicked_object_and_writes_coco_json_and_overlays(start_app, sam2_small, tmp_path):
    app = start_app(model=sam2_small)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(CLIP)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "video.py"), ws_url(app), str(clip), "--frame", "1", "--point", "12,10",
         "--out", str(out)],
        env=server_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    coco = json.loads((out / "masks.json").read_text())
    assert [a["image_id"] for a in coco["annotations"]] == [0, 1, 2]
    assert masks.decode(coco["annotations"][0]["segmentation"]).shape == (32, 48)
    assert sorted(path.name for path in out.glob("overlay_*.png")) == [f"overlay_{i:05d}.png" for i in range(3)]


def test_a_closed_connection_stops_a_propagation_and_frees_the_clip(start_app, sam2_small, clips):
    app = start_app(model=sam2_small)
    with open_session(ws_url(app), timeout=300) as session:
        sha = session.ask({"video_url": clips.url("/five.mp4")})["video"]["sha256"]
        session.ask({"video_sha256": sha, "frame": 0, "prompts": [{"object": 1, "points": POINT}]})
        session.send({"video_sha256": sha, "propagate": {"from": 0, "direction": "forward"}, **OPEN})
        while session.next()["type"] != "frame":
            pass
    assert wait_for(lambda: all_terminal(app) and app.budget.used == 0, 30)
    stopped = next(r for r in app.store.records() if r["video"]["kind"] == "propagate")
    assert stopped["status"] == "interrupted" and stopped["progress"]["done"] < 5
    assert app.processor.video.sessions.bytes_held() == 0


def test_an_idle_session_close_frees_its_clip(start_app, sam2_small, clips):
    app = start_app(model=sam2_small, session_idle_seconds=1)
    with open_session(ws_url(app), timeout=300) as session:
        assert session.ask({"video_url": clips.url("/clip.mp4")})["type"] == "result"
        assert app.processor.video.sessions.bytes_held() > 0
        assert session.closed() == (1000, "idle")
    assert wait_for(lambda: app.processor.video.sessions.bytes_held() == 0 and app.budget.used == 0, 10)


def test_a_video_record_is_left_to_the_replica_whose_session_holds_the_clip(start_app):
    app = start_app()
    long_ago = jobs.format_time(jobs.parse_time("2026-01-01T00:00:00.000000Z"))
    elsewhere = {"id": "x", "createdAt": long_ago, "preferredServer": "cap-another", "imageSha256": SHA,
                 "imageUrl": "http://127.0.0.1:9/clip.mp4", "video": {"kind": "prompt", "session": "s"}}
    here = {**elsewhere, "preferredServer": app.processor.server_id}
    assert app.processor.claims.left_to_another(elsewhere)  # however old: its clip is only there
    assert not app.processor.claims.left_to_another({**elsewhere, "video": None})  # an image's: anyone's after 2 s
    assert not app.processor.claims.left_to_another(here) and app.processor._image_is_here(here)  # never fetched again


def test_a_propagation_past_max_result_bytes_fails_result_too_large(start_app, sam2_small, clips):
    app = start_app(model=sam2_small, max_result_bytes=250)
    with open_session(ws_url(app), timeout=300) as session:
        sha = session.ask({"video_url": clips.url("/clip.mp4")})["video"]["sha256"]
        assert session.ask({"video_sha256": sha, "frame": 0, "prompts": [{"object": 1, "points": POINT}]})["type"] == "result"
        session.send({"video_sha256": sha, "propagate": {"from": 0, "direction": "forward"}, **OPEN})
        answers = session.answer()
        assert answers[-1]["code"] == "result_too_large" and "MAX_RESULT_BYTES" in answers[-1]["message"], answers
    assert wait_for(lambda: all_terminal(app) and app.budget.used == 0, 10)


def test_the_command_line_client_tracks_an_object_through_a_local_clip(start_app, sam2_small, tmp_path):
    app = start_app(model=sam2_small)
    clip, out = tmp_path / "clip.mp4", tmp_path / "masks.json"
    clip.write_bytes(CLIP)
    done = subprocess.run(
        [sys.executable, "-m", "server.client", ws_url(app), "--video", str(clip), "--frame", "2", "--point", "30,12",
         "--box", "20,2,25,20", "--json", str(out)],
        cwd=REPO, env=server_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "video: 3 frames of 48x32 at 10.0 fps" in done.stdout
    assert [line.split(":")[0] for line in done.stdout.splitlines() if line.startswith("frame ")] == [
        "frame 2", "frame 2", "frame 1", "frame 0"  # forward from 2 (the clip's last), then backward from it
    ]
    assert [a["image_id"] for a in json.loads(out.read_text())["annotations"]] == [0, 1, 2]
    bad = subprocess.run([sys.executable, "-m", "server.client", ws_url(app), "--video", str(tmp_path / "a.gif"), "--point", "1,1"],
                         cwd=REPO, env=server_env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and ".mp4 or .webm" in bad.stderr


def test_a_clip_sent_inline_may_be_larger_than_an_image_on_a_sam2_server(start_app, sam2_small, clips):
    inline = "data:video/mp4;base64," + base64.b64encode(CLIP).decode()
    assert len(inline) > 2048  # past MAX_MESSAGE_BYTES below: it needs a data: URL's room
    app = start_app(model=sam2_small, sam_model_type="sam2.1_hiera_t", max_image_bytes=len(CLIP) // 4, max_message_bytes=1024)
    with open_session(ws_url(app), timeout=300) as session:
        opened = session.ask({"video_url": inline})
        assert opened["type"] == "result" and opened["video"]["sha256"] == SHA, opened
    small = start_app(model=sam2_small, sam_model_type="sam2.1_hiera_t", max_image_bytes=len(CLIP) // 4,
                      max_video_bytes=len(CLIP) // 2, max_message_bytes=1024)
    with open_session(ws_url(small), timeout=300) as session:
        assert session.ask({"video_url": inline})["code"] == "message_too_large"  # MAX_VIDEO_BYTES's room, no more
