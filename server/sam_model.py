"""Segment Anything: load a checkpoint, and turn an image and boxes into masks.

Only the processor thread calls into a `SamModel`. All boxes of one request
go through one batched decoder call (`predict_torch` with transformed boxes).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from segment_anything import SamPredictor, sam_model_registry
from segment_anything.modeling import Sam

from server.config import CHECKPOINT_URLS


class CheckpointError(Exception):
    """The checkpoint is missing or unusable; the message is one paragraph for a person."""


def resolve_device(setting: str) -> str:
    """`auto` means CUDA when it is available, else the CPU."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def _download_hint(model_type: str) -> str:
    return (
        f"Download the official {model_type} checkpoint from {CHECKPOINT_URLS[model_type]} "
        "and set SAM_CHECKPOINT to its path (and SAM_MODEL_TYPE to its model type)."
    )


def check_checkpoint(model_type: str, checkpoint: Path) -> None:
    """Fail fast, before anything starts, when the checkpoint file is not there."""
    if not checkpoint.is_file():
        raise CheckpointError(
            f"No SAM checkpoint at {checkpoint.resolve()} (SAM_CHECKPOINT, model type "
            f"{model_type}). {_download_hint(model_type)}"
        )


def load_sam(model_type: str, checkpoint: Path, device: str) -> Sam:
    """Build `model_type` and load its weights from `checkpoint` onto `device`."""
    check_checkpoint(model_type, checkpoint)
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        sam = sam_model_registry[model_type]()
        sam.load_state_dict(state)
    except Exception as exc:  # torch raises many kinds for a bad file
        summary = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise CheckpointError(
            f"The SAM checkpoint {checkpoint.resolve()} could not be loaded as a {model_type} "
            f"model ({type(exc).__name__}: {summary}). The file may be corrupt, truncated, or for "
            f"another model type. {_download_hint(model_type)}"
        ) from None
    return sam.to(resolve_device(device)).eval()


@dataclasses.dataclass
class Segmentation:
    masks: torch.Tensor  # bool, N boxes × C candidates × H × W (C is 3 with multimask, else 1)
    scores: torch.Tensor  # float, N × C (SAM's predicted IoU)
    encode_ms: float
    decode_ms: float


class SamModel:
    """One SAM model on one device, used by one thread."""

    def __init__(self, sam: Sam, model_type: str):
        self.model_type = model_type
        self.predictor = SamPredictor(sam)

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    @torch.inference_mode()
    def segment(self, pixels: np.ndarray, boxes_xyxy: np.ndarray, multimask: bool) -> Segmentation:
        """Masks for each box (x0, y0, x1, y1 in image pixels) on an RGB H×W×3 image."""
        started = time.perf_counter()
        self.predictor.set_image(pixels, image_format="RGB")
        encoded = time.perf_counter()
        boxes = torch.as_tensor(boxes_xyxy, dtype=torch.float32, device=self.device)
        boxes = self.predictor.transform.apply_boxes_torch(boxes, pixels.shape[:2])
        masks, scores, _ = self.predictor.predict_torch(
            point_coords=None, point_labels=None, boxes=boxes, multimask_output=multimask
        )
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        decoded = time.perf_counter()
        return Segmentation(
            masks=masks,
            scores=scores,
            encode_ms=(encoded - started) * 1000,
            decode_ms=(decoded - encoded) * 1000,
        )
