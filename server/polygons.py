"""Masks to COCO polygons: outer boundaries along pixel edges, in image pixels.

OpenCV's `findContours` traces the centres of a mask's boundary pixels, so a
polygon drawn through them loses half a pixel all around (a one-pixel
fragment vanishes). Traced on the mask scaled up 2× (each pixel a 2×2
block), the centres of a block's corner cells sit a quarter pixel inside
the original pixel's corners, on the side they belong to: upscaled index u
is original edge (u + 1) // 2 exactly, for every boundary, concave corners
and pixels that touch only diagonally included. Holes are not represented
(COCO, CVAT and Label Studio polygons have none): rasterised, the rings give
the mask with its holes filled.
"""

from __future__ import annotations

import cv2
import numpy as np


def _simplify(ring: np.ndarray) -> np.ndarray:
    """Drop repeated vertices, and middle vertices of straight runs (rings are closed)."""
    ring = ring[np.any(ring != np.roll(ring, 1, axis=0), axis=1)]
    if len(ring) < 3:
        return ring
    before, after = np.roll(ring, 1, axis=0), np.roll(ring, -1, axis=0)
    cross = (ring[:, 0] - before[:, 0]) * (after[:, 1] - ring[:, 1]) - (ring[:, 1] - before[:, 1]) * (after[:, 0] - ring[:, 0])
    return ring[cross != 0]


def outer_rings(mask: np.ndarray, top: int = 0, left: int = 0) -> list[list[int]]:
    """The outer rings of a boolean mask placed at (top, left) in the image.

    Each ring is a flat [x1, y1, x2, y2, ...] list of pixel-edge coordinates
    in the image, with at least 3 (in fact 4) vertices.
    """
    return as_lists(ring_arrays(mask, top, left))


def ring_arrays(mask: np.ndarray, top: int = 0, left: int = 0) -> list[np.ndarray]:
    """`outer_rings` as vertices × 2 arrays of (x, y), before they become lists: counted cheaply."""
    if not mask.any():
        return []
    # 2× up, with a zero border so that rings on the mask's edge are traced like any other.
    doubled = np.zeros((2 * mask.shape[0] + 2, 2 * mask.shape[1] + 2), dtype=np.uint8)
    for row in (1, 2):  # written in place: no image-sized temporaries
        for col in (1, 2):
            doubled[row : row + 2 * mask.shape[0] : 2, col : col + 2 * mask.shape[1] : 2] = mask
    contours, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(-1, -1))
    del doubled
    rings = (_simplify((contour[:, 0, :].astype(np.int64) + 1) // 2 + (left, top)) for contour in contours)
    return [ring for ring in rings if len(ring) >= 3]


def vertex_count(rings: list[np.ndarray]) -> int:
    return sum(len(ring) for ring in rings)


def as_lists(rings: list[np.ndarray]) -> list[list[int]]:
    """Rings as the wire has them: flat [x1, y1, x2, y2, ...] lists."""
    return [ring.reshape(-1).tolist() for ring in rings]
