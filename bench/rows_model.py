"""Rows 8 and 9: the mask decoder per box, stock and CAP's; the image encoder on a GPU."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from pycocotools import mask as mask_utils
from segment_anything import sam_model_registry

from bench.rig import Sitting
from server import masks
from server.models.sam1 import SamModel
from server.prompts import Prompt


def stock_rle(masks_nchw: torch.Tensor) -> list:
    """The RLE path before this work: a uint8 copy, then a Fortran-ordered copy."""
    flat = masks_nchw.reshape(-1, *masks_nchw.shape[-2:])
    return mask_utils.encode(np.asfortranarray(flat.to(torch.uint8).cpu().numpy().transpose(1, 2, 0)))


def decoder_per_box(sitting: Sitting, boxes: int, repeats: int) -> dict:
    _, pixels = sitting.new_image()
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 300, (boxes, 2))
    boxes_xyxy = np.concatenate([corners, corners + rng.uniform(40, 300, (boxes, 2))], 1).astype(np.float32)
    model = SamModel(sitting.raw_sam, sitting.model_type)
    box_prompts = [Prompt(box=tuple(map(float, box))) for box in boxes_xyxy]
    with torch.inference_mode():
        [embedding] = model.embed([pixels])
        sitting.raw.set_image(pixels)
        transformed = sitting.raw.transform.apply_boxes_torch(torch.as_tensor(boxes_xyxy), pixels.shape[:2])

        def stock() -> None:
            found, _, _ = sitting.raw.predict_torch(None, None, boxes=transformed, multimask_output=False)
            stock_rle(found)

        def cap() -> None:
            low_res, scores = model.decode(embedding, box_prompts, multimask=False)
            masks.wire_masks(low_res, scores, embedding.postprocess, [{}] * boxes, False)

        times: dict[str, list[float]] = {"stock": [], "cap": []}
        for _ in range(repeats + 1):
            for name, run in (("stock", stock), ("cap", cap)):  # alternated, so noise hits both alike
                started = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - started) * 1000 / boxes)
    stock_ms, cap_ms = statistics.median(times["stock"][1:]), statistics.median(times["cap"][1:])
    return {"boxes": boxes, "stock_ms_per_box": stock_ms, "cap_ms_per_box": cap_ms, "ratio": cap_ms / stock_ms}


def gpu_encoder(repeats: int = 10) -> dict | None:
    if not torch.cuda.is_available():
        return None
    sam = sam_model_registry["vit_h"]().cuda().eval()
    figures = {}
    for batch in (1, 4):
        inputs = torch.randn(batch, 3, 1024, 1024, device="cuda")
        for precision in ("fp32", "bf16"):
            autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")
            with torch.inference_mode(), autocast:
                sam.image_encoder(inputs)
                torch.cuda.synchronize()
                started = time.perf_counter()
                for _ in range(repeats):
                    sam.image_encoder(inputs)
                torch.cuda.synchronize()
            figures[f"batch{batch}_{precision}_images_per_s"] = batch * repeats / (time.perf_counter() - started)
    figures["device"] = torch.cuda.get_device_name()
    return figures
