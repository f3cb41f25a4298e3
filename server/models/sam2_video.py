"""One clip's tracking state, through sam2's own `SAM2VideoPredictor` (docs/protocol.md, "Video").

`VideoTracker` holds what `SAM2VideoPredictor.init_state` would build, with
one difference: its `images` are `ModelFrames`, which keep each frame as
size² uint8 and make its float tensor only when the predictor asks for it,
as sam2's own lazy loader (`sam2.utils.misc.AsyncVideoFrameLoader`) offers
`__getitem__` and `__len__`. `init_state` itself would hold every frame as a
1024² float32 tensor: 12 MB a frame, 3.6 GB for 300 frames, against 0.9 GB
here. The tensor of a frame is made as sam2 makes a folder of frames'
(÷ 255 in float64, to float32, minus the mean, ÷ the std), so the model sees
the same numbers.

Prompts, removal and propagation are the predictor's own methods on that
state (`add_new_points_or_box`, `remove_object`, `propagate_in_video`);
their masks are the predictor's video-resolution logits thresholded at 0.

One fix for full precision: the predictor keeps each frame's memory features
in bfloat16 (to save GPU memory), and its memory attention works only where
autocast converts them, or where object pointers in float32 promote them in
a concatenation. In float32 without autocast, a frame whose memory holds no
object pointer (the first frame tracked forward from before a prompted
frame, say) fails. So in float32 the kept memories are widened to float32
before each step: the same values (bfloat16 widens exactly), the arithmetic
of the promoted case, and no failure.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterator

import numpy as np
import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor

from server.models.device import Precision

IMG_MEAN = (0.485, 0.456, 0.406)  # load_video_frames' defaults
IMG_STD = (0.229, 0.224, 0.225)

ObjectMasks = list[tuple[int, np.ndarray]]  # (object id, H × W bool mask)


class ModelFrames:
    """A clip's frames as the predictor reads them (`frames[i]`, `len(frames)`), kept as uint8."""

    def __init__(self, frames: list[np.ndarray], device: torch.device):
        self.frames = frames
        self.device = device
        self.mean = torch.tensor(IMG_MEAN, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(IMG_STD, dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = torch.from_numpy(self.frames[index] / 255.0).permute(2, 0, 1).to(torch.float32)
        image -= self.mean
        image /= self.std
        return image.to(self.device)


def new_state(predictor: SAM2VideoPredictor, images: ModelFrames, width: int, height: int) -> dict[str, Any]:
    """`SAM2VideoPredictor.init_state`'s dictionary, with `images` as given (frames kept on the CPU)."""
    device = predictor.device
    return {
        "images": images,
        "num_frames": len(images),
        "offload_video_to_cpu": False,
        "offload_state_to_cpu": False,
        "video_height": height,
        "video_width": width,
        "device": device,
        "storage_device": device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
    }


class VideoTracker:
    """One opened clip: its frames and the predictor's state; objects prompted, removed and propagated."""

    def __init__(
        self, predictor: SAM2VideoPredictor, frames: list[np.ndarray], width: int, height: int, precision: Precision
    ):
        self.predictor = predictor
        self.precision = precision
        self.frames = len(frames)
        self.state = new_state(predictor, ModelFrames(frames, predictor.device), width, height)
        with torch.inference_mode(), self.precision.autocast(predictor.device):
            # as init_state: frame 0's features, cached, since it is where a person most often clicks first
            predictor._get_image_feature(self.state, frame_idx=0, batch_size=1)

    def prompt(
        self, frame: int, obj: int, points: list[tuple[float, float]], labels: list[int], box: list[float] | None
    ) -> np.ndarray:
        """The object's mask on `frame` after `add_new_points_or_box(..., clear_old_points=True)`."""
        self._widen_memories()
        with self.precision.autocast(self.predictor.device):
            _, obj_ids, logits = self.predictor.add_new_points_or_box(
                self.state,
                frame_idx=frame,
                obj_id=obj,
                points=np.array(points, dtype=np.float32).reshape(-1, 2) if points else None,
                labels=np.array(labels, dtype=np.int32) if points else None,
                clear_old_points=True,
                box=np.array(box, dtype=np.float32) if box is not None else None,
            )
        return _mask(logits[list(obj_ids).index(obj)])

    def objects(self) -> list[int]:
        return list(self.state["obj_ids"])

    def remove(self, obj: int) -> None:
        with self.precision.autocast(self.predictor.device):
            self.predictor.remove_object(self.state, obj, strict=False, need_output=False)

    def propagate(self, start: int, frames: int, reverse: bool) -> Iterator[tuple[int, ObjectMasks]]:
        """Each frame `propagate_in_video` yields, with every object's mask, in its order."""
        with self.precision.autocast(self.predictor.device):
            self.predictor.propagate_in_video_preflight(self.state)  # the prompted frames' memories, made now
            self._widen_memories()
            for frame, obj_ids, logits in self.predictor.propagate_in_video(
                self.state, start_frame_idx=start, max_frame_num_to_track=frames, reverse=reverse
            ):
                self._widen_memories(frame)
                yield frame, [(obj, _mask(logits[i])) for i, obj in enumerate(obj_ids)]

    def _widen_memories(self, frame: int | None = None) -> None:
        """In float32, the kept memory features (of `frame`, or all) as float32 (see the module's docstring)."""
        if self.precision.dtype != torch.float32:
            return
        for outputs in self.state["output_dict_per_obj"].values():
            for kept in outputs.values():  # cond_frame_outputs, non_cond_frame_outputs
                for out in kept.values() if frame is None else filter(None, [kept.get(frame)]):
                    features = out.get("maskmem_features")
                    if features is not None and features.dtype != torch.float32:
                        out["maskmem_features"] = features.float()

    def close(self) -> None:
        """Let go of the frames and every tensor of the state."""
        self.state.clear()


def _mask(logits: torch.Tensor) -> np.ndarray:
    return (logits[0] > 0.0).cpu().numpy()
