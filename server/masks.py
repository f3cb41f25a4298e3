"""SAM's low-resolution logits to masks of the image: COCO run-length encoding (RLE), and polygons.

SAM's decoder gives a low-resolution logit map per mask (256×256 for the
official models); `Sam.postprocess_masks` resizes it bilinearly to the
encoder's square input, crops the image's part, resizes that to the image,
and the mask is where the result exceeds `mask_threshold`. Done like that
for every mask at once, a large image costs boxes × candidates × pixels
float32 values: gigabytes for a few megabytes of request.

Here each mask is made alone, and only where it can be positive. Both
resizes are linear and separable, so the image's logits are A · L · Bᵀ, with
A (height × 256) and B (width × 256) holding the interpolation weights of
each image row and column: at most four non-negative weights each, summing
to one. A pixel is therefore positive only if some positive low-resolution
logit lies in its support; the rows and columns whose support touches the
positive part of L bound the crop that is computed. The crop is thresholded
and turned into COCO's column-major runs at its place in the image, without
ever building an image-sized array; polygons (`server.polygons`) are traced
on the same crop.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from server.mask_taps import Taps, combine, edge_share
from server.output_budget import OutputMeter
from server.polygons import as_lists, outer_rings, ring_arrays, vertex_count
from server.protocol import scaled_size

# A mostly-edge mask whose crop covers this much of the image is computed whole (`Upsampler._whole`).
DENSE_FRACTION = 0.25
# A mask whose edge covers this share of its crop (at low resolution) has every crop pixel computed (`_dense`).
RAGGED_SHARE = 0.3
# Up to this many crop pixels, numpy's whole-array arithmetic (`_dense`) beats torch's two resizes (`_whole`),
# whose first always makes the encoder's 1024 × 1024 square: 3 ms against 10 to 80 ms at 640×480 on 2 cores.
SMALL_CROP = 1 << 20
# A crop of at least 1/LARGE_CROP of the image is encoded by pycocotools over the whole image (`crop_rle`).
LARGE_CROP = 8

OUTPUTS = ("rle", "polygons")  # what a mask can carry: `segmentation` (COCO RLE), `polygons`

@dataclasses.dataclass(frozen=True)
class Postprocess:
    """How a model maps a low-resolution logit map onto the image: resize, crop, resize, threshold.

    SAM 1 (`Sam.postprocess_masks`) resizes to the encoder's square input,
    crops the image's part and resizes that to the image. SAM 2.1
    (`SAM2Transforms.postprocess_masks`) resizes straight to the image: that
    is `encoder_size` and `input_size` equal to the low-res side, whose first
    resize is the identity (weights 1 and 0) and so changes no value.
    """

    encoder_size: int  # the encoder's square input, 1024 for SAM 1's official models; SAM 2.1: the low-res side
    input_size: tuple[int, int]  # the image resized for the encoder, before padding (height, width)
    original_size: tuple[int, int]  # the image (height, width)
    threshold: float = 0.0  # `Sam.mask_threshold`

    def at_scale(self, scale: float | None) -> Postprocess:
        """The same postprocessing with its final resize going to the image's size × `scale` (`mask_scale`).

        The last resize is the one to the image's size in both families, so
        only that size changes: floor(W·s + 0.5) × floor(H·s + 0.5), at least
        1 pixel each way, as `server.protocol.scaled_size` says.
        """
        if scale is None:
            return self
        height, width = self.original_size
        scaled_width, scaled_height = scaled_size(width, height, scale)
        return dataclasses.replace(self, original_size=(scaled_height, scaled_width))


@dataclasses.dataclass
class Crop:
    """A mask as the part of the image where it can be positive: `mask` sits at (top, left)."""

    top: int
    left: int
    mask: np.ndarray  # bool, rows × columns (a column-major view); 0×0 for an empty mask
    size: tuple[int, int]  # the image (height, width)


class Upsampler:
    """Turns low-resolution logit maps of one image into masks, one at a time.

    Within the crop, runs of rows (and of columns) that read the same
    low-resolution lines make blocks. A block whose low-res support is all
    above the threshold is all in the mask, one all at or below it all out:
    a convex combination lies between its extremes. Only the pixels of the
    other blocks, along the mask's edges, are computed.
    """

    def __init__(self, postprocess: Postprocess, low_res: int):
        self.postprocess = postprocess
        height, width = postprocess.original_size
        self._rows = Taps.along(low_res, postprocess.encoder_size, postprocess.input_size[0], height)
        self._cols = Taps.along(low_res, postprocess.encoder_size, postprocess.input_size[1], width)

    def crop(self, logits: np.ndarray) -> Crop:
        """The mask of one low-resolution logit map (s × s float32), computed only where it can be positive.

        Made column by column (the crop's transpose in memory), as COCO's runs
        go, so that `crop_rle` encodes it without a transposed copy.
        """
        threshold = self.postprocess.threshold
        positive = logits > threshold
        top, bottom = self._rows.span(positive.any(1))
        left, right = self._cols.span(positive.any(0))
        if top == bottom or left == right:
            return Crop(0, 0, np.zeros((0, 0), dtype=bool), self.postprocess.original_size)
        height, width = self.postprocess.original_size
        ragged, crop_pixels = edge_share(positive), (bottom - top) * (right - left)
        if ragged >= RAGGED_SHARE or ragged * crop_pixels >= DENSE_FRACTION * height * width:  # mostly edge
            if crop_pixels >= max(DENSE_FRACTION * height * width, SMALL_CROP):
                return self._whole(logits)
            return self._dense(logits, top, bottom, left, right)
        row_begins, row_lengths = self._rows.runs(top, bottom)
        col_begins, col_lengths = self._cols.runs(left, right)

        # The extremes of each block's support: rows' support first, then columns'.
        def extremes(values: np.ndarray, index: np.ndarray, support: np.ndarray, pick, empty: float) -> np.ndarray:
            return pick(np.where(support[..., None], values[index], empty), axis=1)

        row_index, row_support = self._rows.index[top:bottom], self._rows.support[top:bottom]
        col_index, col_support = self._cols.index[left:right], self._cols.support[left:right]
        blocks = []
        for pick, empty in ((np.min, np.inf), (np.max, -np.inf)):
            by_rows = extremes(logits, row_index[row_begins], row_support[row_begins], pick, empty)  # row runs × s
            blocks.append(extremes(by_rows.T, col_index[col_begins], col_support[col_begins], pick, empty))
        lowest, highest = blocks  # column runs × row runs
        inside, edge = lowest > threshold, (highest > threshold) & (lowest <= threshold)

        # Kept column by column (crop columns × rows), as COCO runs go.
        by_columns = np.repeat(np.repeat(inside, col_lengths, 0), row_lengths, 1)
        if edge.any():
            # Rows first, on the low-res columns the crop reads, transposed (low-res column × crop row).
            first = int(col_index.min())
            source = logits[:, first : int(col_index.max()) + 1]
            by_rows = combine(source, row_index, self._rows.weight[top:bottom]).T.copy()
            col_weight = self._cols.weight[left:right]
            for run in np.flatnonzero(edge.any(1)):
                rows = np.flatnonzero(np.repeat(edge[run], row_lengths))
                columns = slice(col_begins[run], col_begins[run] + col_lengths[run])
                values = combine(by_rows[:, rows], col_index[columns] - first, col_weight[columns])
                by_columns[columns, rows] = values > threshold
        return Crop(top, left, by_columns.T, self.postprocess.original_size)

    def region(self, logits: np.ndarray, threshold: float) -> tuple[int, int, np.ndarray]:
        """The image's logits (float32) over the rows and columns where some can exceed `threshold`, and
        where that region sits (top, left): what `everything` takes a mask and its stability from."""
        top, bottom = self._rows.span((logits > threshold).any(1))
        left, right = self._cols.span((logits > threshold).any(0))
        if top == bottom or left == right:
            return 0, 0, np.zeros((0, 0), dtype=np.float32)
        height, width = self.postprocess.original_size
        if (bottom - top) * (right - left) >= max(DENSE_FRACTION * height * width, SMALL_CROP):
            return top, left, self._whole_values(logits)[top:bottom, left:right]  # torch's resizes: faster here
        col_index = self._cols.index[left:right]
        first = int(col_index.min())
        by_rows = combine(logits[:, first : int(col_index.max()) + 1], self._rows.index[top:bottom], self._rows.weight[top:bottom])
        return top, left, combine(by_rows.T.copy(), col_index - first, self._cols.weight[left:right]).T

    def _dense(self, logits: np.ndarray, top: int, bottom: int, left: int, right: int) -> Crop:
        """A ragged mask in part of the image: every pixel of its crop, rows then columns, in whole arrays.

        The edge blocks' own arithmetic (`combine`, rows first), done once for
        the crop rather than block by block.
        """
        col_index = self._cols.index[left:right]
        first = int(col_index.min())
        source = logits[:, first : int(col_index.max()) + 1]
        by_rows = combine(source, self._rows.index[top:bottom], self._rows.weight[top:bottom]).T.copy()
        values = combine(by_rows, col_index - first, self._cols.weight[left:right])  # crop columns × rows
        return Crop(top, left, (values > self.postprocess.threshold).T, self.postprocess.original_size)

    def _whole(self, logits: np.ndarray) -> Crop:
        """A mask whose edges cover much of the image: SAM's own two resizes, for this one mask.

        Ragged masks (random weights, textures) make nearly every block an edge
        block, where torch's `interpolate` over the whole image is several times
        faster than computing the edges one block at a time; its memory is one
        image-sized float32 map, for one mask at a time. Both resizes run on
        the transposed logits, so that the mask comes out column by column:
        the same weights, summed in the other axis' order first (a difference
        of float rounding, about 1e-6, at the threshold only).
        """
        # numpy's comparison: several times faster than torch's into a bool tensor, on one image-sized map.
        return Crop(0, 0, self._whole_values(logits) > self.postprocess.threshold, self.postprocess.original_size)

    def _whole_values(self, logits: np.ndarray) -> np.ndarray:
        """The image's float32 logits by SAM's two resizes, computed column by column: a column-major view."""
        post = self.postprocess
        masks = torch.from_numpy(np.ascontiguousarray(logits.T))[None, None]
        masks = F.interpolate(masks, (post.encoder_size, post.encoder_size), mode="bilinear", align_corners=False)
        masks = masks[..., : post.input_size[1], : post.input_size[0]]
        masks = F.interpolate(masks, post.original_size[::-1], mode="bilinear", align_corners=False)
        return masks[0, 0].numpy().T


def crop_rle(crop: Crop) -> dict[str, Any]:
    """Compressed COCO RLE of the image-sized mask that is `crop` at its place, zero elsewhere."""
    height, width = crop.size
    rows, cols = crop.mask.shape
    if rows * cols * LARGE_CROP >= height * width:
        # pycocotools' own encoder over the whole image, on column-major memory: the crop's own when it is the
        # whole image (made column by column: a view, no copy), else placed in a zeroed image (one copy).
        if (rows, cols) == (height, width):
            by_column = np.asfortranarray(crop.mask)
        else:
            by_column = np.zeros((width, height), dtype=bool).T
            by_column[crop.top : crop.top + rows, crop.left : crop.left + cols] = crop.mask
        return mask_utils.encode(by_column.view(np.uint8)[:, :, None])[0]
    counts: list[int] | np.ndarray = [height * width]
    if crop.mask.any():
        # COCO runs go down each column, then on to the next. Pad each crop column
        # with a zero above and below: +1 steps start runs, -1 steps end them.
        padded = np.zeros((cols, rows + 2), dtype=np.int8)
        padded[:, 1:-1] = crop.mask.T  # crop columns × rows
        column, row = np.nonzero(np.diff(padded, axis=1))
        edges = (crop.left + column) * height + crop.top + row  # start, end, start, end ... (linear)
        # A run reaching a column's bottom goes on at the next column's top when the crop is full-height.
        touching = np.nonzero(edges[1:-1:2] == edges[2::2])[0]
        edges = np.delete(edges, np.concatenate([2 * touching + 1, 2 * touching + 2]))
        counts = np.diff(np.concatenate([[0], edges, [height * width]]))
        if counts[-1] == 0:  # the mask's last pixel is set: no closing run of zeros, as pycocotools writes it
            counts = counts[:-1]
    return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)


def extent(crop: Crop) -> dict[str, Any]:
    """The mask's `area` and `bbox` [x, y, width, height], as pycocotools' `area` and `toBbox` give them,
    counted on the crop's column-major pixels rather than by decoding its RLE again."""
    by_columns = crop.mask.T  # crop columns × rows, contiguous
    columns = np.flatnonzero(by_columns.any(1))
    if not columns.size:
        return {"area": 0, "bbox": [0.0, 0.0, 0.0, 0.0]}
    rows = np.flatnonzero(by_columns[columns[0] : columns[-1] + 1].any(0))
    x, y = crop.left + int(columns[0]), crop.top + int(rows[0])
    width, height = int(columns[-1] - columns[0]) + 1, int(rows[-1] - rows[0]) + 1
    return {"area": int(np.count_nonzero(by_columns)), "bbox": [float(x), float(y), float(width), float(height)]}


