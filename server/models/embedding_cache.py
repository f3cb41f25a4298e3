"""The embedding cache: what the encoder made of each image, kept by the image's SHA-256, the model type and the token's scope."""

from __future__ import annotations

import dataclasses
from typing import Hashable

import torch

from server.masks import Postprocess
from server.scoped_lru import ScopedLru


@dataclasses.dataclass
class Embedding:
    """What the encoder made of one image, on the model's device, and how its logits map onto the image."""

    features: tuple[torch.Tensor, ...]  # SAM 1: one 1 × 256 × 64 × 64 map; SAM 2.1: that and two finer levels
    postprocess: Postprocess

    @property
    def nbytes(self) -> int:
        return sum(tensor.numel() * tensor.element_size() for tensor in self.features)


class EmbeddingCache(ScopedLru[Embedding]):
    """A least-recently-used map with a fixed capacity (0 keeps nothing), shared fairly by the scopes
    of API tokens (server/scoped_lru.py): each may hold its share, so one token cannot evict everyone's."""

    def __init__(self, capacity: int):
        super().__init__(capacity)
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Embedding | None:
        found = super().get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found
