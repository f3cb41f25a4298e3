"""`everything` against the reference generators on the same weights (docs/protocol.md, "Segment everything").

`SamAutomaticMaskGenerator` (SAM 1) and `SAM2AutomaticMaskGenerator` (SAM 2.1)
with `output_mode="coco_rle"` on a full-size vit_b and hiera_t with random
weights, loaded by production's `load_model`. The contract's tolerances: mask
count within 2% (or 1); at least 98% of masks matched one to one at IoU >=
0.99; score within 1e-3, stability within 1e-2; the reference's order without
crop layers. Random weights make near-identical masks, so the cases with
the thresholds at 0 keep every candidate (NMS at 1.0) to compare hundreds of
them, and the defaults check that the filters decide alike; nothing here
says anything of mask quality.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from segment_anything.modeling import Sam

from server import everything
from server.everything_params import family_of, for_model
from server.models.loading import load_model
from server.models.sam1 import load_sam

pytestmark = pytest.mark.slow  # full-size models on the CPU

CHECKPOINTS = {"vit_b": "vit_b_checkpoint", "sam2.1_hiera_t": "hiera_t_checkpoint"}  # conftest's fixtures
ALL_KEPT = {"pred_iou_thresh": 0, "stability_score_thresh": 0}
CASES = {
    "grid 8, every candidate": {"points_per_side": 8, **ALL_KEPT, "box_nms_thresh": 1.0, "stability_score_offset": 0.05},
    "grid 8, defaults": {"points_per_side": 8},
    "SAM 2.1: one candidate, refined (m2m)": {"points_per_side": 4, **ALL_KEPT, "box_nms_thresh": 1.0,
                                              "multimask_output": False, "use_m2m": True, "mask_threshold": -0.5},
    "one crop layer": {"points_per_side": 4, "crop_n_layers": 1, "crop_n_points_downscale_factor": 2, **ALL_KEPT,
                       "box_nms_thresh": 1.0, "crop_nms_thresh": 1.0},
}


def pytest_generate_tests(metafunc):
    """Each model with each case it has: SAM 2.1's own parameters only on SAM 2.1 (no skipped pairs)."""
    if "case" in metafunc.fixturenames:
        pairs = [(m, c) for m in CHECKPOINTS for c in CASES if m.startswith("sam2") or not c.startswith("SAM 2.1")]
        metafunc.parametrize(("model", "case"), pairs, indirect=["model"],
                             ids=[f"{m}-{c}" for m, c in pairs])


@pytest.fixture(scope="module")
def model(request):
    return load_model(request.param, request.getfixturevalue(CHECKPOINTS[request.param]), "cpu", "fp32", cache_size=1)


@pytest.fixture(scope="module")
def encoded(model):
    """Each side's encoder runs once per crop for the whole module (a full-size encoder pass takes seconds):
    ours by crop box; the reference's predictor keeps what its own `set_image` made, by the crop's bytes."""
    return {"ours": {}, "reference": {}}


def remembering(predictor, seen):
    """The reference's predictor, its `set_image` done once per distinct image, then its own state put back."""
    names = ("features", "original_size", "input_size", "is_image_set", "_features", "_orig_hw", "_is_image_set",
             "_is_batch")
    set_image = predictor.set_image

    def set_image_once(image, *args, **kwargs):
        key = (image.shape, hash(image.tobytes()))
        if key not in seen:
            set_image(image, *args, **kwargs)
            seen[key] = {name: getattr(predictor, name) for name in names if hasattr(predictor, name)}
        for name, value in seen[key].items():
            setattr(predictor, name, value)

    predictor.set_image = set_image_once
    return predictor


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:120, 0:160]
    base = (np.sin(x / 9.0) + np.cos(y / 13.0) > 0.3).astype(np.uint8) * 180
    return (base[..., None] + rng.integers(0, 60, (120, 160, 3))).astype(np.uint8)


