"""The model wrapper with a tiny real SAM: shapes, exactness, batching, the cache, checkpoint errors."""

import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor

from server import masks
from server.models.checkpoint_file import CheckpointError, check_checkpoint
from server.prompts import Point, Prompt, decoder_calls
from server.models.device import (
    DeviceError, available_cores, check_device, cpu_flags, resolve_device, resolve_precision, set_torch_threads,
)
from harness.processes import REPO
from server.models.loading import load_model
from server.models.registry import MODEL_TYPES
from server.models.sam1 import SamModel
from server.models.sam1_decoder import decode_shared_image
from server.models.sam1_encoder import HeadByHeadAttention, attend_head_by_head
from server.models.seam import ImageJob, SegmentationModel
from tests.support.sentences import assert_one_sentence


@pytest.fixture
def model(tiny_sam):
    return SamModel(tiny_sam, "tiny")


def pixels(height, width):
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def boxes(*corners):
    return [Prompt(box=tuple(map(float, box))) for box in corners]


def test_one_low_res_map_per_box_and_the_image_size_to_make_masks_at(model):
    result = model.segment(pixels(48, 64), boxes([0, 0, 10, 10], [5, 5, 60, 40]), multimask=False)
    assert result.low_res.shape == (2, 1, 64, 64) and result.low_res.dtype == torch.float32  # the tiny model's 64×64
    assert result.scores.shape == (2, 1)
    assert result.postprocess == masks.Postprocess(256, (192, 256), (48, 64), 0.0)
    assert result.encode_ms > 0 and result.decode_ms > 0


def test_multimask_gives_three_candidates(model):
    result = model.segment(pixels(30, 20), boxes([0, 0, 10, 10]), multimask=True)
    assert result.low_res.shape == (1, 3, 64, 64)


def test_sixteen_boxes_go_through_the_decoder_prompts_per_call_at_a_time(model, tiny_sam):
    """On the CPU one at a time: each prompt in a call repeats the image embedding, and batching saves no time."""
    calls = []
    hook = tiny_sam.mask_decoder.transformer.register_forward_hook(lambda module, args, output: calls.append(output[0].shape))
    try:
        result = model.segment(pixels(64, 64), boxes(*[[i, i, i + 20, i + 20] for i in range(16)]), multimask=False)
    finally:
        hook.remove()
    assert model.prompts_per_call == 1  # the CPU
    assert [shape[0] for shape in calls] == [1] * 16
    assert result.low_res.shape[0] == 16


@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize("kind", ["points", "boxes", "boxes and points"])
def test_the_image_goes_into_the_decoder_once_for_a_batch_and_the_answer_is_the_stock_decoders(tiny_sam, kind, multimask):
    """`decode_shared_image` against `MaskDecoder.forward`, the image repeated per prompt: the same numbers."""
    generator = torch.Generator().manual_seed(3)
    batch, side = 7, tiny_sam.image_encoder.img_size
    corners = torch.sort(torch.rand(batch, 2, 2, generator=generator) * side, dim=1).values.flatten(1)
    points = (torch.rand(batch, 2, 2, generator=generator) * side, torch.tensor([[1, 0]] * batch, dtype=torch.int))
    prompt = {"points": points if "points" in kind else None, "boxes": corners if "boxes" in kind else None, "masks": None}
    with torch.inference_mode():
        features = torch.randn(1, tiny_sam.prompt_encoder.embed_dim, *tiny_sam.prompt_encoder.image_embedding_size,
                               generator=generator)
        sparse, dense = tiny_sam.prompt_encoder(**prompt)
        image_pe = tiny_sam.prompt_encoder.get_dense_pe()
        stock = tiny_sam.mask_decoder(image_embeddings=features, image_pe=image_pe, sparse_prompt_embeddings=sparse,
                                      dense_prompt_embeddings=dense, multimask_output=multimask)
        shared = decode_shared_image(tiny_sam.mask_decoder, features, image_pe, sparse, dense[:1], multimask)
    assert shared[0].shape == (batch, 3 if multimask else 1, *stock[0].shape[-2:])
    assert torch.equal(shared[0], stock[0]) and torch.equal(shared[1], stock[1])


