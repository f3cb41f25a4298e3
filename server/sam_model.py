"""Segment Anything: load a checkpoint, and turn images and boxes into masks.

Only the processor thread calls into a `SamModel`. It does what
`SamPredictor.set_image` + `predict_torch` do, with the same arithmetic, but:
- several images go through the encoder as one batch (`segment_batch`);
- embeddings are kept in an LRU cache keyed by the image's SHA-256 and the
  model type, on the model's device, so that new boxes on a known image skip
  the encoder;
- on CUDA the encoder runs under bfloat16 autocast;
- all boxes of one image go through one decoder call;
- it stops at SAM's low-resolution logits (N × C × 256 × 256): `masks.wire_masks`
  makes the image-sized masks one at a time, each only where it can be
  positive, so that memory does not grow with boxes × candidates × pixels.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Hashable

import numpy as np
import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from server.config import CHECKPOINT_URLS
from server.masks import Postprocess


class CheckpointError(Exception):
    """The checkpoint is missing or unusable; the message is one paragraph for a person."""


def resolve_device(setting: str) -> str:
    """`auto` means CUDA when it is available, else the CPU."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def available_cores() -> int:
    """The CPU cores this process may use: its affinity, capped by a cgroup CPU quota (docker --cpus)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit to read
    return cores


def set_torch_threads(setting: int) -> int:
    """Give torch TORCH_THREADS threads (0: the cores this process may use); returns the count."""
    threads = setting or available_cores()
    torch.set_num_threads(threads)
    return threads


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
class ImageJob:
    """One image and its boxes (x0, y0, x1, y1 in image pixels), for `segment_batch`."""

    pixels: np.ndarray  # RGB, H×W×3 uint8
    boxes_xyxy: np.ndarray  # N×4 float32
    multimask: bool
    image_key: str | None = None  # the image's SHA-256; None keeps it out of the cache


@dataclasses.dataclass
class Segmentation:
    low_res: torch.Tensor  # float32 logits, N boxes × C candidates × s × s (C is 3 with multimask, else 1)
    scores: torch.Tensor  # float, N × C (SAM's predicted IoU)
    postprocess: Postprocess  # how `masks.wire_masks` turns `low_res` into masks of the image
    encode_ms: float  # the encoder pass this image was part of (0 when cached)
    decode_ms: float
    cached_embedding: bool


@dataclasses.dataclass
class Embedding:
    features: torch.Tensor  # 1 × C × h × w, on the model's device
    input_size: tuple[int, int]  # the image resized for the encoder, before padding
    original_size: tuple[int, int]


class EmbeddingCache:
    """A least-recently-used map with a fixed capacity (0 keeps nothing)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._entries: collections.OrderedDict[Hashable, Embedding] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Embedding | None:
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
            self._entries.move_to_end(key)
        return found

    def put(self, key: Hashable, embedding: Embedding) -> None:
        if self.capacity <= 0:
            return
        self._entries[key] = embedding
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)


class SamModel:
    """One SAM model on one device, used by one thread."""

    def __init__(self, sam: Sam, model_type: str, cache_size: int = 0):
        self.sam = sam
        self.model_type = model_type
        self.cache = EmbeddingCache(cache_size)
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)
        with torch.inference_mode():
            self._dense_pe = sam.prompt_encoder.get_dense_pe()  # constant; SAM recomputes it per call

    @property
    def device(self) -> torch.device:
        return self.sam.device

    def segment(self, pixels: np.ndarray, boxes_xyxy: np.ndarray, multimask: bool) -> Segmentation:
        """Masks for each box on one RGB image, without the cache."""
        return self.segment_batch([ImageJob(pixels, boxes_xyxy, multimask)])[0]

    @torch.inference_mode()
    def segment_batch(self, jobs: list[ImageJob]) -> list[Segmentation]:
        """One encoder pass for every image not in the cache, then one decoder call per image."""
        started = time.perf_counter()
        keys = [(job.image_key, self.model_type) if job.image_key else None for job in jobs]
        embeddings = [self.cache.get(key) if key else None for key in keys]
        missing = [index for index, embedding in enumerate(embeddings) if embedding is None]
        if missing:
            for index, embedding in zip(missing, self.embed([jobs[i].pixels for i in missing])):
                embeddings[index] = embedding
                if keys[index]:
                    self.cache.put(keys[index], embedding)
        self._synchronize()
        encode_ms = (time.perf_counter() - started) * 1000

        results = []
        for index, (job, embedding) in enumerate(zip(jobs, embeddings)):
            decoding = time.perf_counter()
            low_res, scores = self.decode(embedding, job.boxes_xyxy, job.multimask)  # type: ignore[arg-type]
            self._synchronize()
            results.append(
                Segmentation(
                    low_res=low_res,
                    scores=scores,
                    postprocess=self.postprocess(embedding),  # type: ignore[arg-type]
                    encode_ms=encode_ms if index in missing else 0.0,
                    decode_ms=(time.perf_counter() - decoding) * 1000,
                    cached_embedding=index not in missing,
                )
            )
        return results

    def embed(self, images: list[np.ndarray]) -> list[Embedding]:
        """The encoder, once, on a batch of RGB images (as `SamPredictor.set_image` prepares each)."""
        inputs, sizes = [], []
        for pixels in images:
            resized = torch.as_tensor(self.transform.apply_image(pixels), device=self.device)
            resized = resized.permute(2, 0, 1).contiguous()[None, :, :, :]
            sizes.append(tuple(resized.shape[-2:]))
            inputs.append(self.sam.preprocess(resized))  # normalise, pad to the square input
        with self._encoder_precision():
            features = self.sam.image_encoder(torch.cat(inputs)).float()
        return [
            # clone: a cached embedding must not keep the whole batch's features alive
            Embedding(features[i : i + 1].clone(), sizes[i], tuple(pixels.shape[:2]))  # type: ignore[arg-type]
            for i, pixels in enumerate(images)
        ]

    def decode(self, embedding: Embedding, boxes_xyxy: np.ndarray, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """All boxes of one image through the prompt encoder and mask decoder at once (as `predict_torch`).

        Returns SAM's low-resolution logits (N × C × s × s) and scores (N × C).
        """
        boxes = torch.as_tensor(boxes_xyxy, dtype=torch.float32, device=self.device)
        boxes = self.transform.apply_boxes_torch(boxes, embedding.original_size)
        sparse, dense = self.sam.prompt_encoder(points=None, boxes=boxes, masks=None)
        low_res, scores = self.sam.mask_decoder(
            image_embeddings=embedding.features,
            image_pe=self._dense_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        return low_res, scores

    def postprocess(self, embedding: Embedding) -> Postprocess:
        """How SAM's `postprocess_masks` and threshold map this image's low-res logits onto it."""
        return Postprocess(
            self.sam.image_encoder.img_size, embedding.input_size, embedding.original_size, self.sam.mask_threshold
        )

    def warm_up(self) -> float:
        """One pass on a blank image, so that the first real request does not pay for lazy set-up; ms."""
        started = time.perf_counter()
        blank = np.zeros((480, 640, 3), dtype=np.uint8)
        self.segment(blank, np.array([[0, 0, 320, 240]], dtype=np.float32), multimask=True)
        return (time.perf_counter() - started) * 1000

    def _encoder_precision(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast on a CUDA device that supports it; full precision elsewhere."""
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
