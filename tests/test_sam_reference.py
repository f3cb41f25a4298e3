"""Every prompt on both families, against each family's own predictor on the same weights.

The README promises, for each prompt, the masks of the family's predictor
(`SamPredictor.predict` for SAM 1, `SAM2ImagePredictor.predict` for SAM 2.1)
with that prompt alone on the same weights: IoU >= 0.99 per mask and scores
within 1e-3 on the CPU in full precision. The weights are random: a full-size
vit_b and a full-size SAM 2.1 hiera_t, each a checkpoint file in the official
layout, loaded by production's `load_model`; so nothing here says anything of
mask quality, only of equality with the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sam2.sam2_image_predictor import SAM2ImagePredictor
from segment_anything import SamPredictor

from server import masks
from server.models.loading import load_model
from server.models.sam1 import load_sam
from server.models.sam1_encoder import HeadByHeadAttention
from server.models.registry import MODEL_TYPES
from server.models.seam import ImageJob
from server.prompts import Point, Prompt

pytestmark = pytest.mark.slow  # full-size models on the CPU

SIZES = {"wide": (150, 200), "tall": (310, 97)}  # height, width
CHECKPOINTS = {"vit_b": "vit_b_checkpoint", "sam2.1_hiera_t": "hiera_t_checkpoint"}  # conftest's fixtures


@pytest.fixture(scope="module", params=list(CHECKPOINTS))
def model_type(request):
    return request.param


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(7)
    found = {}
    for name, (height, width) in SIZES.items():
        # smooth shapes rather than noise, so that the masks have edges worth comparing
        y, x = np.mgrid[0:height, 0:width]
        base = (np.sin(x / 9.0) + np.cos(y / 13.0) > 0.3).astype(np.uint8) * 180
        found[name] = (base[..., None] + rng.integers(0, 60, (height, width, 3))).astype(np.uint8)
    return found


@pytest.fixture(scope="module")
def model(request, model_type, images):
    """Ours, loaded the production way, with both images' embeddings cached: SAM 2.1's by one batched
    encoder pass; vit_b's one image at a time, because its global attention takes about 2.4 GB per image
    in fp32 (two at once would double the test run's peak; batching itself is test_sam_model's, on the
    tiny SAM, which runs the same code)."""
    checkpoint = request.getfixturevalue(CHECKPOINTS[model_type])
    model = load_model(model_type, checkpoint, "cpu", "fp32", cache_size=4)
    jobs = [ImageJob(pixels, [], False, image_key=name) for name, pixels in images.items()]
    for batch in ([[job] for job in jobs] if model_type == "vit_b" else [jobs]):
        model.segment_batch(batch)
    return model


@pytest.fixture(scope="module")
def predictors(request, model, images):
    """The reference on the same weights: one predictor per image, its `set_image` run once. SAM 1's is a
    stock `Sam` of its own, since ours computes the encoder's global attention one head at a time."""
    found = {}
    if model.model_type == "vit_b":
        stock = load_sam(model.model_type, request.getfixturevalue(CHECKPOINTS[model.model_type]), "cpu")
        assert not any(isinstance(block.attn, HeadByHeadAttention) for block in stock.image_encoder.blocks)
    for name, pixels in images.items():
        predictor = SamPredictor(stock) if model.model_type == "vit_b" else SAM2ImagePredictor(model.model)
        predictor.set_image(pixels)
        found[name] = predictor
    return found.__getitem__


def predictor_features(predictor) -> tuple[torch.Tensor, ...]:
    if isinstance(predictor, SamPredictor):
        return (predictor.features,)
    return (predictor._features["image_embed"], *predictor._features["high_res_feats"])