def wire_segmentation(rle: dict[str, Any]) -> dict[str, Any]:
    """One compressed RLE as the wire protocol sends it: `counts` as a string."""
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def wire_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """`segmentation`, `area` and `bbox` of a mask kept only as compressed RLE (an `everything` mask)."""
    return {
        "area": int(mask_utils.area(rle)),
        "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)],
        "segmentation": wire_segmentation(rle),
    }


def decode(segmentation: dict[str, Any]) -> np.ndarray:
    """The H×W uint8 mask of one wire `segmentation` (for tests and clients)."""
    return mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")})


def wire_mask(crop: Crop, output: Sequence[str] = ("rle",), meter: OutputMeter | None = None) -> dict[str, Any]:
    """`area`, `bbox`, and `segmentation` (with "rle" in `output`) and/or `polygons` (with "polygons").

    With a `meter`, polygons that would take the request past its vertex cap
    are left out, and the entry says `polygons_omitted` instead.
    """
    entry = extent(crop)
    if "rle" in output:
        entry["segmentation"] = wire_segmentation(crop_rle(crop))
    if "polygons" in output:
        if meter is None:
            entry["polygons"] = outer_rings(crop.mask, crop.top, crop.left)
        else:
            entry.update(_metered_polygons(crop, meter))
    return entry


