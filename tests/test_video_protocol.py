"""Video requests, pure (server/video_protocol.py), and the clips a replica holds by session (server/video_sessions.py)."""

from __future__ import annotations

import pytest

from server import video_protocol
from server.budget import PixelBudget
from server.errors import ClientError
from server.session_rules import Limits, Serve, SessionRules
from server.video_sessions import HeldClip, VideoSessions

SHA = "ab" * 32
POINT = {"x": 5, "y": 6, "label": 1}


def parse(body):
    return video_protocol.parse({"keep_open": True, **body}, max_prompts=4, max_points=4)


def refused(body) -> str:
    with pytest.raises(ClientError) as caught:
        parse(body)
    assert caught.value.code == "invalid_request"
    return caught.value.message


def test_each_kind_is_read_with_its_own_keys():
    assert parse({"video_url": "https://example.com/a.mp4"}).kind == "open"
    prompt = parse({"video_sha256": SHA, "frame": 2, "prompts": [{"object": 9, "points": [POINT], "box": {"x": 1, "y": 1, "width": 4, "height": 4}}]})
    assert prompt.kind == "prompt" and prompt.frame == 2 and prompt.prompts[0].object == 9
    assert prompt.prompts[0].to_dict() == {"object": 9, "box": {"x": 1.0, "y": 1.0, "width": 4.0, "height": 4.0}, "points": [{"x": 5.0, "y": 6.0, "label": 1}]}
    assert parse({"video_sha256": SHA, "remove_object": 3}).remove_object == 3
    back = parse({"video_sha256": SHA, "propagate": {"from": 4, "direction": "backward", "frames": 2}})
    assert back.propagate.to_dict() == {"from": 4, "direction": "backward", "frames": 2}
    assert parse({"video_sha256": SHA, "propagate": {"from": 0, "direction": "forward"}}).propagate.frames is None


@pytest.mark.parametrize(
    "body, says",
    [
        ({"video_url": "ftp://example.com/a.mp4"}, "http, https or data"),
        ({"video_url": "https://e.com/a.mp4", "video_sha256": SHA}, "not both"),
        ({"video_sha256": SHA[:10], "remove_object": 1}, "64 lowercase"),
        ({"video_sha256": SHA, "prompts": [{"object": 1, "points": [POINT]}]}, "needs frame"),
        ({"video_sha256": SHA, "frame": 0, "prompts": []}, "non-empty"),
        ({"video_sha256": SHA, "frame": 0, "prompts": [{"points": [POINT]}]}, "object"),
        ({"video_sha256": SHA, "frame": 0, "prompts": [{"object": 1, "points": [POINT], "mask_input": {"id": "x", "index": 0}}]}, "object"),
        ({"video_sha256": SHA, "frame": -1, "prompts": [{"object": 1, "points": [POINT]}]}, "frame must be"),
        ({"video_sha256": SHA, "remove_object": True}, "object id"),
        ({"video_sha256": SHA, "propagate": {"from": 0, "direction": "sideways"}}, "direction"),
        ({"video_sha256": SHA, "propagate": {"from": 0, "direction": "forward"}, "remove_object": 1}, "exactly one"),
        ({"video_sha256": SHA, "remove_object": 1, "output": ["polygons"]}, "Unknown key"),
        ({"video_sha256": SHA, "frame": 0, "prompts": [{"object": 1, "points": [POINT]}], "output": ["polygons"]}, "rle"),
    ],
)
def test_a_malformed_video_request_is_invalid_with_a_sentence(body, says):
    assert says in refused(body)


def test_a_video_request_without_keep_open_is_invalid():
    with pytest.raises(ClientError) as caught:
        video_protocol.parse({"video_url": "https://example.com/a.mp4"}, max_prompts=4, max_points=4)
    assert "keep_open" in caught.value.message


def test_fit_checks_frames_and_points_and_clips_boxes():
    request = parse({"video_sha256": SHA, "frame": 2, "prompts": [{"object": 1, "box": {"x": -5, "y": 2, "width": 100, "height": 3}}]})
    fitted = video_protocol.fit(request, frames=3, width=20, height=10)
    assert fitted.prompts[0].prompt.box.to_dict() == {"x": 0.0, "y": 2.0, "width": 20.0, "height": 3.0}
    with pytest.raises(ClientError, match="frames 0 to 1"):
        video_protocol.fit(request, frames=2, width=20, height=10)
    far = parse({"video_sha256": SHA, "frame": 0, "prompts": [{"object": 1, "points": [{"x": 50, "y": 1, "label": 1}]}]})
    with pytest.raises(ClientError, match="outside the 20x10 frame"):
        video_protocol.fit(far, frames=2, width=20, height=10)
    start = parse({"video_sha256": SHA, "propagate": {"from": 5, "direction": "forward"}})
    with pytest.raises(ClientError, match="propagate.from 5"):
        video_protocol.fit(start, frames=5, width=20, height=10)


def test_the_session_rules_serve_a_video_request():
    rules = SessionRules(Limits(10, 300, 65536, 2**20, 8, 8), 0.0)
    [action] = rules.message('{"video_url": "https://example.com/a.mp4", "keep_open": true}', 0.0)
    assert isinstance(action, Serve) and action.request.kind == "open" and rules.session


def held(budget: PixelBudget, sha: str = SHA) -> HeldClip:
    return HeldClip(tracker=object(), reservation=budget.reserve(100), info={"sha256": sha, "frames": 3, "width": 8, "height": 6})


def test_a_sessions_clips_are_its_own_and_are_freed_when_it_ends():
    budget, sessions = PixelBudget(1000), VideoSessions()
    sessions.begin("s1")
    sessions.begin("s2")
    sessions.keep("s1", held(budget))
    assert sessions.describe("s1", SHA)["frames"] == 3 and sessions.describe("s2", SHA) is None
    sessions.keep("s1", held(budget))  # opened again: the first is freed
    assert budget.used == 100 and sessions.bytes_held() == 100
    assert sessions.close_session("s1") == 1 and budget.used == 0 and sessions.tracker("s1", SHA) is None


def test_a_clip_decoded_for_a_session_that_ended_meanwhile_is_freed_at_once():
    budget, sessions = PixelBudget(1000), VideoSessions()
    sessions.begin("s1")
    sessions.close_session("s1")
    sessions.keep("s1", held(budget))
    assert budget.used == 0 and sessions.describe("s1", SHA) is None
