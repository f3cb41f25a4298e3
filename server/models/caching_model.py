"""`CachingModel`: what every family shares behind the seam, so that a family says only how to embed and decode.

A family says how to embed a batch of images and how to decode prompts on
one embedding; `CachingModel` does the rest the same way for all, so that
for each prompt the result is what the family's own predictor
(`SamPredictor`, `SAM2ImagePredictor`) gives for that prompt alone, but:
- several images go through the encoder as one batch (`segment_batch`);
- embeddings are kept in an LRU cache keyed by the image's SHA-256, the
  model type and the API token's scope, on the model's device, so that new
  prompts on a known image skip the encoder; each token's scope may hold
  its share of it (server/scoped_lru.py);
- the encoder runs under bfloat16 autocast where PRECISION says so
  (`server.models.device.resolve_precision`);
- the prompts of one image that have the same token structure (points
  count, box or not, mask or not) go through one decoder call;
- it stops at the low-resolution logits (N × C × 256 × 256): `masks.wire_masks`
  makes the image-sized masks one at a time, each only where it can be
  positive, so that memory does not grow with prompts × candidates × pixels.
"""

from __future__ import annotations

import abc
import time

import numpy as np
import torch

from server.models.device import Precision
from server.models.embedding_cache import Embedding, EmbeddingCache
from server.models.seam import ImageJob, ModelMemory, Segmentation
from server.prompts import Prompt


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
    def decode(
        self,
        embedding: Embedding,
        prompts: list[Prompt],
        multimask: bool,
        per_call: int | None = None,
        score_floor: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

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

    def has_embedding(self, image_key: str, scope: str | None = None) -> bool:
        return (image_key, self.model_type, scope) in self.cache

    @torch.inference_mode()
    def segment_batch(self, jobs: list[ImageJob]) -> list[Segmentation]:
        """One encoder pass for every image not in the cache, then the decoder per image."""
        started = time.perf_counter()
        keys = [(job.image_key, self.model_type, job.scope) if job.image_key else None for job in jobs]
        embeddings = [self.cache.get(key) if key else None for key in keys]
        missing = [index for index, embedding in enumerate(embeddings) if embedding is None]
        without_pixels = [jobs[i].image_key for i in missing if jobs[i].pixels is None]
        if without_pixels:
            raise LookupError(f"no pixels, and no cached embedding, for the image {without_pixels[0]}")
        if missing:
            for index, embedding in zip(missing, self.embed([jobs[i].pixels for i in missing])):  # type: ignore[misc]
                embeddings[index] = embedding
                if keys[index]:
                    self.cache.put(keys[index], embedding, scope=jobs[index].scope)
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