def reference(predictor: SamPredictor, prompt: Prompt, multimask: bool):
    points = prompt.points or None
    return predictor.predict(
        point_coords=np.array([(p.x, p.y) for p in points], float) if points else None,
        point_labels=np.array([p.label for p in points]) if points else None,
        box=np.array(prompt.box, float) if prompt.box is not None else None,
        mask_input=prompt.mask_input,
        multimask_output=multimask,
    )


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def assert_like_the_predictor(model, predictor, name, prompts, multimask):
    """One request with all `prompts`; each answer against `predict` with that prompt alone."""
    [result] = model.segment_batch([ImageJob(None, prompts, multimask, image_key=name)])
    echoes = [{"index": i} for i in range(len(prompts))]
    wire = masks.wire_masks(result.low_res, result.scores, result.postprocess, echoes, multimask)
    partial = 0  # masks neither empty nor whole: the comparison is about edges, not trivia
    for index, prompt in enumerate(prompts):
        expected_masks, expected_scores, _ = reference(predictor, prompt, multimask)
        answers = wire[index] if multimask else [wire[index]]
        assert len(answers) == len(expected_masks) == (3 if multimask else 1)
        for candidate, (answer, expected) in enumerate(zip(answers, expected_masks)):
            found = masks.decode(answer["segmentation"]).astype(bool)
            assert found.shape == expected.shape == SIZES[name]
            overlap = iou(found, expected)
            assert overlap >= 0.99, f"prompt {index} candidate {candidate}: IoU {overlap:.4f}"
            partial += 0 < expected.sum() < expected.size
            score = float(result.scores[index, candidate])
            assert abs(score - float(expected_scores[candidate])) <= 1e-3, f"prompt {index} candidate {candidate}"
            assert answer["score"] == round(score, 4)
    assert partial > 0
    return result


def test_the_cached_embeddings_are_the_predictors(model, predictors):
    for name in SIZES:
        embedding = model.cache.get((name, model.model_type, None))
        expected = predictor_features(predictors(name))
        assert len(embedding.features) == len(expected) == (1 if model.model_type == "vit_b" else 3)
        for found, reference_level in zip(embedding.features, expected):
            torch.testing.assert_close(found, reference_level, atol=1e-4, rtol=1e-4)
        # what EMBEDDING_CACHE_SIZE multiplies, as the registry (and so the docs) says
        assert model.memory().embedding_bytes == embedding.nbytes == MODEL_TYPES[model.model_type].embedding_bytes


def test_a_mask_input_of_another_size_is_refused(model):
    wrong = Prompt(box=(0.0, 0.0, 8.0, 8.0), mask_input=np.zeros((1, 64, 64), np.float32))
    with pytest.raises(ValueError, match="mask_input must be 1 × 256"):
        model.segment_batch([ImageJob(None, [wrong], False, image_key="wide")])


@pytest.mark.parametrize("name", list(SIZES))
@pytest.mark.parametrize("multimask", [False, True])
def test_boxes(model, predictors, name, multimask):
    height, width = SIZES[name]
    prompts = [Prompt(box=(0.0, 0.0, width, height)), Prompt(box=(width * 0.2, height * 0.3, width * 0.7, height * 0.9))]
    assert_like_the_predictor(model, predictors(name), name, prompts, multimask)


@pytest.mark.parametrize("name", list(SIZES))
def test_positive_and_negative_points(model, predictors, name):
    height, width = SIZES[name]
    prompts = [
        Prompt(points=(Point(width / 2, height / 2, 1),)),
        Prompt(points=(Point(width / 3, height / 4, 1), Point(width * 0.8, height * 0.7, 0))),
        Prompt(points=(Point(0, 0, 0), Point(width, height, 1), Point(width / 2, 0, 1))),
    ]
    assert_like_the_predictor(model, predictors(name), name, prompts, multimask=True)
    assert_like_the_predictor(model, predictors(name), name, prompts, multimask=False)


@pytest.mark.parametrize("name", list(SIZES))
def test_box_and_points(model, predictors, name):
    height, width = SIZES[name]
    prompts = [
        Prompt(box=(5.0, 5.0, width - 5.0, height / 2), points=(Point(width / 2, height / 4, 1),)),
        Prompt(box=(1.0, 2.0, width / 2, height - 1.0), points=(Point(10, 10, 0), Point(width / 4, height / 2, 1))),
    ]
    assert_like_the_predictor(model, predictors(name), name, prompts, multimask=False)


