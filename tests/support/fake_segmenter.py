"""A small `Segmenter` double for the adapters' fast unit tests: it answers with masks it was given, and keeps what it was asked."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from server.adapters.calls import Ask
from server.errors import ClientError


def wire_mask(mask: np.ndarray, score: float, polygons: list[list[int]] | None = None) -> dict[str, Any]:
    """One mask as CAP's `result` message carries it (docs/protocol.md, "The result")."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    wired: dict[str, Any] = {"score": score, "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode()}}
    if polygons is not None:
        wired["polygons"] = polygons
    return wired


class FakeSegmenter:
    """Answers every ask with `masks` (one entry per prompt: a mask, or a list of candidates), or raises `error`."""

    def __init__(self, masks: list[Any] | None = None, error: ClientError | None = None):
        self.masks = masks or []
        self.error = error
        self.asked: list[tuple[Ask, str | None]] = []
        self.prepared: list[tuple[Ask, str | None]] = []

    def segment(self, ask: Ask, scope: str | None) -> dict[str, Any]:
        self.asked.append((ask, scope))
        if self.error is not None:
            raise self.error
        return {"type": "result", "id": "fake", "masks": self.masks, "cached_embedding": False}

    def prepare(self, ask: Ask, scope: str | None) -> None:
        self.prepared.append((ask, scope))
