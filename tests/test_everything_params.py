"""Protocol 1.2's `everything` request: its keys, ranges and each family's defaults (pure)."""

import json

import pytest

from server import everything_params
from server.errors import ClientError
from server.everything_params import SAM1, SAM2, for_family, for_model
from server.protocol import parse_request

LIMITS = {"max_boxes": 4, "max_points": 3, "max_message_bytes": 4096, "max_image_bytes": 3000}
URL = "https://example.com/cat.jpg"


def parse(body):
    return parse_request(json.dumps(body), **LIMITS)


def refused(body) -> str:
    with pytest.raises(ClientError) as caught:
        parse(body)
    assert caught.value.code == "invalid_request"
    return caught.value.message


def test_an_everything_request_parses_with_its_parameters_as_sent():
    request = parse({"image_url": URL, "everything": {"points_per_side": 8, "pred_iou_thresh": 0}})
    assert request.everything == {"points_per_side": 8, "pred_iou_thresh": 0} and request.prompts == ()
    assert parse({"image_url": URL, "everything": {}}).everything == {}


@pytest.mark.parametrize(
    "everything, field",
    [
        ({"points_per_batch": 64}, "everything.points_per_batch"),
        ({"colour": 1}, "everything.colour"),
        ({"points_per_side": 0}, "everything.points_per_side"),
        ({"points_per_side": 65}, "everything.points_per_side"),
        ({"points_per_side": 8.5}, "everything.points_per_side"),
        ({"points_per_side": True}, "everything.points_per_side"),
        ({"pred_iou_thresh": 1.5}, "everything.pred_iou_thresh"),
        ({"stability_score_offset": -1}, "everything.stability_score_offset"),
        ({"crop_n_layers": 3}, "everything.crop_n_layers"),
        ({"crop_n_points_downscale_factor": 5}, "everything.crop_n_points_downscale_factor"),
        ({"min_mask_region_area": -1}, "everything.min_mask_region_area"),
        ({"use_m2m": 1}, "everything.use_m2m"),
        ({"box_nms_thresh": "0.5"}, "everything.box_nms_thresh"),
    ],
)
def test_a_bad_parameter_is_refused_naming_it(everything, field):
    assert field in refused({"image_url": URL, "everything": everything})


def test_everything_goes_alone():
    assert "exactly one of boxes, prompts and everything" in refused(
        {"image_url": URL, "everything": {}, "boxes": [{"x": 0, "y": 0, "width": 1, "height": 1}]}
    )
    assert "exactly one of" in refused({"image_url": URL, "everything": {}, "prompts": []})
    assert "multimask" in refused({"image_url": URL, "everything": {}, "multimask": True})
    assert "everything must be an object" in refused({"image_url": URL, "everything": []})
    assert "mask_scale does not apply to everything" in refused({"image_url": URL, "everything": {}, "mask_scale": 0.5})


def test_each_family_has_its_reference_generators_defaults():
    sam1, sam2 = for_family({}, SAM1, "vit_b"), for_family({}, SAM2, "sam2.1_hiera_t")
    assert (sam1.points_per_side, sam1.pred_iou_thresh, sam1.stability_score_thresh) == (32, 0.88, 0.95)
    assert (sam2.pred_iou_thresh, sam2.mask_threshold, sam2.multimask_output, sam2.use_m2m) == (0.8, 0.0, True, False)
    assert sam1.crop_overlap_ratio == 512 / 1500 and sam1.total_points() == 1024
    assert for_family({"points_per_side": 8, "crop_n_layers": 1}, SAM1, "vit_b").total_points() == 64 + 4 * 64
    assert for_family({"points_per_side": 8, "crop_n_layers": 2, "crop_n_points_downscale_factor": 2}, SAM1,
                      "vit_b").total_points() == 64 + 4 * 16 + 16 * 4


def test_sam2_keys_are_refused_on_sam1_and_taken_on_sam2():
    with pytest.raises(ClientError, match="everything.use_m2m is a SAM 2.1 parameter"):
        for_model({"use_m2m": True}, "vit_b")
    assert for_model({"use_m2m": True, "mask_threshold": -1.0}, "sam2.1_hiera_t").use_m2m is True
    assert for_model(None, "vit_b") is None
    assert everything_params.RANGES.keys() >= set(everything_params.SAM2_ONLY)
