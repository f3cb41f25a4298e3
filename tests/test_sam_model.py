"""The model wrapper with a tiny real SAM: shapes, exactness, batching, the cache, checkpoint errors."""

import os

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from server import masks
from server.config import CHECKPOINT_URLS
from server.sam_model import (
    CheckpointError,
    ImageJob,
    SamModel,
    available_cores,
    check_checkpoint,
    load_sam,
    resolve_device,
    set_torch_threads,
)


@pytest.fixture
def model(tiny_sam):
    return SamModel(tiny_sam, "tiny")


def pixels(height, width):
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_one_low_res_map_per_box_and_the_image_size_to_make_masks_at(model):
    result = model.segment(pixels(48, 64), np.array([[0, 0, 10, 10], [5, 5, 60, 40]], np.float32), multimask=False)
    assert result.low_res.shape == (2, 1, 64, 64) and result.low_res.dtype == torch.float32  # the tiny model's 64×64
    assert result.scores.shape == (2, 1)
    assert result.postprocess == masks.Postprocess(256, (192, 256), (48, 64), 0.0)
    assert result.encode_ms > 0 and result.decode_ms > 0


def test_multimask_gives_three_candidates(model):
    result = model.segment(pixels(30, 20), np.array([[0, 0, 10, 10]], np.float32), multimask=True)
    assert result.low_res.shape == (1, 3, 64, 64)


def test_sixteen_boxes_go_through_one_batched_decoder_call(model, tiny_sam):
    calls = []
    hook = tiny_sam.mask_decoder.register_forward_hook(lambda module, args, output: calls.append(output[0].shape))
    try:
        boxes = np.array([[i, i, i + 20, i + 20] for i in range(16)], np.float32)
        result = model.segment(pixels(64, 64), boxes, multimask=False)
    finally:
        hook.remove()
    assert len(calls) == 1, "all boxes of a request must share one decoder pass"
    assert calls[0][0] == 16
    assert result.low_res.shape[0] == 16


@pytest.mark.parametrize("height, width", [(100, 200), (200, 100), (37, 91), (256, 256), (300, 17)])
@pytest.mark.parametrize("multimask", [False, True])
def test_masks_and_scores_are_exactly_those_of_segment_anythings_predictor(model, tiny_sam, height, width, multimask):
    """The batched, cached path does SamPredictor's arithmetic: same logits and scores, same masks."""
    image = pixels(height, width)
    boxes = np.array([[0, 0, width, height], [width / 4, height / 5, width / 2, height * 0.9]], np.float32)
    predictor = SamPredictor(tiny_sam)
    predictor.set_image(image)
    with torch.inference_mode():
        transformed = predictor.transform.apply_boxes_torch(torch.as_tensor(boxes), (height, width))
        expected_masks, expected_scores, expected_low_res = predictor.predict_torch(
            None, None, boxes=transformed, multimask_output=multimask
        )
    result = model.segment(image, boxes, multimask=multimask)
    assert torch.equal(result.low_res, expected_low_res)
    assert torch.equal(result.scores, expected_scores)
    wire = masks.wire_masks(result.low_res, result.scores, result.postprocess, [{}, {}], multimask)
    for k, entry in enumerate(m for group in wire for m in (group if multimask else [group])):
        np.testing.assert_array_equal(masks.decode(entry["segmentation"]), expected_masks.flatten(0, 1)[k].numpy())


def count_encoder_passes(sam):
    batches = []
    hook = sam.image_encoder.register_forward_hook(lambda module, args, output: batches.append(args[0].shape[0]))
    return batches, hook


def test_new_boxes_on_a_cached_image_skip_the_encoder_and_give_the_same_masks(tiny_sam):
    model = SamModel(tiny_sam, "tiny", cache_size=2)
    image, boxes = pixels(64, 48), np.array([[2, 2, 30, 40]], np.float32)
    batches, hook = count_encoder_passes(tiny_sam)
    try:
        first = model.segment_batch([ImageJob(image, boxes, False, image_key="sha-a")])[0]
        again = model.segment_batch([ImageJob(image, boxes, False, image_key="sha-a")])[0]
        other_boxes = model.segment_batch([ImageJob(image, boxes + 3, False, image_key="sha-a")])[0]
    finally:
        hook.remove()
    assert batches == [1], "only the first request may run the encoder"
    assert (first.cached_embedding, again.cached_embedding, other_boxes.cached_embedding) == (False, True, True)
    assert again.encode_ms == 0 and first.encode_ms > 0
    assert torch.equal(first.low_res, again.low_res) and torch.equal(first.scores, again.scores)
    assert (model.cache.hits, model.cache.misses) == (2, 1)
    cached = model.cache.get(("sha-a", "tiny"))
    assert cached is not None and cached.features.device == model.device  # kept where the model is


