"""The embedding cache: what the encoder made of each image, kept by the image's SHA-256 and the model type."""

from __future__ import annotations

import collections
import dataclasses
from typing import Hashable

import torch

from server.masks import Postprocess


@dataclasses.dataclass
class Embedding:
    """What the encoder made of one image, on the model's device, and how its logits map onto the image."""

    features: tuple[torch.Tensor, ...]  # SAM 1: one 1 × 256 × 64 × 64 map; SAM 2.1: that and two finer levels
    postprocess: Postprocess

    @property
    def nbytes(self) -> int:
        return sum(tensor.numel() * tensor.element_size() for tensor in self.features)


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
