"""Row 15: the model families, each with random weights in the official layout through the production
loader: encoder in fp32 and bf16, one click, end to end against the family's own predictor."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import torch
from segment_anything import SamPredictor, sam_model_registry

from bench.rig import BOX, Sitting, request, timed_ms, xyxy
from server import masks
from server.models.caching_model import CachingModel
from server.models.device import Precision
from server.models.embedding_cache import Embedding
from server.models.loading import load_model
from server.models.registry import SAM1, checkpoint_name, model_type as row_of
from server.models.sam1 import SamModel
from server.prompts import Point, Prompt

FAMILY_TYPES = {
    "quick": ("vit_b", "sam2.1_hiera_t"),
    "full": ("vit_b", "vit_l", "sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l"),
}
BF16 = Precision(torch.bfloat16, "the sitting's bf16 column")


def random_checkpoint(folder: Path, model_type: str) -> Path:
    """`model_type` with random weights, saved in Meta's layout under Meta's file name."""
    torch.manual_seed(0)
    path = folder / checkpoint_name(model_type)
    if row_of(model_type).family == SAM1:
        torch.save(sam_model_registry[model_type]().state_dict(), path)
    else:
        from server.models.sam2 import build

        torch.save({"model": build(model_type).state_dict()}, path)
    return path


def reference_predictor(model: CachingModel):
    """The family's own predictor on the model's weights."""
    if isinstance(model, SamModel):
        return SamPredictor(model.sam)
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    return SAM2ImagePredictor(model.model)  # type: ignore[attr-defined]


def family_row(sitting: Sitting, model_type: str, repeats: int) -> dict:
    """One model type: encoder fp32 and bf16 alternated, a click on a cached image, end to end ÷ its predictor (fp32)."""
    checkpoint = random_checkpoint(sitting.work, model_type)
    model = load_model(model_type, checkpoint, "auto", "fp32", cache_size=8)
    checkpoint.unlink()  # up to 2.5 GB
    fp32, memory = model.precision, model.memory()
    _, pixels = sitting.new_image()
    encoder: dict[str, list[float]] = {"fp32": [], "bf16": []}
    embeddings = {}
    with torch.inference_mode():
        for run in range(repeats + 1):  # run 0 warms both up and is not counted
            for name, precision in (("fp32", fp32), ("bf16", BF16)):
                model.precision = precision
                elapsed = timed_ms(lambda: embeddings.__setitem__(name, model.embed([pixels])[0]))
                if run:
                    encoder[name].append(elapsed)
        model.precision = fp32
        click = [Prompt(points=(Point(300, 200, 1),))]

        def one_click(autocast) -> None:
            with autocast:
                low_res, scores = model.decode(embeddings["fp32"], click, multimask=True)
            masks.wire_masks(low_res, scores, embeddings["fp32"].postprocess, [{}], True)

        clicks: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for run in range(5 * repeats + 1):
            for name, precision in (("fp32", fp32), ("bf16", BF16)):
                elapsed = timed_ms(lambda: one_click(precision.autocast(model.device)))
                if run:
                    clicks[name].append(elapsed)
        drift = bf16_drift(model, embeddings["fp32"], embeddings["bf16"])

    predictor = reference_predictor(model)

    def raw(pixels: np.ndarray) -> None:
        with torch.inference_mode():
            predictor.set_image(pixels)
            predictor.predict(box=xyxy(BOX)[0], multimask_output=False)

    app = sitting.start_app(load_model=lambda settings: lambda: model, sam_model_type=model_type)
    raw_ms, e2e_ms = [], []
    try:
        for run in range(repeats + 1):
            url, pixels = sitting.new_image()
            raw_elapsed = timed_ms(lambda: raw(pixels))
            e2e_elapsed = request(app, url)[0]
            if run:
                raw_ms.append(raw_elapsed)
                e2e_ms.append(e2e_elapsed)
    finally:
        app.stop()
    fp32_ms, bf16_ms = statistics.median(encoder["fp32"]), statistics.median(encoder["bf16"])
    return {
        "model_type": model_type, "device": str(model.device),
        "weights_mb": memory.weights_bytes / 1e6, "embedding_mb": memory.embedding_bytes / 1e6,
        "encoder_fp32_ms": fp32_ms, "encoder_bf16_ms": bf16_ms, "bf16_ratio": bf16_ms / fp32_ms,
        "click_ms": statistics.median(clicks["fp32"]), "click_bf16_decoder_ms": statistics.median(clicks["bf16"]),
        **drift, "raw_ms": statistics.median(raw_ms),
        "end_to_end_ms": statistics.median(e2e_ms), "ratio": statistics.median(e2e_ms) / statistics.median(raw_ms),
    }


def bf16_drift(model: CachingModel, fp32: Embedding, bf16: Embedding) -> dict:
    """How far a bf16 encoder moves the masks and scores (decoder in fp32 for both), over 3 prompts × 3 candidates.

    Differing pixels are counted against the pixels in either mask; random
    weights, so this measures arithmetic, not quality.
    """
    height, width = fp32.postprocess.original_size
    prompts = [
        Prompt(box=(width * 0.2, height * 0.2, width * 0.7, height * 0.8)),
        Prompt(points=(Point(width / 2, height / 2, 1),)),
        Prompt(box=(10.0, 10.0, width / 2, height / 2), points=(Point(width / 4, height / 4, 1), Point(5, 5, 0))),
    ]
    found = []
    for embedding in (fp32, bf16):
        low_res, scores = model.decode(embedding, prompts, multimask=True)
        wire = masks.wire_masks(low_res.float().cpu(), scores.float().cpu(), embedding.postprocess, [{}] * 3, True)
        found.append(([masks.decode(m["segmentation"]).astype(bool) for group in wire for m in group],
                      scores.float().cpu().flatten()))
    (masks_32, scores_32), (masks_16, scores_16) = found
    differing = sum(int((a != b).sum()) for a, b in zip(masks_32, masks_16))
    either = sum(int((a | b).sum()) for a, b in zip(masks_32, masks_16))
    return {"drift_pixels": differing / max(either, 1), "drift_score_max": float((scores_32 - scores_16).abs().max())}


def model_families(sitting: Sitting, repeats: int) -> list[dict]:
    return [family_row(sitting, model_type, repeats) for model_type in FAMILY_TYPES[sitting.mode]]