@pytest.mark.parametrize("multimask", [False, True])
def test_a_score_floor_leaves_out_only_the_masks_of_prompts_scored_at_or_below_it(tiny_sam, multimask):
    generator = torch.Generator().manual_seed(4)
    batch, side = 12, tiny_sam.image_encoder.img_size
    points = (torch.rand(batch, 1, 2, generator=generator) * side, torch.ones(batch, 1, dtype=torch.int))
    with torch.inference_mode():
        features = torch.randn(1, tiny_sam.prompt_encoder.embed_dim, *tiny_sam.prompt_encoder.image_embedding_size,
                               generator=generator)
        sparse, dense = tiny_sam.prompt_encoder(points=points, boxes=None, masks=None)
        image_pe = tiny_sam.prompt_encoder.get_dense_pe()
        every = decode_shared_image(tiny_sam.mask_decoder, features, image_pe, sparse, dense[:1], multimask)
        best = every[1].max(1).values
        floor = float(best.median())
        some = decode_shared_image(tiny_sam.mask_decoder, features, image_pe, sparse, dense[:1], multimask, floor)
        none = decode_shared_image(tiny_sam.mask_decoder, features, image_pe, sparse, dense[:1], multimask, 1e9)
    made = best > floor
    assert 0 < int(made.sum()) < batch
    assert torch.equal(some[1], every[1]) and torch.equal(none[1], every[1])
    torch.testing.assert_close(some[0][made], every[0][made], atol=1e-6, rtol=1e-6)
    assert not some[0][~made].any() and not none[0].any() and none[0].shape == every[0].shape


