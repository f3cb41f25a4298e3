"""Segment Anything: load a checkpoint, and turn images and prompts into mask logits.

Only the processor thread calls into a `SamModel`. For each prompt it gives
what `SamPredictor.set_image` + `predict` give for that prompt alone, with
the same arithmetic, but:
- several images go through the encoder as one batch (`segment_batch`);
- embeddings are kept in an LRU cache keyed by the image's SHA-256 and the
  model type, on the model's device, so that new prompts on a known image
  skip the encoder;
- on CUDA the encoder runs under bfloat16 autocast;
- the prompts of one image that have the same token structure (points
  count, box or not, mask or not) go through one decoder call;
- it stops at SAM's low-resolution logits (N × C × 256 × 256): `masks.wire_masks`
  makes the image-sized masks one at a time, each only where it can be
  positive, so that memory does not grow with prompts × candidates × pixels.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Hashable, Protocol, runtime_checkable

import numpy as np
import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from server.config import CHECKPOINT_URLS
from server.masks import Postprocess
from server.prompts import Prompt


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


class DeviceError(Exception):
    """SAM_DEVICE names a device this machine does not have; the message is one sentence for a person."""


def check_device(setting: str) -> None:
    """Fail fast, before anything starts, when SAM_DEVICE cannot be used here."""
    if setting == "auto":
        return
    try:
        device = torch.device(setting)
    except RuntimeError:
        raise DeviceError(f"SAM_DEVICE={setting!r} is not a device name: set it to auto, cpu, cuda or cuda:N.") from None
    if device.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise DeviceError(
            f"SAM_DEVICE={setting} but torch {torch.__version__} sees no CUDA GPU: check that nvidia-smi lists one "
            f"(with a driver new enough for CUDA {torch.version.cuda}) and, in Docker, that the container runs with "
            "--gpus all; or set SAM_DEVICE=auto to run on the CPU."
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(
            f"SAM_DEVICE={setting} but this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0: "
            "set SAM_DEVICE=cuda or an index that exists."
        )


def _fetch_hint(model_type: str) -> str:
    return f"`python -m server download-checkpoint` (from {CHECKPOINT_URLS[model_type]})"


def check_checkpoint(model_type: str, checkpoint: Path) -> None:
    """Fail fast, before anything starts, when the checkpoint file is not there."""
    if not checkpoint.is_file():
        raise CheckpointError(
            f"No SAM checkpoint at {checkpoint.resolve()} (SAM_CHECKPOINT, for SAM_MODEL_TYPE={model_type}): "
            f"download it with {_fetch_hint(model_type)}, or set SAM_CHECKPOINT to where the file is."
        )


def load_sam(model_type: str, checkpoint: Path, device: str) -> Sam:
    """Build `model_type` and load its weights from `checkpoint` onto `device`."""
    check_checkpoint(model_type, checkpoint)
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        sam = sam_model_registry[model_type]()
        sam.load_state_dict(state)
    except Exception as exc:  # torch raises many kinds for a bad file
        wrong = (
            f"its weights do not fit a {model_type} model" if "state_dict" in str(exc)
            else f"it is not a complete PyTorch checkpoint, {type(exc).__name__}"
        )
        raise CheckpointError(
            f"The SAM checkpoint {checkpoint.resolve()} cannot be loaded ({wrong}): download it again with "
            f"{_fetch_hint(model_type)}, or set SAM_MODEL_TYPE to the model type it was made for."
        ) from None
    return sam.to(resolve_device(device)).eval()


@dataclasses.dataclass
class ImageJob:
    """One image and its prompts, for `segment_batch`."""

    pixels: np.ndarray | None  # RGB, H×W×3 uint8; None only when the embedding of image_key is cached
    prompts: list[Prompt]  # may be empty: the image's embedding is made (and cached), no masks
    multimask: bool
    image_key: str | None = None  # the image's SHA-256; None keeps it out of the cache


@dataclasses.dataclass
class Segmentation:
    low_res: torch.Tensor  # float32 logits on the CPU, N prompts × C candidates × s × s (C: 3 with multimask, else 1)
    scores: torch.Tensor  # float32 on the CPU, N × C (SAM's predicted IoU)
    postprocess: Postprocess  # how `masks.wire_masks` turns `low_res` into masks of the image
    encode_ms: float  # the encoder pass this image was part of (0 when cached)
    decode_ms: float
    cached_embedding: bool

    def mask_input(self, prompt: int, candidate: int = 0) -> np.ndarray:
        """One mask's low-res logits (1 × s × s), as a later prompt's `mask_input` takes them."""
        return self.low_res[prompt, candidate : candidate + 1].numpy().copy()


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

    def __contains__(self, key: Hashable) -> bool:
        """Whether `key` is kept; unlike `get`, neither counted nor made recent."""
        return key in self._entries

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


@runtime_checkable
class SegmentationModel(Protocol):
    """What the processor needs of a model: `SamModel`, or a test's double of it."""

    model_type: str

    @property
    def device(self) -> torch.device: ...

    @property
    def cache(self) -> EmbeddingCache: ...

    def warm_up(self) -> float:
        """One pass on a blank image; the milliseconds it took."""
        ...

    def has_embedding(self, image_key: str) -> bool:
        """Whether the embedding of the image with this SHA-256 is cached (a job may then omit its pixels)."""
        ...

    def segment_batch(self, jobs: list[ImageJob]) -> list[Segmentation]:
        """Each job's prompts on its image: one `Segmentation` per job, in order."""
        ...


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

    def segment(self, pixels: np.ndarray, prompts: list[Prompt], multimask: bool) -> Segmentation:
        """Mask logits for each prompt on one RGB image, without the cache."""
        return self.segment_batch([ImageJob(pixels, prompts, multimask)])[0]

    def has_embedding(self, image_key: str) -> bool:
        return (image_key, self.model_type) in self.cache

    @torch.inference_mode()
    def segment_batch(self, jobs: list[ImageJob]) -> list[Segmentation]:
        """One encoder pass for every image not in the cache, then one decoder call per image."""
        started = time.perf_counter()
        keys = [(job.image_key, self.model_type) if job.image_key else None for job in jobs]
        embeddings = [self.cache.get(key) if key else None for key in keys]
        missing = [index for index, embedding in enumerate(embeddings) if embedding is None]
        without_pixels = [jobs[i].image_key for i in missing if jobs[i].pixels is None]
        if without_pixels:
            raise LookupError(f"no pixels, and no cached embedding, for the image {without_pixels[0]}")
        if missing:
            for index, embedding in zip(missing, self.embed([jobs[i].pixels for i in missing])):  # type: ignore[misc]
                embeddings[index] = embedding
                if keys[index]:
                    self.cache.put(keys[index], embedding)
        self._synchronize()
        encode_ms = (time.perf_counter() - started) * 1000

        results = []
        for index, (job, embedding) in enumerate(zip(jobs, embeddings)):
            decoding = time.perf_counter()
            low_res, scores = self.decode(embedding, job.prompts, job.multimask)  # type: ignore[arg-type]
            low_res, scores = low_res.float().cpu(), scores.float().cpu()  # small; the mask cache keeps them
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

    def decode(
        self, embedding: Embedding, prompts: list[Prompt], multimask: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's low-res logits (N × C × s × s) and scores (N × C) of each prompt, on the model's device.

        Prompt `i` gets what `SamPredictor.predict` gives for it alone. SAM adds
        a "not a point" token to points without a box, so prompts only share a
        decoder call with prompts of the same structure; one call per structure.
        """
        candidates = 3 if multimask else 1
        side = self.sam.prompt_encoder.mask_input_size
        low_res = torch.empty((len(prompts), candidates, *side), device=self.device)
        scores = torch.empty((len(prompts), candidates), device=self.device)
        groups: dict[tuple[int, bool, bool], list[int]] = {}
        for index, prompt in enumerate(prompts):
            groups.setdefault(prompt.structure, []).append(index)
        for indices in groups.values():
            group = [prompts[i] for i in indices]
            sparse, dense = self.sam.prompt_encoder(**self._prompt_tensors(group, embedding.original_size))
            group_low_res, group_scores = self.sam.mask_decoder(
                image_embeddings=embedding.features,
                image_pe=self._dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
            )
            where = torch.as_tensor(indices, device=self.device)
            low_res[where], scores[where] = group_low_res, group_scores
        return low_res, scores

    def _prompt_tensors(self, group: list[Prompt], original_size: tuple[int, int]) -> dict:
        """The prompt encoder's `points`, `boxes` and `masks` for prompts of one structure, as `predict` makes them."""
        first = group[0]
        points = boxes = masks = None
        if first.points:
            coords = np.array([[(point.x, point.y) for point in prompt.points] for prompt in group], dtype=float)
            labels = np.array([[point.label for point in prompt.points] for prompt in group])
            points = (
                torch.as_tensor(self.transform.apply_coords(coords, original_size), dtype=torch.float, device=self.device),
                torch.as_tensor(labels, dtype=torch.int, device=self.device),
            )
        if first.box is not None:
            corners = np.array([prompt.box for prompt in group], dtype=float)
            boxes = torch.as_tensor(self.transform.apply_boxes(corners, original_size), dtype=torch.float, device=self.device)
        if first.mask_input is not None:
            stacked = np.stack([prompt.mask_input for prompt in group])  # type: ignore[misc]
            if stacked.shape[-2:] != tuple(self.sam.prompt_encoder.mask_input_size):
                raise ValueError(f"mask_input must be 1 × {self.sam.prompt_encoder.mask_input_size}, not {stacked.shape[1:]}")
            masks = torch.as_tensor(stacked, dtype=torch.float, device=self.device)
        return {"points": points, "boxes": boxes, "masks": masks}

    def postprocess(self, embedding: Embedding) -> Postprocess:
        """How SAM's `postprocess_masks` and threshold map this image's low-res logits onto it."""
        return Postprocess(
            self.sam.image_encoder.img_size, embedding.input_size, embedding.original_size, self.sam.mask_threshold
        )

    def warm_up(self) -> float:
        """One pass on a blank image, so that the first real request does not pay for lazy set-up; ms."""
        started = time.perf_counter()
        blank = np.zeros((480, 640, 3), dtype=np.uint8)
        self.segment(blank, [Prompt(box=(0, 0, 320, 240))], multimask=True)
        return (time.perf_counter() - started) * 1000

    def _encoder_precision(self) -> contextlib.AbstractContextManager:
        """bfloat16 autocast on a CUDA device that supports it; full precision elsewhere."""
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
