"""Video tracking against sam2's own `SAM2VideoPredictor` on the same weights and the same frames.

docs/protocol.md ("Video") promises, given the same decoded RGB frames
prepared as sam2 prepares a folder of frames, the predictor's masks on the
prompted frame and on every propagated frame (IoU >= 0.99). Ours: the clip
decoded by server/video_decode.py, a production-loaded random-weight hiera_t,
`VideoTracker`. The reference: `build_sam2_video_predictor` on the same
checkpoint, `init_state` with `load_video_frames` given the same decoded
frames as its folder loader prepares them. Random weights: equality only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sam2 import sam2_video_predictor
from sam2.build_sam import build_sam2_video_predictor

from harness import video_clips
from server import video_decode
from server.models.loading import load_model
from server.models.registry import model_type as row_of
from server.models.sam2_video import IMG_MEAN, IMG_STD

pytestmark = pytest.mark.slow  # full-size hiera_t on the CPU

WIDTH, HEIGHT = 96, 64


@pytest.fixture(scope="module")
def data():
    return video_clips.clip(frames=4, width=WIDTH, height=HEIGHT, container="mp4")


@pytest.fixture(scope="module")
def ours(hiera_t_checkpoint):
    return load_model("sam2.1_hiera_t", hiera_t_checkpoint, "cpu", "fp32", cache_size=1)


@pytest.fixture(scope="module")
def reference(hiera_t_checkpoint):
    return build_sam2_video_predictor(row_of("sam2.1_hiera_t").config, ckpt_path=str(hiera_t_checkpoint), device="cpu")


def folder_frames(rgb_frames: list[np.ndarray], size: int) -> torch.Tensor:
    """What `load_video_frames_from_jpg_images` makes of frame files holding these pixels."""
    images = torch.zeros(len(rgb_frames), 3, size, size, dtype=torch.float32)
    for n, rgb in enumerate(rgb_frames):
        images[n] = torch.from_numpy(np.array(Image.fromarray(rgb).resize((size, size))) / 255.0).permute(2, 0, 1)
    images -= torch.tensor(IMG_MEAN, dtype=torch.float32)[:, None, None]
    images /= torch.tensor(IMG_STD, dtype=torch.float32)[:, None, None]
    return images


@pytest.fixture
def reference_state(reference, data, monkeypatch):
    rgb = video_clips.decoded_rgb(data)
    monkeypatch.setattr(
        sam2_video_predictor, "load_video_frames", lambda **_: (folder_frames(rgb, reference.image_size), HEIGHT, WIDTH)
    )
    return reference.init_state("the same decoded frames")


@pytest.fixture
def tracker(ours, data):
    clip = video_decode.decode(data, ours.image_size, video_decode.Limits(max_frames=600, max_pixels=10**6))
    return ours.open_video(clip.frames, clip.width, clip.height)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def reference_prompt(reference, state, frame, obj, points, labels, box):
    _, obj_ids, logits = reference.add_new_points_or_box(
        state, frame_idx=frame, obj_id=obj, points=np.array(points, np.float32) if points else None,
        labels=np.array(labels, np.int32) if points else None, clear_old_points=True,
        box=np.array(box, np.float32) if box else None,
    )
    return (logits[list(obj_ids).index(obj), 0] > 0).numpy()


PROMPTS = [  # frame, object, points, labels, box
    (1, 1, [(30.0, 21.0)], [1], None),
    (1, 2, [], [], [48.0, 10.0, 70.0, 34.0]),
    (1, 1, [(30.0, 21.0), (60.0, 50.0)], [1, 0], None),  # object 1 refined
    (2, 2, [(55.0, 30.0)], [1], [46.0, 20.0, 70.0, 45.0]),  # object 2 on another frame, box and point
]


def same_frames(mine, theirs, objects):
    assert [frame for frame, _ in mine] == [frame for frame, _, _ in theirs]
    for (_, masks), (_, obj_ids, logits) in zip(mine, theirs):
        assert [obj for obj, _ in masks] == list(obj_ids) == objects
        for (_, mask), their_logits in zip(masks, logits):
            assert iou(mask, (their_logits[0] > 0).numpy()) >= 0.99


def test_prompted_propagated_and_removed_masks_equal_sam2_video_predictors(tracker, reference, reference_state):
    """The clip is 4 frames: the memory attention on the CPU costs seconds per object and frame."""
    for frame, obj, points, labels, box in PROMPTS:
        mine = tracker.prompt(frame, obj, points, labels, box)
        theirs = reference_prompt(reference, reference_state, frame, obj, points, labels, box)
        assert mine.shape == (HEIGHT, WIDTH) and iou(mine, theirs) >= 0.99
    for start, frames, reverse in [(1, 2, False), (1, 1, True)]:
        mine = list(tracker.propagate(start, frames, reverse))
        assert len(mine) == frames + 1
        same_frames(mine, list(reference.propagate_in_video(reference_state, start, frames, reverse)), [1, 2])
    tracker.remove(2)
    reference.remove_object(reference_state, 2)
    assert tracker.objects() == [1]
    same_frames(list(tracker.propagate(2, 1, False)), list(reference.propagate_in_video(reference_state, 2, 1, False)), [1])


def test_the_frames_are_kept_as_uint8_and_made_float_only_when_asked(tracker):
    images = tracker.state["images"]
    assert all(frame.dtype == np.uint8 for frame in images.frames)
    assert not any(isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[0] == 4 for value in tracker.state.values())
