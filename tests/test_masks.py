"""Low-resolution logits to COCO RLE: equal to SAM's postprocess + pycocotools, one crop at a time."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from server import masks

ENCODER = 1024
NEAR_THRESHOLD = 1e-4


def postprocess_for(height, width, threshold=0.0):
    return masks.Postprocess(ENCODER, ResizeLongestSide.get_preprocess_shape(height, width, ENCODER), (height, width), threshold)


def reference_logits(low_res: torch.Tensor, postprocess: masks.Postprocess) -> torch.Tensor:
    """segment-anything's own `Sam.postprocess_masks`, on one s×s map."""
    sam = SimpleNamespace(image_encoder=SimpleNamespace(img_size=postprocess.encoder_size))
    return Sam.postprocess_masks(sam, low_res[None, None], postprocess.input_size, postprocess.original_size)[0, 0]


def pycocotools_rle(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def assert_same_as_reference(low_res: torch.Tensor, postprocess: masks.Postprocess) -> np.ndarray:
    """Our RLE decodes to SAM's mask except within NEAR_THRESHOLD of the threshold; equal RLE when equal."""
    logits = reference_logits(low_res, postprocess)
    expected = (logits > postprocess.threshold).numpy()
    rle = masks.crop_rle(masks.Upsampler(postprocess, low_res.shape[-1]).crop(low_res.numpy()))
    assert list(rle["size"]) == list(postprocess.original_size)
    found = mask_utils.decode(rle).astype(bool)
    differing = found != expected
    near = (logits - postprocess.threshold).abs().numpy() <= NEAR_THRESHOLD
    assert not (differing & ~near).any(), f"{int((differing & ~near).sum())} pixels differ away from the threshold"
    if not differing.any():
        assert rle["counts"] == pycocotools_rle(expected)["counts"]
    return expected


def random_logits(seed, shift=0.0, size=256):
    return torch.randn(size, size, generator=torch.Generator().manual_seed(seed)) * 3 + shift


@pytest.mark.parametrize(
    "height, width",
    [(150, 200), (97, 310), (310, 97), (1, 3), (3, 1), (1, 1), (100, 300), (4000, 3000), (1024, 1024), (1023, 1025)],
)
def test_random_logits_give_sams_mask_and_pycocotools_rle(height, width):
    expected = assert_same_as_reference(random_logits(height * 7 + width), postprocess_for(height, width))
    if height * width > 100:
        assert 0 < expected.mean() < 1  # a test of edges, not of an empty or full mask


@pytest.mark.parametrize("height, width", [(200, 150), (3000, 4000), (37, 91)])
def test_logits_positive_almost_everywhere(height, width):
    expected = assert_same_as_reference(random_logits(1, shift=8.0), postprocess_for(height, width))
    assert expected.mean() > 0.95


@pytest.mark.parametrize("height, width", [(200, 150), (150, 200), (4000, 3000)])
@pytest.mark.parametrize("where", ["top", "bottom_of_image", "left", "right_of_image", "corner", "one_cell"])
def test_logits_positive_on_a_border_or_one_cell(height, width, where):
    post = postprocess_for(height, width)
    rows, cols = (-(-n * 256 // ENCODER) for n in post.input_size)  # the low-res cells that cover the image
    low_res = torch.full((256, 256), -5.0)
    region = {
        "top": (slice(0, 2), slice(None)),
        "bottom_of_image": (slice(rows - 2, rows), slice(None)),
        "left": (slice(None), slice(0, 1)),
        "right_of_image": (slice(None), slice(cols - 1, cols)),
        "corner": (slice(rows - 3, rows), slice(cols - 3, cols)),
        "one_cell": (slice(rows // 2, rows // 2 + 1), slice(cols // 3, cols // 3 + 1)),
    }[where]
    low_res[region] = 5.0
    expected = assert_same_as_reference(low_res, post)
    assert expected.any()


def test_no_positive_logit_is_an_empty_mask_without_computing_any_pixel():
    post = postprocess_for(4000, 3000)
    crop = masks.Upsampler(post, 256).crop(np.full((256, 256), -1.0, np.float32))
    assert crop.mask.size == 0
    rle = masks.crop_rle(crop)
    assert rle["counts"] == pycocotools_rle(np.zeros((4000, 3000), bool))["counts"]
    # positive only in the padding right of the image (768 of 1024 columns: low-res 192 on), past
    # the one column the image's last column reads: still nothing in the image
    right = torch.full((256, 256), -1.0)
    right[:, 193:] = 5.0
    assert masks.Upsampler(post, 256).crop(right.numpy()).mask.size == 0
    right[:, 192] = 5.0
    assert masks.Upsampler(post, 256).crop(right.numpy()).mask.size > 0


def test_a_nonzero_threshold_is_honoured():
    assert_same_as_reference(random_logits(5), postprocess_for(120, 90, threshold=1.5))


def test_the_crop_covers_only_where_the_mask_can_be_positive():
    post = postprocess_for(3000, 4000)
    low_res = torch.full((256, 256), -5.0)
    low_res[100:110, 50:60] = 5.0
    crop = masks.Upsampler(post, 256).crop(low_res.numpy())
    # the 10×10 cells are 160×160 encoder pixels, 4000/1024 image pixels each, plus a cell's support either side
    assert crop.mask.shape[0] < 12 * 4 * 4000 / 1024 and crop.mask.shape[1] < 12 * 4 * 4000 / 1024
    assert crop.mask.any() and not crop.mask[0].any() and not crop.mask[:, -1].any()  # a margin, no more


@pytest.mark.parametrize("height, width", [(3000, 4000), (150, 200), (97, 310)])
@pytest.mark.parametrize("shape", ["ragged_whole", "ragged_box", "smooth_box", "smooth_whole"])
def test_every_path_makes_the_mask_column_by_column_as_sam_does(height, width, shape):
    """Ragged or smooth, over the whole image or in part of it: SAM's mask, made in the column-major
    order COCO's runs take, so that no transposed copy is made to encode it."""
    rng = np.random.default_rng(height + len(shape))
    noise = rng.normal(0, 3, (256, 256)).astype(np.float32)
    y, x = np.mgrid[0:256, 0:256]
    low_res = {
        "ragged_whole": noise,
        "ragged_box": np.where((abs(y - 100) < 40) & (abs(x - 90) < 40), noise, -20),
        "smooth_box": (30 - np.hypot(x - 120, y - 90)) / 10,
        "smooth_whole": (110 - np.hypot(x - 120, y - 90)) / 10 + noise / 10,
    }[shape].astype(np.float32)
    post = postprocess_for(height, width)
    crop = masks.Upsampler(post, 256).crop(low_res)
    assert crop.mask.T.flags.c_contiguous, "the crop is not column-major"
    expected = assert_same_as_reference(torch.from_numpy(low_res), post)
    assert 0 < expected.sum() < expected.size


def test_the_tiny_models_64_pixel_maps_too():
    assert_same_as_reference(random_logits(3, size=64), masks.Postprocess(256, (192, 256), (300, 400)))


def test_orientation_and_bbox_of_a_known_rectangle():
    """A rectangle at rows 10..19, columns 30..69 of a 50×100 (H×W) image: bbox is x, y, width, height."""
    crop = masks.Crop(10, 30, np.ones((10, 40), bool), (50, 100))
    entry = masks.wire_mask(crop)
    assert entry["bbox"] == [30.0, 10.0, 40.0, 10.0] and entry["area"] == 400
    decoded = masks.decode(entry["segmentation"])
    assert decoded.shape == (50, 100) and decoded[10:20, 30:70].all() and decoded.sum() == 400


@pytest.mark.parametrize("seed", range(6))
def test_area_and_bbox_counted_on_the_crop_are_pycocotools_own(seed):
    """Random crops anywhere in the image, empty, full or touching its edges: pycocotools' `area` and `toBbox`."""
    rng = np.random.default_rng(seed)
    size = tuple(int(v) for v in rng.integers(1, 40, 2))
    rows, cols = int(rng.integers(1, size[0] + 1)), int(rng.integers(1, size[1] + 1))
    top, left = int(rng.integers(0, size[0] - rows + 1)), int(rng.integers(0, size[1] - cols + 1))
    pixels = rng.random((cols, rows)) < [0.0, 0.02, 0.5, 1.0, 0.3, 0.9][seed]
    crop = masks.Crop(top, left, pixels.T, size)  # column-major, as `Upsampler.crop` makes it
    rle = masks.crop_rle(crop)
    assert masks.extent(crop) == {"area": int(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)]}


@pytest.mark.parametrize("shape, top, left, size", [((7, 5), 0, 0, (7, 5)), ((6, 4), 1, 2, (9, 8)), ((9, 3), 0, 4, (9, 9))])
def test_runs_of_a_crop_at_its_place_equal_pycocotools(shape, top, left, size):
    """Runs that wrap from one column's bottom to the next column's top, start at 0, end at the last pixel."""
    rng = np.random.default_rng(sum(shape) + top)
    for density in (0.0, 0.3, 0.9, 1.0):
        crop = rng.random(shape) < density
        full = np.zeros(size, bool)
        full[top : top + shape[0], left : left + shape[1]] = crop
        rle = masks.crop_rle(masks.Crop(top, left, crop, size))
        assert rle["counts"] == pycocotools_rle(full)["counts"]


BOXES = [{"x": 0.0, "y": 0.0, "width": 2.0, "height": 2.0}, {"x": 1.0, "y": 1.0, "width": 3.0, "height": 2.0}]


def test_wire_masks_single_candidate_per_prompt_in_order():
    post = postprocess_for(40, 60)
    low_res = torch.full((2, 1, 256, 256), -5.0)
    low_res[1, 0, 20:60, 40:120] = 5.0
    wire = masks.wire_masks(low_res, torch.tensor([[0.25], [0.75]]), post, [{"box": b} for b in BOXES], multimask=False)
    assert [m["box"] for m in wire] == BOXES
    assert [m["score"] for m in wire] == [0.25, 0.75]
    assert wire[0]["area"] == 0 and wire[1]["area"] > 0
    expected = (reference_logits(low_res[1, 0], post) > 0).numpy()
    assert wire[1]["segmentation"]["counts"] == pycocotools_rle(expected)["counts"].decode()


def test_wire_masks_multimask_gives_three_per_prompt_in_order():
    low_res = torch.full((2, 3, 256, 256), -5.0)
    for prompt in range(2):
        for candidate in range(3):
            low_res[prompt, candidate, :, : 4 * (prompt * 3 + candidate + 1)] = 5.0  # widths tell them apart
    scores = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 10
    wire = masks.wire_masks(low_res, scores, postprocess_for(256, 256), [{"prompt": {"n": i}} for i in range(2)], multimask=True)
    assert [len(group) for group in wire] == [3, 3]
    widths = [[m["bbox"][2] for m in group] for group in wire]
    assert widths == sorted(widths) and widths[0] == sorted(widths[0]) and len({w for g in widths for w in g}) == 6
    assert [[m["score"] for m in group] for group in wire] == [[0.0, 0.1, 0.2], [0.3, 0.4, 0.5]]
    assert all(m["prompt"] == {"n": 1} for m in wire[1])


def test_wire_masks_refuses_a_count_mismatch():
    with pytest.raises(ValueError):
        masks.wire_masks(torch.zeros(2, 1, 256, 256), torch.zeros(2, 1), postprocess_for(10, 10), BOXES[:1], False)


MEMORY_PROBE = """
import json, resource, sys
import numpy as np, torch
from harness.tiny_sam import build_tiny_sam
from server import masks
from server.models.sam1 import SamModel
from server.models.seam import ImageJob
from server.prompts import Prompt

def status_kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

height, width = 5000, 8000  # 40 Mpx, one flat colour (what a tiny PNG decodes to)
pixels = np.full((height, width, 3), 128, np.uint8)
model = SamModel(build_tiny_sam(), "tiny")
model.warm_up()
boxes = [Prompt(box=(i * 120.0, i * 70.0, i * 120.0 + 400.0, i * 70.0 + 300.0)) for i in range(64)]
before = status_kb("VmHWM")
# A safety net, not the measure: a regression fails here with MemoryError instead of eating the machine.
limit = (status_kb("VmSize") + 4 * 1024 * 1024) * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
[result] = model.segment_batch([ImageJob(pixels, boxes, multimask=False)])
wire = masks.wire_masks(result.low_res, result.scores, result.postprocess, [{}] * 64, False, ["rle", "polygons"])
# and the worst case, every logit positive: each mask is the whole image
full = torch.full((3, 1) + tuple(result.low_res.shape[-2:]), 4.0)
worst = masks.wire_masks(full, torch.zeros(3, 1), result.postprocess, [{}] * 3, False, ["rle", "polygons"])
print(json.dumps({
    "before_kb": before, "after_kb": status_kb("VmHWM"), "areas": [m["area"] for m in wire + worst],
    "rings": [len(m["polygons"]) for m in wire + worst],
}))
"""


@pytest.mark.slow  # about 40 s
def test_64_boxes_on_a_flat_40_megapixel_image_stay_under_1_5_gb():
    """Masks (RLE and polygons) are made one at a time from the low-res logits: peak memory does not grow
    with boxes × pixels."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE], cwd=root, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    grown_mb = (report["after_kb"] - report["before_kb"]) / 1024
    print(f"peak RSS grew by {grown_mb:.0f} MB")
    assert report["areas"][-3:] == [5000 * 8000] * 3  # the worst case did make whole-image masks
    assert report["rings"][-3:] == [1] * 3
    assert grown_mb < 1536, f"peak RSS grew by {grown_mb:.0f} MB"
