"""Segment everything (protocol 1.2): the reference automatic mask generator's answer, in bounded memory.

The masks are those of `SamAutomaticMaskGenerator.generate` (SAM 1) or
`SAM2AutomaticMaskGenerator.generate` (SAM 2.1), `output_mode="coco_rle"`, in
the same order: a grid of single-point prompts per crop, each point's
candidates filtered by predicted IoU, then by stability, then those whose
box touches a crop's inner edge; non-maximum suppression within each crop,
then across crops; then, with `min_mask_region_area`, small regions removed.
The decisions are the reference's, by its own helpers
(`segment_anything.utils.amg`), on the same numbers.

What differs is the memory. The reference upsamples every candidate of a
batch to the crop's size as float32 before it filters any (about 3 GB per
batch of 64 at 4000 × 3000). Here the predicted IoU filters first, on the
low-resolution output (it does not depend on upsampling); each remaining
candidate is upsampled alone, and only where it can exceed the lower
stability threshold (`masks.Upsampler.region`: by its taps for a small
region, by torch's two resizes over the image for a large one); the
stability and the mask come from that one region, and the mask is kept as
COCO RLE at once. What is held: one batch of low-resolution logits, one
region, and RLEs. SAM 1's decoder takes the image once per batch
(`server.models.sam1_decoder`), where the reference's repeats it per prompt,
and makes no masks for a grid point whose every candidate's predicted IoU
is at or below `pred_iou_thresh` (the `score_floor` of `decode`).

Between candidates the work reports its progress (`server.progress`), which
is where a cancelled record stops it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils
from segment_anything.utils import amg
from torchvision.ops.boxes import batched_nms, box_area

from server.everything_params import EverythingParams
from server.masks import Crop, Upsampler, crop_rle, wire_mask, wire_rle
from server.models.embedding_cache import Embedding
from server.output_budget import OutputMeter
from server.prompts import Point, Prompt

Report = Callable[[int], None]  # called with the grid points done so far; raises to stop the work


@dataclasses.dataclass
class Found:
    """One mask the generator keeps, as the reference's `MaskData` row."""

    rle: dict[str, Any]  # compressed COCO RLE of the image-sized mask
    box: tuple[int, int, int, int]  # the reference's box (x0, y0, x1, y1, inclusive), in the image
    score: float  # predicted IoU
    stability: float
    point: tuple[float, float]  # in the image
    crop_box: tuple[int, int, int, int]  # x0, y0, x1, y1