def test_the_cache_forgets_the_least_recently_used_image_and_size_zero_keeps_nothing(tiny_sam):
    model = SamModel(tiny_sam, "tiny", cache_size=2)
    box = np.array([[0, 0, 8, 8]], np.float32)
    for key in ["a", "b", "a", "c"]:  # "a" was used after "b": "b" goes when "c" comes
        model.segment_batch([ImageJob(pixels(16, 16), box, False, image_key=key)])
    assert [key for key in ["a", "b", "c"] if model.cache.get((key, "tiny"))] == ["a", "c"]
    assert len(model.cache) == 2

    off = SamModel(tiny_sam, "tiny", cache_size=0)
    off.segment_batch([ImageJob(pixels(16, 16), box, False, image_key="a")])
    assert not off.segment_batch([ImageJob(pixels(16, 16), box, False, image_key="a")])[0].cached_embedding
    assert len(off.cache) == 0


def test_a_batch_runs_the_encoder_once_for_the_images_not_cached(tiny_sam):
    model = SamModel(tiny_sam, "tiny", cache_size=8)
    images = [pixels(40 + 10 * i, 60 - 5 * i) for i in range(4)]
    box = np.array([[1, 1, 30, 30]], np.float32)
    alone = [SamModel(tiny_sam, "tiny").segment(image, box, False) for image in images]
    model.segment_batch([ImageJob(images[1], box, False, image_key="k1")])  # cached beforehand
    batches, hook = count_encoder_passes(tiny_sam)
    try:
        results = model.segment_batch([ImageJob(image, box, False, image_key=f"k{i}") for i, image in enumerate(images)])
    finally:
        hook.remove()
    assert batches == [3], "one encoder pass, for the three images not cached"
    assert [r.cached_embedding for r in results] == [False, True, False, False]
    for together, single in zip(results, alone):
        assert together.low_res.shape == single.low_res.shape and together.postprocess == single.postprocess
        torch.testing.assert_close(together.scores, single.scores, atol=1e-4, rtol=1e-4)
        differing = ((together.low_res > 0) != (single.low_res > 0)).float().mean().item()
        assert differing < 0.01, f"batched masks differ from single ones on {differing:.2%} of low-res cells"


def test_warm_up_runs_the_model_once(tiny_sam):
    model = SamModel(tiny_sam, "tiny", cache_size=4)
    batches, hook = count_encoder_passes(tiny_sam)
    try:
        elapsed_ms = model.warm_up()
    finally:
        hook.remove()
    assert batches == [1] and elapsed_ms > 0
    assert len(model.cache) == 0  # the blank image is not kept


def test_torch_threads_follow_the_setting_or_the_cores():
    before = torch.get_num_threads()
    try:
        assert set_torch_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_torch_threads(0) == available_cores() == torch.get_num_threads()
        assert 1 <= available_cores() <= len(os.sched_getaffinity(0))
    finally:
        torch.set_num_threads(before)


def test_auto_device_is_cuda_only_when_available():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"


def test_a_missing_checkpoint_names_the_file_and_the_download_url(tmp_path):
    path = tmp_path / "sam_vit_l.pth"
    with pytest.raises(CheckpointError) as caught:
        check_checkpoint("vit_l", path)
    message = str(caught.value)
    assert str(path) in message and CHECKPOINT_URLS["vit_l"] in message
    assert "\n" not in message


@pytest.mark.parametrize("content", [b"", b"definitely not a torch file", b"PK\x03\x04" + b"\0" * 100])
def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "sam_vit_b.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as caught:
        load_sam("vit_b", path, "cpu")
    message = str(caught.value)
    assert str(path) in message and CHECKPOINT_URLS["vit_b"] in message
    assert "could not be loaded as a vit_b model" in message and "\n" not in message


def test_a_checkpoint_of_another_model_is_a_clear_error(tmp_path, tiny_sam):
    path = tmp_path / "tiny.pth"
    torch.save(tiny_sam.state_dict(), path)
    with pytest.raises(CheckpointError) as caught:
        load_sam("vit_b", path, "cpu")
    assert "could not be loaded as a vit_b model" in str(caught.value)