def test_decoder_calls_keep_one_structure_per_call_and_at_most_so_many_prompts():
    assert decoder_calls(MIXED, 16) == [[0, 4], [1, 5], [2], [3]]
    assert decoder_calls(MIXED, 1) == [[0], [4], [1], [5], [2], [3]]
    many = [Prompt(box=(0.0, 0.0, 5.0, 5.0))] * 10
    assert decoder_calls(many, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize("height, width", [(100, 200), (200, 100), (37, 91), (256, 256), (300, 17)])
@pytest.mark.parametrize("multimask", [False, True])
def test_masks_and_scores_are_exactly_those_of_segment_anythings_predictor(model, tiny_sam, height, width, multimask):
    """The cached path does SamPredictor's arithmetic for each box alone: same logits and scores, same masks."""
    image = pixels(height, width)
    corners = np.array([[0, 0, width, height], [width / 4, height / 5, width / 2, height * 0.9]], np.float32)
    predictor = SamPredictor(tiny_sam)
    predictor.set_image(image)
    with torch.inference_mode():
        alone = [
            predictor.predict_torch(
                None, None, boxes=torch.as_tensor(predictor.transform.apply_boxes(corners[k : k + 1], (height, width)),
                                                  dtype=torch.float), multimask_output=multimask,
            )
            for k in range(len(corners))
        ]
    expected_masks, expected_scores, expected_low_res = (torch.cat(parts) for parts in zip(*alone))
    result = model.segment(image, boxes(*corners), multimask=multimask)
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
    image, box = pixels(64, 48), boxes([2, 2, 30, 40])
    batches, hook = count_encoder_passes(tiny_sam)
    try:
        first = model.segment_batch([ImageJob(image, box, False, image_key="sha-a")])[0]
        again = model.segment_batch([ImageJob(image, box, False, image_key="sha-a")])[0]
        other_boxes = model.segment_batch([ImageJob(image, boxes([5, 5, 33, 43]), False, image_key="sha-a")])[0]
    finally:
        hook.remove()
    assert batches == [1], "only the first request may run the encoder"
    assert (first.cached_embedding, again.cached_embedding, other_boxes.cached_embedding) == (False, True, True)
    assert again.encode_ms == 0 and first.encode_ms > 0
    assert torch.equal(first.low_res, again.low_res) and torch.equal(first.scores, again.scores)
    assert (model.cache.hits, model.cache.misses) == (2, 1)
    cached = model.cache.get(("sha-a", "tiny", None))
    assert cached is not None and cached.features[0].device == model.device  # kept where the model is


def test_the_cache_forgets_the_least_recently_used_image_and_size_zero_keeps_nothing(tiny_sam):
    model = SamModel(tiny_sam, "tiny", cache_size=2)
    box = boxes([0, 0, 8, 8])
    for key in ["a", "b", "a", "c"]:  # "a" was used after "b": "b" goes when "c" comes
        model.segment_batch([ImageJob(pixels(16, 16), box, False, image_key=key)])
    assert [key for key in ["a", "b", "c"] if model.cache.get((key, "tiny", None))] == ["a", "c"]
    assert len(model.cache) == 2

    off = SamModel(tiny_sam, "tiny", cache_size=0)
    off.segment_batch([ImageJob(pixels(16, 16), box, False, image_key="a")])
    assert not off.segment_batch([ImageJob(pixels(16, 16), box, False, image_key="a")])[0].cached_embedding
    assert len(off.cache) == 0


def test_a_batch_runs_the_encoder_once_for_the_images_not_cached(tiny_sam):
    model = SamModel(tiny_sam, "tiny", cache_size=8)
    images = [pixels(40 + 10 * i, 60 - 5 * i) for i in range(4)]
    box = boxes([1, 1, 30, 30])
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
    assert str(path) in message and MODEL_TYPES["vit_l"].url in message
    assert "download-checkpoint" in message
    assert_one_sentence(message)


@pytest.mark.parametrize("content", [b"", b"definitely not a torch file", b"PK\x03\x04" + b"\0" * 100])
def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "sam_vit_b.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as caught:
        load_model("vit_b", path, "cpu")
    message = str(caught.value)
    assert str(path) in message and MODEL_TYPES["vit_b"].url in message
    assert "it is not a complete PyTorch checkpoint" in message
    assert_one_sentence(message)


def test_a_checkpoint_of_another_model_is_a_clear_error(tiny_checkpoint):
    with pytest.raises(CheckpointError) as caught:
        load_model("vit_b", tiny_checkpoint, "cpu")
    assert "its weights do not fit a vit_b model" in str(caught.value)
    assert_one_sentence(str(caught.value))


@pytest.mark.parametrize("setting, words", [("tpu0", "is not a device name"), ("cuda:99", "CUDA")])
def test_a_device_this_machine_lacks_is_one_sentence_before_anything_loads(setting, words):
    with pytest.raises(DeviceError) as caught:
        check_device(setting)
    assert words in str(caught.value) and f"SAM_DEVICE={setting}" in str(caught.value).replace("'", "")
    assert_one_sentence(str(caught.value))
    check_device("cpu")
    check_device("auto")


MIXED = [
    Prompt(box=(2.0, 3.0, 40.0, 30.0)),
    Prompt(points=(Point(10, 12, 1),)),
    Prompt(points=(Point(10, 12, 1), Point(30, 5, 0), Point(44, 40, 1))),
    Prompt(box=(5.0, 5.0, 20.0, 45.0), points=(Point(10, 12, 1),)),
    Prompt(box=(1.0, 1.0, 50.0, 30.0)),
    Prompt(points=(Point(0, 0, 0),)),
]


@pytest.mark.parametrize("multimask", [False, True])
def test_prompts_of_each_structure_share_one_decoder_call_and_come_back_in_order(model, tiny_sam, multimask):
    image = pixels(48, 64)
    calls = []
    hook = tiny_sam.mask_decoder.transformer.register_forward_hook(
        lambda module, args, output: calls.append(output[0].shape[0])
    )
    try:
        together = model.segment(image, MIXED, multimask)
    finally:
        hook.remove()
    assert calls == [1] * len(MIXED), "on the CPU, one prompt per decoder call"
    assert together.low_res.shape == (6, 3 if multimask else 1, 64, 64)
    for index, prompt in enumerate(MIXED):
        alone = model.segment(image, [prompt], multimask)
        torch.testing.assert_close(together.low_res[index], alone.low_res[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(together.scores[index], alone.scores[0], atol=1e-5, rtol=1e-5)


def test_a_point_prompt_is_padded_as_segment_anything_pads_it(model, tiny_sam):
    """Grouping a point-only prompt with a box+point one would drop SAM's "not a point" token."""
    image = pixels(48, 64)
    point, box_and_point = MIXED[1], MIXED[3]
    predictor = SamPredictor(tiny_sam)
    predictor.set_image(image)
    result = model.segment(image, [point, box_and_point], multimask=True)
    for index, prompt in enumerate([point, box_and_point]):
        _, scores, low_res = predictor.predict(
            np.array([p[:2] for p in prompt.points], float), np.array([p.label for p in prompt.points]),
            np.array(prompt.box) if prompt.box else None, multimask_output=True,
        )
        np.testing.assert_allclose(result.low_res[index].numpy(), low_res, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(result.scores[index].numpy(), scores, atol=1e-5, rtol=1e-5)


def test_a_mask_input_of_the_wrong_size_is_refused(model):
    with pytest.raises(ValueError, match="mask_input"):
        model.segment(pixels(16, 16), [Prompt(box=(0, 0, 8, 8), mask_input=np.zeros((1, 256, 256), np.float32))], False)


def test_mask_input_hands_an_earlier_results_logits_back(model):
    image = pixels(40, 40)
    first = model.segment(image, [MIXED[1]], multimask=True)
    logits = first.mask_input(0, candidate=2)
    assert logits.shape == (1, 64, 64) and np.array_equal(logits[0], first.low_res[0, 2].numpy())
    refined = model.segment(image, [Prompt(points=MIXED[1].points, mask_input=logits)], multimask=False)
    plain = model.segment(image, [MIXED[1]], multimask=False)
    assert not torch.equal(refined.low_res, plain.low_res)  # the mask prompt was used


def test_no_prompts_prepares_the_image_and_a_known_image_needs_no_pixels(tiny_sam):
    model = SamModel(tiny_sam, "tiny", cache_size=2)
    image = pixels(30, 50)
    assert not model.has_embedding("sha-p")
    prepared = model.segment_batch([ImageJob(image, [], True, image_key="sha-p")])[0]
    assert prepared.low_res.shape == (0, 3, 64, 64) and prepared.scores.shape == (0, 3)
    assert prepared.postprocess.original_size == (30, 50) and not prepared.cached_embedding
    assert model.has_embedding("sha-p") and (model.cache.hits, model.cache.misses) == (0, 1)  # not counted
    by_hash = model.segment_batch([ImageJob(None, boxes([1, 1, 20, 20]), False, image_key="sha-p")])[0]
    with_pixels = SamModel(tiny_sam, "tiny").segment(image, boxes([1, 1, 20, 20]), False)
    assert by_hash.cached_embedding and torch.equal(by_hash.low_res, with_pixels.low_res)
    assert by_hash.postprocess == with_pixels.postprocess
    with pytest.raises(LookupError, match="sha-q"):
        model.segment_batch([ImageJob(None, boxes([1, 1, 20, 20]), False, image_key="sha-q")])


def test_the_model_and_the_tests_double_speak_the_processors_interface(tiny_sam):
    from tests.conftest import ModelGate

    model = SamModel(tiny_sam, "tiny")
    assert isinstance(model, SegmentationModel)
    assert isinstance(ModelGate(model), SegmentationModel)
    static_check: SegmentationModel = ModelGate(model)  # and for a type checker
    assert static_check.has_embedding("nothing") is False


@pytest.mark.parametrize(
    "setting, flags, dtype, words",
    [
        ("auto", {"avx512f", "avx512_bf16"}, torch.bfloat16, "PRECISION=auto and the CPU has avx512_bf16"),
        ("auto", {"amx_bf16", "amx_tile"}, torch.bfloat16, "the CPU has amx_bf16"),
        ("auto", {"avx2", "avx512f"}, torch.float32, "no native bfloat16"),
        ("fp32", {"avx512_bf16"}, torch.float32, "PRECISION=fp32"),
        ("bf16", {"avx2"}, torch.bfloat16, "emulated, so slower than fp32"),
    ],
)
def test_auto_precision_is_bf16_only_on_a_cpu_with_native_bf16(setting, flags, dtype, words):
    precision = resolve_precision(setting, torch.device("cpu"), flags)
    assert precision.dtype == dtype and words in precision.reason
    assert precision.name == ("bf16" if dtype == torch.bfloat16 else "fp32")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu sse avx512_bf16\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse", "avx512_bf16"}
    assert cpu_flags(tmp_path / "absent") == set()


def test_bf16_runs_the_encoder_in_bfloat16_and_keeps_float32_features(tiny_sam):
    dtypes = []
    hook = tiny_sam.image_encoder.blocks[0].attn.qkv.register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    try:
        bf16 = SamModel(tiny_sam, "tiny", precision=resolve_precision("bf16", torch.device("cpu"), set()))
        fp32 = SamModel(tiny_sam, "tiny", precision=resolve_precision("fp32", torch.device("cpu"), set()))
        [embedding] = bf16.embed([pixels(40, 30)])
        fp32.embed([pixels(40, 30)])
    finally:
        hook.remove()
    assert dtypes == [torch.bfloat16, torch.float32]
    assert embedding.features[0].dtype == torch.float32  # the decoder and the cache see float32


def test_memory_counts_the_weights_and_one_cached_embedding(model, tiny_sam):
    memory = model.memory()
    assert memory.weights_bytes == sum(p.numel() * 4 for p in tiny_sam.parameters())
    [embedding] = model.embed([pixels(20, 20)])
    assert memory.embedding_bytes == embedding.nbytes == 32 * 16 * 16 * 4
    assert model.preferred_batch_size == 1  # on the CPU


@pytest.mark.slow  # a fresh interpreter imports sam2
def test_sam2_and_hydra_are_imported_only_when_a_sam2_model_is_loaded():
    """`import sam2` initialises Hydra for the whole process: a SAM 1 server must not pay for it, or carry it."""
    code = (
        "import sys, server.main, server.models.loading, server.models.registry, server.models.sam1, server.__main__; "
        "print(sorted(name for name in ('sam2', 'hydra') if name in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_encoders_global_attention_one_head_at_a_time_gives_the_stock_encoders_output(tiny_sam):
    """`attend_head_by_head` on a copy of the tiny SAM (its first block attends globally) against the stock one."""
    patched = attend_head_by_head(copy.deepcopy(tiny_sam))
    global_blocks = [block for block in patched.image_encoder.blocks if block.window_size == 0]
    assert global_blocks and all(isinstance(block.attn, HeadByHeadAttention) for block in global_blocks)
    assert not any(isinstance(block.attn, HeadByHeadAttention) for block in tiny_sam.image_encoder.blocks)
    image = torch.randn(2, 3, tiny_sam.image_encoder.img_size, tiny_sam.image_encoder.img_size,
                        generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        torch.testing.assert_close(patched.image_encoder(image), tiny_sam.image_encoder(image), atol=1e-5, rtol=1e-5)