class Generator:
    """One `everything` request on one image: `run` gives the kept masks in the reference's order."""

    def __init__(
        self,
        decode: Callable[..., tuple[torch.Tensor, torch.Tensor]],  # SegmentationModel.decode
        params: EverythingParams,
        *,
        sam2: bool,
        points_per_batch: int,
    ):
        self.decode = decode
        self.params = params
        self.sam2 = sam2
        self.points_per_batch = points_per_batch
        self.grids = amg.build_all_layer_point_grids(
            params.points_per_side, params.crop_n_layers, params.crop_n_points_downscale_factor
        )

    @property
    def threshold(self) -> float:
        return self.params.mask_threshold if self.sam2 else 0.0

    def crop_boxes(self, height: int, width: int) -> list[tuple[list[int], int]]:
        boxes, layers = amg.generate_crop_boxes((height, width), self.params.crop_n_layers, self.params.crop_overlap_ratio)
        return list(zip(boxes, layers))

    @torch.inference_mode()
    def run(self, size: tuple[int, int], embedding_of: Callable[[list[int]], Embedding], report: Report) -> list[Found]:
        """Every crop in turn (`embedding_of(crop_box)` gives its embedding), then NMS across crops."""
        height, width = size
        found: list[Found] = []
        done = 0
        crops = self.crop_boxes(height, width)
        for crop_box, layer in crops:
            embedding = embedding_of(crop_box)
            kept = self._crop(embedding, crop_box, layer, size, lambda k: report(done + k))
            done += len(self.grids[layer])
            report(done)
            found.extend(kept)
        if len(crops) > 1 and found:
            crop_boxes = torch.as_tensor([f.crop_box for f in found], dtype=torch.float)
            found = _nms(found, [f.box for f in found], 1 / box_area(crop_boxes), self.params.crop_nms_thresh)
        if self.params.min_mask_region_area > 0:
            found = remove_small_regions(found, self.params.min_mask_region_area,
                                         max(self.params.box_nms_thresh, self.params.crop_nms_thresh))
        return found

    def _crop(
        self, embedding: Embedding, crop_box: list[int], layer: int, size: tuple[int, int], report: Report
    ) -> list[Found]:
        x0, y0, x1, y1 = crop_box
        points = self.grids[layer] * np.array([[x1 - x0, y1 - y0]])
        candidates: list[tuple[Found, tuple[int, int, int, int]]] = []
        for start in range(0, len(points), self.points_per_batch):
            batch = points[start : start + self.points_per_batch]
            candidates.extend(self._batch(embedding, batch, crop_box, size, lambda: report(start)))
            report(start + len(batch))
        if not candidates:
            return []
        scores = torch.as_tensor([found.score for found, _ in candidates], dtype=torch.float)
        kept = _nms([f for f, _ in candidates], [box for _, box in candidates], scores, self.params.box_nms_thresh)
        return kept

    def _batch(
        self,
        embedding: Embedding,
        points: np.ndarray,
        crop_box: list[int],
        size: tuple[int, int],
        still_wanted: Callable[[], None],
    ) -> list[tuple[Found, tuple[int, int, int, int]]]:
        """One batch of grid points: the candidates that pass the filters, with their boxes in the crop."""
        params = self.params
        multimask = params.multimask_output if self.sam2 else True
        prompts = [Prompt(points=(Point(float(x), float(y), 1),)) for x, y in points]
        refine = self.sam2 and params.use_m2m
        floor = params.pred_iou_thresh if params.pred_iou_thresh > 0 and not refine else None  # masks not made
        low_res, scores = self.decode(embedding, prompts, multimask, len(prompts), score_floor=floor)
        candidates = low_res.shape[1]
        if refine:  # one refinement step, each candidate by its own low-res mask
            flat = low_res.flatten(0, 1).float().cpu().numpy()
            again = [Prompt(points=prompts[i // candidates].points, mask_input=flat[i : i + 1]) for i in range(len(flat))]
            low_res, scores = self.decode(embedding, again, False, len(again))
            candidates = 1
            points = np.repeat(points, len(again) // len(points), axis=0)
        logits = low_res.float().cpu().flatten(0, 1).numpy()
        upsampler = Upsampler(dataclasses.replace(embedding.postprocess, threshold=self.threshold), logits.shape[-1])
        ious = scores.float().cpu().flatten(0, 1).numpy()
        owners = np.repeat(np.arange(len(points)), candidates)
        x0, y0, _, _ = crop_box
        height, width = size
        kept = []
        for index in np.flatnonzero(ious > params.pred_iou_thresh if params.pred_iou_thresh > 0 else np.ones_like(ious, bool)):
            still_wanted()
            top, left, values = upsampler.region(logits[index], self.threshold - params.stability_score_offset)
            unions = np.count_nonzero(values > self.threshold - params.stability_score_offset)
            intersections = np.count_nonzero(values > self.threshold + params.stability_score_offset)
            stability = intersections / unions if unions else float("nan")
            if params.stability_score_thresh > 0 and not stability >= params.stability_score_thresh:
                continue
            mask = values > self.threshold
            del values
            box = _box(mask, top, left)
            if _near_crop_edge(box, crop_box, size):
                continue
            point = points[owners[index]]
            kept.append((
                Found(
                    rle=crop_rle(Crop(y0 + top, x0 + left, mask, (height, width))),
                    box=(box[0] + x0, box[1] + y0, box[2] + x0, box[3] + y0),
                    score=float(ious[index]),
                    stability=float(stability),
                    point=(float(point[0]) + x0, float(point[1]) + y0),
                    crop_box=tuple(crop_box),  # type: ignore[arg-type]
                ),
                box,
            ))
        return kept


def _box(mask: np.ndarray, top: int, left: int) -> tuple[int, int, int, int]:
    """`amg.batched_mask_to_box` of one mask at (top, left): inclusive corners, (0, 0, 0, 0) when empty."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not rows.size:
        return (0, 0, 0, 0)
    return (left + int(cols[0]), top + int(rows[0]), left + int(cols[-1]), top + int(rows[-1]))


def _near_crop_edge(box: tuple[int, int, int, int], crop_box: list[int], size: tuple[int, int]) -> bool:
    height, width = size
    return bool(amg.is_box_near_crop_edge(torch.as_tensor([box]), crop_box, [0, 0, width, height])[0])


def _nms(found: list[Found], boxes: Sequence[tuple[int, ...]], scores: torch.Tensor, threshold: float) -> list[Found]:
    """The reference's `batched_nms` (one category), in its order: by score, highest first."""
    keep = batched_nms(torch.as_tensor(boxes, dtype=torch.float), scores, torch.zeros(len(found)), threshold)
    return [found[i] for i in keep.tolist()]


def remove_small_regions(found: list[Found], min_area: int, nms_thresh: float) -> list[Found]:
    """`postprocess_small_regions` of the reference, one mask at a time: small holes and islands removed,
    then NMS that prefers the masks it left unchanged; a changed mask gets its new box and RLE."""
    changed: list[tuple[dict[str, Any], tuple[int, int, int, int]] | None] = []
    for item in found:
        mask = mask_utils.decode(item.rle).astype(bool)
        mask, holes = amg.remove_small_regions(mask, min_area, mode="holes")
        mask, islands = amg.remove_small_regions(mask, min_area, mode="islands")
        if holes or islands:
            box = _box(mask, 0, 0)
            changed.append((crop_rle(Crop(0, 0, mask, mask.shape)), box))
        else:
            changed.append(None)
        del mask
    boxes = [item.box if new is None else new[1] for item, new in zip(found, changed)]
    scores = torch.as_tensor([float(new is None) for new in changed])
    kept = []
    for index in batched_nms(torch.as_tensor(boxes, dtype=torch.float), scores, torch.zeros(len(found)), nms_thresh).tolist():
        new = changed[index]
        kept.append(found[index] if new is None else dataclasses.replace(found[index], rle=new[0], box=new[1]))
    return kept


def wire(found: Found, output: Sequence[str], meter: OutputMeter | None) -> dict[str, Any]:
    """One mask of an `everything` result: segmentation and/or polygons, area, bbox (the mask's own), score,
    stability_score, point and crop_box."""
    if "polygons" in output:
        full = mask_utils.decode(found.rle).astype(bool)
        top, bottom = (found.box[1], found.box[3] + 1) if full.any() else (0, 0)
        left, right = (found.box[0], found.box[2] + 1) if full.any() else (0, 0)
        entry = wire_mask(Crop(top, left, full[top:bottom, left:right], full.shape), output, meter)
    else:
        entry = wire_rle(found.rle)
    x0, y0, x1, y1 = found.crop_box
    entry.update(
        score=round(found.score, 4),
        stability_score=None if np.isnan(found.stability) else round(found.stability, 4),
        point={"x": round(found.point[0], 2), "y": round(found.point[1], 2)},
        crop_box=[x0, y0, x1 - x0, y1 - y0],
    )
    if meter is not None:
        meter.count(entry)
    return entry
