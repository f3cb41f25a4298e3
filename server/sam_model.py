"""The model seam: what the processor asks of a segmentation model, the embedding cache, and loading by model type.

Two families sit behind it, each in a module of its own: SAM 1 (`vit_h`,
`vit_l`, `vit_b`, through segment-anything) in `server.models.sam1`, and
SAM 2.1 (`sam2.1_hiera_t`, `_s`, `_b+`, `_l`, through Meta's sam2 package)
in `server.models.sam2`. A family says how to embed a batch of images and
how to decode prompts on one embedding; `CachingModel` does the rest the
same way for both, so that for each prompt the result is what the family's
own predictor (`SamPredictor`, `SAM2ImagePredictor`) gives for that prompt
alone, but:
- several images go through the encoder as one batch (`segment_batch`);
- embeddings are kept in an LRU cache keyed by the image's SHA-256 and the
  model type, on the model's device, so that new prompts on a known image
  skip the encoder;
- the encoder runs under bfloat16 autocast where PRECISION says so
  (`resolve_precision`);
- the prompts of one image that have the same token structure (points
  count, box or not, mask or not) go through one decoder call;
- it stops at the low-resolution logits (N × C × 256 × 256): `masks.wire_masks`
  makes the image-sized masks one at a time, each only where it can be
  positive, so that memory does not grow with prompts × candidates × pixels.

The SAM 2.1 module is imported only when a SAM 2.1 type is loaded: importing
`sam2` initialises Hydra for the whole process.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from server.config import CHECKPOINT_URLS, PRECISIONS, SAM1_TYPES
from server.masks import Postprocess
from server.models.embedding_cache import Embedding, EmbeddingCache
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


@dataclasses.dataclass(frozen=True)
class Precision:
    """The encoder's arithmetic: float32, or bfloat16 autocast; `reason` says why, for the start-up log."""

    dtype: torch.dtype
    reason: str

    @property
    def name(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo: AVX-512 BF16 (Cooper Lake, Zen 4 on), AMX (Sapphire Rapids on)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags, as Linux lists them (empty where there is no /proc/cpuinfo)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_precision(setting: str, device: torch.device, flags: set[str] | None = None) -> Precision:
    """PRECISION for `device`: auto is bf16 where the device does bf16 natively, fp32 elsewhere."""
    if setting not in PRECISIONS:
        raise ValueError(f"PRECISION is one of {PRECISIONS}, not {setting!r}")
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
        hardware = f"{torch.cuda.get_device_name(device)} {'supports' if native else 'lacks'} bfloat16"
    else:
        found = sorted((cpu_flags() if flags is None else flags) & set(NATIVE_BF16_FLAGS))
        native = bool(found)
        hardware = f"the CPU has {' and '.join(found)}" if found else "the CPU has no native bfloat16 (avx512_bf16 or amx_bf16)"
    if setting == "fp32":
        return Precision(torch.float32, "PRECISION=fp32")
    if setting == "bf16":
        slow = "" if native else ", emulated, so slower than fp32"
        return Precision(torch.bfloat16, f"PRECISION=bf16 ({hardware}{slow})")
    return Precision(torch.bfloat16 if native else torch.float32, f"PRECISION=auto and {hardware}")


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

    def decode(self, embedding: Embedding, prompts: list[Prompt], multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits (N × C × s × s) and scores (N × C) of each prompt on one embedding, on the model's device."""
        ...

    def warm_up(self) -> float:
        """One pass on a blank image; the milliseconds it took."""
        ...

    def has_embedding(self, image_key: str) -> bool:
        """Whether the embedding of the image with this SHA-256 is cached (a job may then omit its pixels)."""
        ...

    def segment_batch(self, jobs: list[ImageJob]) -> list[Segmentation]:
        """Each job's prompts on its image: one `Segmentation` per job, in order."""
        ...


class CachingModel(abc.ABC):
    """A family's `embed` and `decode`, with what both families share: the cache, batching, timing. One thread uses it."""

    def __init__(self, model_type: str, cache_size: int, precision: Precision):
        self.model_type = model_type
        self.cache = EmbeddingCache(cache_size)
        self.precision = precision

    @property
    @abc.abstractmethod
    def device(self) -> torch.device: ...

    @abc.abstractmethod
    def embed(self, images: list[np.ndarray]) -> list[Embedding]: ...

    @abc.abstractmethod
    def decode(self, embedding: Embedding, prompts: list[Prompt], multimask: bool) -> tuple[torch.Tensor, torch.Tensor]: ...

    @abc.abstractmethod
    def memory(self) -> ModelMemory: ...

    @property
    def preferred_batch_size(self) -> int:
        return 4 if self.device.type == "cuda" else 1

    @property
    def prompts_per_call(self) -> int:
        """Prompts per mask decoder call: batching them saves time on a GPU, none on the CPU, only memory."""
        return 16 if self.device.type == "cuda" else 1

    def segment(self, pixels: np.ndarray, prompts: list[Prompt], multimask: bool) -> Segmentation:
        """Mask logits for each prompt on one RGB image, without the cache."""
        return self.segment_batch([ImageJob(pixels, prompts, multimask)])[0]

    def has_embedding(self, image_key: str) -> bool:
        return (image_key, self.model_type) in self.cache

    @torch.inference_mode()
    def segment_batch(self, jobs: list[ImageJob]) -> list[Segmentation]:
        """One encoder pass for every image not in the cache, then the decoder per image."""
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
                    postprocess=embedding.postprocess,  # type: ignore[union-attr]
                    encode_ms=encode_ms if index in missing else 0.0,
                    decode_ms=(time.perf_counter() - decoding) * 1000,
                    cached_embedding=index not in missing,
                )
            )
        return results

    def warm_up(self) -> float:
        """One pass on a blank image, so that the first real request does not pay for lazy set-up; ms."""
        started = time.perf_counter()
        blank = np.zeros((480, 640, 3), dtype=np.uint8)
        self.segment(blank, [Prompt(box=(0, 0, 320, 240))], multimask=True)
        return (time.perf_counter() - started) * 1000

    def _synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def load_model(
    model_type: str, checkpoint: Path, device: str = "auto", precision: str = "auto", cache_size: int = 0
) -> CachingModel:
    """Build `model_type`, load its weights from `checkpoint` onto `device` (a CheckpointError if they do not fit)."""
    check_checkpoint(model_type, checkpoint)
    resolved = torch.device(resolve_device(device))
    chosen = resolve_precision(precision, resolved)
    if model_type in SAM1_TYPES:
        from server.models import sam1 as family
    else:
        from server.models import sam2 as family  # imports sam2, which initialises Hydra: only when chosen
    return family.load(model_type, checkpoint, resolved, chosen, cache_size)


def weights_error(model_type: str, checkpoint: Path, wrong: str) -> CheckpointError:
    """The checkpoint exists but is not `model_type`'s weights; `wrong` says how."""
    return CheckpointError(
        f"The SAM checkpoint {checkpoint.resolve()} cannot be loaded ({wrong}): download it again with "
        f"{_fetch_hint(model_type)}, or set SAM_MODEL_TYPE to the model type it was made for."
    )
