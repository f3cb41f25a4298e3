"""Mask helpers for tests: holes filled, polygon rings rasterised by COCO's own code, IoU."""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils


def filled(mask: np.ndarray) -> np.ndarray:
    """The mask with its holes filled: all but the background 4-connected to the outside."""
    outside = np.ascontiguousarray(np.pad(mask.astype(np.uint8), 1))
    cv2.floodFill(outside, None, (0, 0), 2, flags=4)
    return (outside != 2)[1:-1, 1:-1]


def rasterised(rings: list, height: int, width: int) -> np.ndarray:
    if not rings:
        return np.zeros((height, width), bool)
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(rings, height, width))).astype(bool)


def iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union
