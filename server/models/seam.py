"""The model seam: what the processor asks of a segmentation model, and what a family provides.

The processor sees a model only through `SegmentationModel`: embed a batch of
images, decode prompts on one embedding, and `segment_batch`, which does both
with the embedding cache (`CachingModel` does it the same way for every
family). A family (`server.models.sam1`, `server.models.sam2`, a row of
`server.models.registry` each) is a module with a `load` function (`Family`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from server.masks import Postprocess
from server.models.device import Precision
from server.models.embedding_cache import Embedding, EmbeddingCache
from server.models.registry import ModelType
from server.prompts import Prompt


@dataclasses.dataclass
class ImageJob:
    """One image and its prompts, for `segment_batch`."""

    pixels: np.ndarray | None  # RGB, H×W×3 uint8; None only when the embedding of image_key is cached
    prompts: list[Prompt]  # may be empty: the image's embedding is made (and cached), no masks
    multimask: bool
    image_key: str | None = None  # the image's SHA-256; None keeps it out of the cache
    scope: str | None = None  # the API token's scope (server/tokens.py): its embedding is cached for that scope only


@dataclasses.dataclass
class Segmentation:
    low_res: torch.Tensor  # float32 logits on the CPU, N prompts × C candidates × s × s (C: 3 with multimask, else 1)
    scores: torch.Tensor  # float32 on the CPU, N × C (the model's predicted IoU)
    postprocess: Postprocess  # how `masks.wire_masks` turns `low_res` into masks of the image
    encode_ms: float  # the encoder pass this image was part of (0 when cached)
    decode_ms: float
    cached_embedding: bool

    def mask_input(self, prompt: int, candidate: int = 0) -> np.ndarray:
        """One mask's low-res logits (1 × s × s), as a later prompt's `mask_input` takes them."""
        return self.low_res[prompt, candidate : candidate + 1].numpy().copy()


@dataclasses.dataclass(frozen=True)
class ModelMemory:
    """What a model holds: its weights, and each cached image's embedding (EMBEDDING_CACHE_SIZE of them at most)."""

    weights_bytes: int
    embedding_bytes: int


@runtime_checkable
class SegmentationModel(Protocol):
    """The model seam: what the processor and the tests need of a model (`CachingModel`, or a test's double)."""

    model_type: str
    precision: Precision

    @property
    def device(self) -> torch.device: ...

    @property
    def cache(self) -> EmbeddingCache: ...

    @property
    def preferred_batch_size(self) -> int:
        """Images per encoder pass that pay off on this device: 4 on a GPU, 1 on the CPU."""
        ...

    def memory(self) -> ModelMemory: ...

    def embed(self, images: list[np.ndarray]) -> list[Embedding]:
        """The encoder, once, on a batch of RGB images (H×W×3 uint8); one embedding per image."""
        ...

    def decode(
        self,
        embedding: Embedding,
        prompts: list[Prompt],
        multimask: bool,
        per_call: int | None = None,
        score_floor: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits (N × C × s × s) and scores (N × C) of each prompt on one embedding, on the model's device.

        Prompts of one structure share a decoder call, `per_call` at most (None: the model's own choice;
        `everything` decodes its whole batch of grid points at once, as the reference generators do).
        With `score_floor`, a model may leave out the logits (zeros) of a prompt whose every score is at or
        below it: `everything` drops those candidates unseen, and the scores come before the masks."""
        ...

    def warm_up(self) -> float:
        """One pass on a blank image; the milliseconds it took."""
        ...

    def has_embedding(self, image_key: str, scope: str | None = None) -> bool:
        """Whether the embedding of the image with this SHA-256 is cached for this scope (a job may then omit its pixels)."""
        ...

    def segment_batch(self, jobs: list[ImageJob]) -> list[Segmentation]:
        """Each job's prompts on its image: one `Segmentation` per job, in order."""
        ...


class Family(Protocol):
    """A family module (see `server.models.registry`): how to load one of its model types."""

    def load(
        self, model_type: ModelType, checkpoint: Path, device: torch.device, precision: Precision, cache_size: int
    ) -> SegmentationModel:
        """The model with its weights from `checkpoint` on `device`; a `CheckpointError` if they do not fit."""
        ...


@runtime_checkable
class VideoModel(Protocol):
    """A model that also tracks objects through a clip (SAM 2.1: `Sam2Model`)."""

    @property
    def image_size(self) -> int:
        """The side of the square frames it takes (1024)."""
        ...

    def open_video(self, frames: list[np.ndarray], width: int, height: int) -> Any:
        """A `server.models.sam2_video.VideoTracker` on frames of `image_size`² uint8 RGB from a `width`×`height` clip."""
        ...
