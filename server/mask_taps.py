"""The interpolation weights of SAM's two bilinear resizes, per image row (or column), for `server.masks`.

Both resizes are linear and separable: each image row reads at most four
low-resolution rows, with non-negative weights summing to one (and each
column likewise). `Taps` holds them; `combine` applies them; `edge_share`
estimates, at low resolution, how much of a mask's crop lies on its edge.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np


def _resize_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The two source indices and weights of each output index of a bilinear resize (align_corners=False).

    As `torch.nn.functional.interpolate` computes them, in float32 like it:
    source = (i + 0.5) · in/out − 0.5, clamped at 0; the next index is
    clamped at the last one.
    """
    half = np.float32(0.5)
    scale = np.float32(in_size) / np.float32(out_size)
    source = np.maximum(scale * (np.arange(out_size, dtype=np.float32) + half) - half, np.float32(0))
    first = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    second = np.minimum(first + 1, in_size - 1)
    fraction = np.clip(source - first, 0, 1)
    return np.stack([first, second], 1), np.stack([1 - fraction, fraction], 1)


def _axis_taps(low_res: int, encoder_size: int, input_len: int, original_len: int) -> tuple[np.ndarray, np.ndarray]:
    """For each image row (or column): the four low-resolution indices it reads and their weights."""
    up_index, up_weight = _resize_taps(low_res, encoder_size)  # low-res -> encoder square
    down_index, down_weight = _resize_taps(input_len, original_len)  # its first input_len -> image
    index = up_index[down_index].reshape(original_len, 4)
    weight = (down_weight[:, :, None] * up_weight[down_index]).reshape(original_len, 4)
    return index, weight


# `combine` works through this many output values at a time (256 KB of float32 per temporary): kept in the
# core's cache, the four passes over them take a third of the time they take over a whole 640×480 mask.
COMBINE_CHUNK_VALUES = 1 << 16


def combine(lines: np.ndarray, index: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Row i of the result is the sum over k of weight[i, k] · lines[index[i, k]].

    Summed in the order of k, as one pass over the whole result would: the same float32 values.
    """
    result = np.empty((index.shape[0],) + lines.shape[1:], dtype=np.result_type(lines, weight))
    step = max(1, COMBINE_CHUNK_VALUES // max(1, int(np.prod(lines.shape[1:]))))
    for start in range(0, index.shape[0], step):
        part, taps, weights = result[start : start + step], index[start : start + step], weight[start : start + step]
        np.multiply(lines[taps[:, 0]], weights[:, 0, None], out=part)
        for k in range(1, index.shape[1]):
            part += lines[taps[:, k]] * weights[:, k, None]
    return result


@dataclasses.dataclass
class Taps:
    """Per image row (or column): the four low-res lines it reads, their weights, and runs of equal support."""

    index: np.ndarray  # n × 4 int
    weight: np.ndarray  # n × 4 float32
    support: np.ndarray  # n × 4 bool: weight > 0

    @classmethod
    @functools.lru_cache(maxsize=64)  # a session's clicks on one image (and everything's regions) share them
    def along(cls, low_res: int, encoder_size: int, input_len: int, original_len: int) -> Taps:
        """The taps of one axis; the same (read-only) object for the same sizes: 0.1 ms to make at 640, 0.5 at 4000."""
        index, weight = _axis_taps(low_res, encoder_size, input_len, original_len)
        arrays = (index, weight.astype(np.float32), weight > 0)
        for array in arrays:
            array.setflags(write=False)
        return cls(*arrays)

    def span(self, positive: np.ndarray) -> tuple[int, int]:
        """The first and past-the-last line whose support reads a positive low-res line."""
        touched = np.flatnonzero((positive[self.index] & self.support).any(1))
        return (int(touched[0]), int(touched[-1]) + 1) if touched.size else (0, 0)

    def runs(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Where runs of lines reading the same low-res lines begin in [start, stop), and their lengths."""
        support = np.where(self.support[start:stop], self.index[start:stop], -1)
        begins = np.concatenate([[0], np.flatnonzero((support[1:] != support[:-1]).any(1)) + 1])
        return begins, np.diff(np.append(begins, stop - start))


def edge_share(positive: np.ndarray) -> float:
    """The share of the positive part's bounding box, at low resolution, lying on or next to the mask's edge.

    A cheap estimate of how much of the crop `Upsampler.crop` would compute
    pixel by pixel: a smooth shape's edge is a thin ring, a ragged one's is
    nearly everything.
    """
    rows, cols = np.flatnonzero(positive.any(1)), np.flatnonzero(positive.any(0))
    box = positive[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    # A pixel is on the edge when a neighbour across or down differs; the box's border has no outer neighbour.
    differs = np.zeros(box.shape, dtype=bool)
    across, down = box[:, 1:] != box[:, :-1], box[1:] != box[:-1]
    differs[:, 1:] |= across
    differs[:, :-1] |= across
    differs[1:] |= down
    differs[:-1] |= down
    return np.count_nonzero(differs) / differs.size