def ours(model, image, sent, seen):
    params = for_model(sent, model.model_type)
    generator = everything.Generator(model.decode, params, sam2=family_of(model.model_type) == "sam2", points_per_batch=16)

    def crop(box):
        if tuple(box) not in seen:
            seen[tuple(box)] = model.embed([np.ascontiguousarray(image[box[1] : box[3], box[0] : box[2]])])[0]
        return seen[tuple(box)]

    found = generator.run(image.shape[:2], crop, lambda done: None)
    return [everything.wire(item, ["rle"], None) for item in found]


@pytest.fixture(scope="module")
def stock(request, model):
    """The reference's model: SAM 2.1's is ours; SAM 1's a stock `Sam` of its own, since ours computes the
    encoder's global attention one head at a time (server/models/sam1_encoder.py)."""
    if family_of(model.model_type) == "sam2":
        return model.model
    return load_sam(model.model_type, request.getfixturevalue(CHECKPOINTS[model.model_type]), "cpu")


def reference(stock, image, sent, seen):
    if isinstance(stock, Sam):
        from segment_anything import SamAutomaticMaskGenerator

        generator = SamAutomaticMaskGenerator(stock, output_mode="coco_rle", **sent)
    else:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        generator = SAM2AutomaticMaskGenerator(stock, output_mode="coco_rle", **sent)
    remembering(generator.predictor, seen)
    return generator.generate(image)


def matches(mine, theirs):
    """One-to-one pairs (mine, theirs) at IoU >= 0.99, best first."""
    if not mine or not theirs:
        return []
    rles = [{"size": m["segmentation"]["size"], "counts": m["segmentation"]["counts"].encode()} for m in mine]
    ious = np.asarray(mask_utils.iou(rles, [t["segmentation"] for t in theirs], [0] * len(theirs)))
    pairs, used_mine, used_theirs = [], set(), set()
    for flat in np.argsort(-ious, axis=None):
        i, j = np.unravel_index(flat, ious.shape)
        if ious[i, j] < 0.99:
            break
        if i not in used_mine and j not in used_theirs:
            pairs.append((int(i), int(j)))
            used_mine.add(i)
            used_theirs.add(j)
    return pairs


def same_or_both_nan(a, b, tolerance):
    if a is None or (isinstance(b, float) and math.isnan(b)):
        return a is None and math.isnan(b)
    return abs(a - b) <= tolerance


def test_everything_is_the_reference_generators_answer(model, stock, image, encoded, case):
    sent = CASES[case]
    with torch.inference_mode():
        mine = ours(model, image, sent, encoded["ours"])
    theirs = reference(stock, image, sent, encoded["reference"])
    print(f"{model.model_type}, {case}: {len(mine)} masks, the reference {len(theirs)}")
    assert abs(len(mine) - len(theirs)) <= max(1, 0.02 * len(theirs)), (len(mine), len(theirs))
    pairs = matches(mine, theirs)
    assert len(pairs) >= 0.98 * max(len(mine), len(theirs)), (len(pairs), len(mine), len(theirs))
    for i, j in pairs:
        assert abs(mine[i]["score"] - theirs[j]["predicted_iou"]) <= 1e-3
        assert same_or_both_nan(mine[i]["stability_score"], theirs[j]["stability_score"], 1e-2)
        assert mine[i]["point"] == pytest.approx(dict(zip("xy", theirs[j]["point_coords"][0])), abs=0.01)
        x, y, w, h = theirs[j]["crop_box"]
        assert mine[i]["crop_box"] == [x, y, w, h]
        assert mine[i]["bbox"] == [round(v, 2) for v in mask_utils.toBbox(theirs[j]["segmentation"])]
    if "crop_n_layers" not in sent:
        in_order = sum(i == j for i, j in pairs)
        assert in_order >= 0.98 * len(theirs), f"{in_order} of {len(theirs)} masks in the reference's order"
