"""Masks to COCO run-length encoding (RLE), as the wire protocol sends them."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils


def encode(masks: torch.Tensor) -> list[dict[str, Any]]:
    """Encode N boolean H×W masks; each entry has `segmentation`, `area` and `bbox`.

    `segmentation` is `{"size": [H, W], "counts": str}`: what
    `pycocotools.mask.encode` writes, with `counts` decoded to text, so that
    `pycocotools.mask.decode` gives back the exact mask in image orientation.
    """
    if masks.ndim != 3:
        raise ValueError(f"expected N×H×W masks, got shape {tuple(masks.shape)}")
    # COCO RLE runs down columns: pycocotools wants an H×W×N Fortran-ordered
    # uint8 array, which is an N×W×H C-ordered one in memory. One copy of the
    # boolean tensor (on its device, then to the CPU) gives exactly that; a
    # bool array reads as uint8 0/1 without another copy.
    by_column = masks.to(torch.bool).transpose(1, 2).contiguous().cpu().numpy()
    stacked = by_column.view(np.uint8).transpose(2, 1, 0)
    rles = mask_utils.encode(stacked)
    areas = mask_utils.area(rles)
    bboxes = mask_utils.toBbox(rles)
    return [
        {
            "area": int(area),
            "bbox": [round(float(v), 2) for v in bbox],
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
        }
        for rle, area, bbox in zip(rles, areas, bboxes)
    ]


def decode(segmentation: dict[str, Any]) -> np.ndarray:
    """The H×W uint8 mask of one wire `segmentation` (for tests and clients)."""
    return mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")})


def wire_masks(
    masks: torch.Tensor, scores: torch.Tensor, boxes: list[dict[str, float]], multimask: bool
) -> list[Any]:
    """The `masks` list of a result: one entry per box, or 3 per box with multimask.

    `masks` is N×C×H×W boolean and `scores` N×C, as `SamModel.segment` returns them.
    """
    count, candidates, height, width = masks.shape
    encoded = encode(masks.reshape(count * candidates, height, width))
    flat_scores = scores.reshape(-1).tolist()
    answers = []
    for index, box in enumerate(boxes):
        group = [
            {"box": box, "score": round(flat_scores[k], 4), **encoded[k]}
            for k in range(index * candidates, (index + 1) * candidates)
        ]
        answers.append(group if multimask else group[0])
    return answers