@pytest.mark.parametrize("name", list(SIZES))
def test_mask_input_refines_the_predictors_own_low_res_output(model, predictors, name):
    height, width = SIZES[name]
    predictor = predictors(name)
    click = (Point(width / 2, height / 2, 1),)
    _, scores, low_res = predictor.predict(np.array([click[0][:2]]), np.array([1]), multimask_output=True)
    best = low_res[int(np.argmax(scores))][None]  # 1 × 256 × 256, as the READMEs feed it back
    prompts = [
        Prompt(points=click + (Point(width / 5, height / 5, 0),), mask_input=best),
        Prompt(box=(2.0, 2.0, width * 0.6, height * 0.6), mask_input=best),
        Prompt(box=(2.0, 2.0, width * 0.6, height * 0.6), points=click, mask_input=best),
    ]
    assert_like_the_predictor(model, predictor, name, prompts, multimask=False)


def test_our_own_low_res_output_fed_back_is_the_predictors(model, predictors):
    height, width = SIZES["wide"]
    click = Prompt(points=(Point(width / 2, height / 2, 1),))
    first = assert_like_the_predictor(model, predictors("wide"), "wide", [click], multimask=True)
    _, _, expected_low_res = reference(predictors("wide"), click, multimask=True)
    handed_back = np.concatenate([first.mask_input(0, candidate) for candidate in range(3)])
    np.testing.assert_allclose(handed_back, expected_low_res, atol=1e-3, rtol=1e-3)
    refine = Prompt(points=click.points, mask_input=first.mask_input(0, candidate=1))
    assert_like_the_predictor(model, predictors("wide"), "wide", [refine], multimask=False)


@pytest.mark.parametrize("multimask", [False, True])
def test_one_request_mixing_every_shape(model, predictors, multimask):
    height, width = SIZES["tall"]
    predictor = predictors("tall")
    _, _, low_res = predictor.predict(box=np.array([3.0, 3.0, 60.0, 200.0]), multimask_output=False)
    prompts = [
        Prompt(box=(3.0, 3.0, 60.0, 200.0)),
        Prompt(points=(Point(40, 150, 1),)),
        Prompt(box=(10.0, 100.0, 90.0, 300.0), points=(Point(50, 200, 1), Point(20, 120, 0))),
        Prompt(points=(Point(40, 150, 1), Point(80, 20, 0))),
        Prompt(box=(3.0, 3.0, 60.0, 200.0), mask_input=low_res),
        Prompt(points=(Point(30, 60, 1),)),
        Prompt(points=(Point(30, 60, 1),), mask_input=low_res),
        Prompt(box=(0.0, 0.0, width, height)),
    ]
    assert_like_the_predictor(model, predictor, "tall", prompts, multimask)


def reference_at_size(predictor, low_res: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The family's own postprocessing of these logits with its last resize going to `size` (height, width)."""
    if isinstance(predictor, SamPredictor):
        return predictor.model.postprocess_masks(low_res, predictor.input_size, size)
    return predictor._transforms.postprocess_masks(low_res, size)


@pytest.mark.parametrize("name", list(SIZES))
@pytest.mark.parametrize("scale", [0.32, 0.5, 0.07])
def test_mask_scale_is_the_familys_postprocess_with_its_last_resize_at_that_size(model, predictors, name, scale):
    """`mask_scale`: the masks the family's own postprocessing gives with its final resize going to
    floor(W·s + 0.5) × floor(H·s + 0.5), thresholded as it thresholds, on the same logits."""
    height, width = SIZES[name]
    prompts = [Prompt(points=(Point(width / 2, height / 2, 1),)), Prompt(box=(width * 0.2, height * 0.3, width * 0.7, height * 0.9))]
    [result] = model.segment_batch([ImageJob(None, prompts, True, image_key=name)])
    size = (max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5)))
    logits = reference_at_size(predictors(name), result.low_res, size)
    expected = (logits > result.postprocess.threshold).numpy()
    near = (logits - result.postprocess.threshold).abs().numpy() <= 1e-4
    post = result.postprocess.at_scale(scale)
    wire = masks.wire_masks(result.low_res, result.scores, post, [{}, {}], multimask=True)
    partial = 0
    for index in range(len(prompts)):
        for candidate, answer in enumerate(wire[index]):
            found = masks.decode(answer["segmentation"]).astype(bool)
            assert found.shape == size
            wanted = expected[index, candidate]
            differing = (found != wanted) & ~near[index, candidate]
            assert not differing.any(), f"prompt {index} candidate {candidate}: {int(differing.sum())} pixels differ"
            partial += 0 < wanted.sum() < wanted.size
    assert partial > 0