def _metered_polygons(crop: Crop, meter: OutputMeter) -> dict[str, Any]:
    if meter.vertices_left == 0 and crop.mask.any():
        return {"polygons_omitted": True}  # nothing more fits: not even traced
    rings = ring_arrays(crop.mask, crop.top, crop.left)
    if not meter.take_vertices(vertex_count(rings)):
        return {"polygons_omitted": True}
    return {"polygons": as_lists(rings)}


def wire_masks(
    low_res: torch.Tensor,
    scores: torch.Tensor,
    postprocess: Postprocess,
    echoes: Sequence[dict[str, Any]],
    multimask: bool,
    output: Sequence[str] = ("rle",),
    meter: OutputMeter | None = None,
) -> list[Any]:
    """The `masks` list of a result: one entry per prompt, or a list of 3 per prompt with multimask.

    `low_res` is N prompts × C candidates × s × s logits and `scores` N × C, as
    a model's `segment_batch` gives them; `echoes[i]` is merged into every mask
    of prompt i (`{"box": ...}` in protocol 1, `{"prompt": ...}` in 1.1).
    `output` is the request's: "rle" and/or "polygons" (see `wire_mask`).
    Masks are made one at a time, so memory holds one crop, never N × C images.
    A `meter` (the server's) counts each mask as it is made, and stops the
    result with `result_too_large` as soon as it is past its byte cap.
    """
    count, candidates = low_res.shape[:2]
    if len(echoes) != count:
        raise ValueError(f"{count} prompts' logits but {len(echoes)} echoes")
    if not output or set(output) - set(OUTPUTS):
        raise ValueError(f"output must be a non-empty list of {OUTPUTS}, not {output!r}")
    upsampler = Upsampler(postprocess, low_res.shape[-1])
    low_res = low_res.detach().float().cpu()
    flat_scores = scores.reshape(-1).tolist()
    answers = []
    for index, echo in enumerate(echoes):
        group = []
        for candidate in range(candidates):
            mask = {
                **echo,
                "score": round(flat_scores[index * candidates + candidate], 4),
                **wire_mask(upsampler.crop(low_res[index, candidate].numpy()), output, meter),
            }
            if meter is not None:
                meter.count(mask)
            group.append(mask)
        answers.append(group if multimask else group[0])
    return answers
