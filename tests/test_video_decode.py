"""Video files to frames (server/video_decode.py): containers, limits, the frames as the model takes them."""

from __future__ import annotations

import numpy as np
import pytest

from harness import video_clips
from server import video_decode
from server.errors import ClientError

LIMITS = video_decode.Limits(max_frames=600, max_pixels=10_000_000)


@pytest.mark.parametrize("container", ["mp4", "webm"])
def test_every_frame_is_read_at_the_model_size_as_sam2_resizes_a_frame_file(container):
    data = video_clips.clip(frames=6, width=96, height=64, container=container)
    seen = []
    clip = video_decode.decode(data, 256, LIMITS, on_frame=lambda done, total: seen.append((done, total)))
    assert clip.describe()["frames"] == 6 and (clip.width, clip.height) == (96, 64)
    assert clip.fps == pytest.approx(10.0)
    assert [done for done, _ in seen] == [1, 2, 3, 4, 5, 6] and all(total >= done for done, total in seen)
    native = video_clips.decoded_rgb(data)
    for kept, rgb in zip(clip.frames, native):
        assert kept.dtype == np.uint8 and kept.shape == (256, 256, 3)
        assert np.array_equal(kept, video_decode.model_frame(rgb, 256))


def test_the_sha256_is_the_files():
    import hashlib

    data = video_clips.clip(frames=2)
    assert video_decode.decode(data, 64, LIMITS).sha256 == hashlib.sha256(data).hexdigest()


def test_more_frames_than_max_video_frames_is_video_too_large():
    with pytest.raises(ClientError) as caught:
        video_decode.decode(video_clips.clip(frames=5), 64, video_decode.Limits(max_frames=4, max_pixels=10**6))
    assert caught.value.code == "video_too_large" and "MAX_VIDEO_FRAMES (4)" in caught.value.message


def test_frames_over_max_image_pixels_are_video_too_large():
    with pytest.raises(ClientError) as caught:
        video_decode.decode(video_clips.clip(frames=2, width=96, height=64), 64, video_decode.Limits(600, 96 * 64 - 1))
    assert caught.value.code == "video_too_large" and "MAX_IMAGE_PIXELS" in caught.value.message


@pytest.mark.parametrize(
    "data",
    [b"#EXTM3U\n#EXT-X-TARGETDURATION:1\nfile:///etc/passwd\n", b"GIF89a" + bytes(64), b"\x00\x00\x00\x18ftypisom" + bytes(64)],
    ids=["playlist", "gif", "truncated-mp4"],
)
def test_anything_but_a_readable_mp4_or_webm_is_unsupported_video(data):
    with pytest.raises(ClientError) as caught:
        video_decode.decode(data, 64, LIMITS)
    assert caught.value.code == "unsupported_video"
