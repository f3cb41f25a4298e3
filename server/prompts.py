"""Prompts, as SAM takes them: what to segment on one image, in image pixels.

A prompt is what `SamPredictor.predict` takes for one mask: a box, points
(x, y, label: 1 foreground, 0 background), and the low-resolution logits of
an earlier result as a mask to refine. SAM's prompt encoder turns points and
a box into tokens, and adds a "not a point" token to points without a box;
`structure` says which prompts can share one decoder call.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np


class Point(NamedTuple):
    x: float
    y: float
    label: int  # 1 foreground, 0 background


@dataclasses.dataclass(frozen=True, eq=False)
class Prompt:
    """One prompt; it needs a box or at least one point."""

    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1
    points: tuple[Point, ...] = ()
    mask_input: np.ndarray | None = None  # 1 × s × s float32: an earlier result's low-res logits

    def __post_init__(self) -> None:
        if self.box is None and not self.points:
            raise ValueError("a prompt needs a box or at least one point")
        if any(point.label not in (0, 1) for point in self.points):
            raise ValueError("a point's label is 1 (foreground) or 0 (background)")
        if self.mask_input is not None and (self.mask_input.ndim != 3 or self.mask_input.shape[0] != 1):
            raise ValueError(f"mask_input is 1 × s × s low-res logits, not {self.mask_input.shape}")

    @property
    def structure(self) -> tuple[int, bool, bool]:
        """Prompts with the same points count, box or not, mask or not go through the decoder together."""
        return len(self.points), self.box is not None, self.mask_input is not None


def decoder_calls(prompts: list[Prompt], most: int) -> list[list[int]]:
    """The prompts' indices, split into decoder calls: one structure per call, at most `most` prompts each.

    SAM's mask decoder repeats the image embedding once per prompt of a call,
    so a call's memory grows with its prompts (16 boxes at once: about 550 MB
    at 4000×3000 on the CPU, where batching them saves no time at all).
    """
    groups: dict[tuple[int, bool, bool], list[int]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(prompt.structure, []).append(index)
    return [indices[start : start + most] for indices in groups.values() for start in range(0, len(indices), most)]


def box_xyxy(box: dict[str, float]) -> tuple[float, float, float, float]:
    """A wire box `{x, y, width, height}` as corners x0, y0, x1, y1."""
    return (box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"])


def from_boxes(boxes: list[dict[str, float]]) -> list[Prompt]:
    """One box prompt per wire box (protocol 1's `boxes`)."""
    return [Prompt(box=box_xyxy(box)) for box in boxes]


def from_dict(prompt: dict[str, Any], mask_input: np.ndarray | None = None) -> Prompt:
    """A protocol 1.1 prompt `{box?, points?}`; its `mask_input` reference resolved by the caller."""
    box = prompt.get("box")
    return Prompt(
        box=box_xyxy(box) if box is not None else None,
        points=tuple(Point(point["x"], point["y"], point["label"]) for point in prompt.get("points", ())),
        mask_input=mask_input,
    )
