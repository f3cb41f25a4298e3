"""SAM 2.1's module on a random-weight hiera_t built in memory: what the reference tests do not show."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from server.models.registry import MODEL_TYPES
from server.models.sam2 import MASK_INPUT_LIMIT, Sam2Model, build
from server.prompts import Point, Prompt

pytestmark = pytest.mark.slow  # full-size models on the CPU


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    built = build("sam2.1_hiera_t")
    return Sam2Model(built.eval(), "sam2.1_hiera_t", cache_size=2)


@pytest.mark.parametrize("height, width", [(31, 17), (480, 640), (1001, 333)])
def test_the_image_is_prepared_as_sam2_transforms_prepares_it_bit_for_bit(model, height, width):
    pixels = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    assert torch.equal(model.prepare(pixels), model.transforms(pixels))


def test_a_read_only_image_is_prepared_without_a_warning(model):
    pixels = np.zeros((40, 30, 3), np.uint8)
    pixels.flags.writeable = False  # as images.decode hands them over
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.prepare(pixels).shape == (3, 1024, 1024)


def test_an_embedding_is_three_float32_maps_of_17_mb(model):
    [embedding] = model.embed([np.zeros((48, 64, 3), np.uint8)])
    assert [tuple(level.shape) for level in embedding.features] == [(1, 256, 64, 64), (1, 32, 256, 256), (1, 64, 128, 128)]
    assert all(level.dtype == torch.float32 for level in embedding.features)
    assert embedding.nbytes == model.memory().embedding_bytes == MODEL_TYPES["sam2.1_hiera_t"].embedding_bytes == 16_777_216
    assert embedding.postprocess.encoder_size == 256 and embedding.postprocess.original_size == (48, 64)


def test_a_mask_input_is_clamped_as_the_predictor_clamps_the_logits_it_returns(model):
    """A client refines with logits the predictor would have handed back clamped to ±32; so the same result."""
    image = np.zeros((48, 64, 3), np.uint8)
    click = (Point(10, 10, 1),)
    logits = np.zeros((1, 256, 256), np.float32)
    logits[0, :128] = 900.0  # past the limit, as trained weights give
    logits[0, 128:] = -900.0
    clamped = np.clip(logits, -MASK_INPUT_LIMIT, MASK_INPUT_LIMIT)
    raw, limited = (
        model.segment(image, [Prompt(points=click, mask_input=given)], multimask=False) for given in (logits, clamped)
    )
    assert torch.equal(raw.low_res, limited.low_res) and torch.equal(raw.scores, limited.scores)
    unclamped = model.segment(image, [Prompt(points=click, mask_input=logits * 0.01)], multimask=False)
    assert not torch.equal(unclamped.low_res, limited.low_res)  # the mask input is used at all
