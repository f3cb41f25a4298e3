"""The model wrapper with a tiny real SAM: shapes, batching, checkpoint errors."""

import numpy as np
import pytest
import torch

from server.config import CHECKPOINT_URLS
from server.sam_model import CheckpointError, SamModel, check_checkpoint, load_sam, resolve_device


@pytest.fixture
def model(tiny_sam):
    return SamModel(tiny_sam, "tiny")


def pixels(height, width):
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_one_mask_per_box_at_image_size(model):
    result = model.segment(pixels(48, 64), np.array([[0, 0, 10, 10], [5, 5, 60, 40]], np.float32), multimask=False)
    assert result.masks.shape == (2, 1, 48, 64) and result.masks.dtype == torch.bool
    assert result.scores.shape == (2, 1)
    assert result.encode_ms > 0 and result.decode_ms > 0


def test_multimask_gives_three_candidates(model):
    result = model.segment(pixels(30, 20), np.array([[0, 0, 10, 10]], np.float32), multimask=True)
    assert result.masks.shape == (1, 3, 30, 20)


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
    assert result.masks.shape[0] == 16


def test_boxes_are_mapped_into_the_model_frame(model, monkeypatch):
    """Boxes are given in image pixels; the decoder gets them scaled to the 256-pixel model input."""
    seen = {}
    original = model.predictor.predict_torch

    def spy(**kwargs):
        seen["boxes"] = kwargs["boxes"].clone()
        return original(**kwargs)

    monkeypatch.setattr(model.predictor, "predict_torch", spy)
    model.segment(pixels(100, 200), np.array([[0, 0, 200, 100]], np.float32), multimask=False)
    torch.testing.assert_close(seen["boxes"], torch.tensor([[0.0, 0.0, 256.0, 128.0]]))


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
