"""COCO RLE: exact round trips, orientation, and the wire shape of results."""

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from server import masks


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 7, 5), (2, 480, 640), (1, 640, 480)])
def test_random_masks_round_trip_exactly(shape):
    generator = torch.Generator().manual_seed(sum(shape))
    tensor = torch.rand(shape, generator=generator) > 0.5
    encoded = masks.encode(tensor)
    assert len(encoded) == shape[0]
    for index, entry in enumerate(encoded):
        segmentation = entry["segmentation"]
        assert segmentation["size"] == [shape[1], shape[2]]
        assert isinstance(segmentation["counts"], str)
        decoded = mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()})
        assert decoded.shape == shape[1:]
        np.testing.assert_array_equal(decoded, tensor[index].numpy().astype(np.uint8))
        assert entry["area"] == int(tensor[index].sum())


def test_orientation_and_bbox_of_a_known_rectangle():
    """A rectangle at rows 10..19, columns 30..69 of a 50×100 (H×W) image."""
    mask = torch.zeros(1, 50, 100, dtype=torch.bool)
    mask[0, 10:20, 30:70] = True
    [entry] = masks.encode(mask)
    assert entry["bbox"] == [30.0, 10.0, 40.0, 10.0]  # x, y, width, height
    assert entry["area"] == 400
    decoded = masks.decode(entry["segmentation"])
    assert decoded[10:20, 30:70].all() and decoded.sum() == 400


def test_empty_and_full_masks():
    full, empty = masks.encode(torch.stack([torch.ones(4, 6, dtype=torch.bool), torch.zeros(4, 6, dtype=torch.bool)]))
    assert (full["area"], empty["area"]) == (24, 0)
    assert masks.decode(full["segmentation"]).all() and not masks.decode(empty["segmentation"]).any()


def test_encode_refuses_the_wrong_rank():
    with pytest.raises(ValueError):
        masks.encode(torch.zeros(4, 6, dtype=torch.bool))


BOXES = [{"x": 0.0, "y": 0.0, "width": 2.0, "height": 2.0}, {"x": 1.0, "y": 1.0, "width": 3.0, "height": 2.0}]


def test_wire_masks_single():
    tensor = torch.zeros(2, 1, 4, 6, dtype=torch.bool)
    tensor[1, 0, 1:3, 1:4] = True
    wire = masks.wire_masks(tensor, torch.tensor([[0.25], [0.75]]), BOXES, multimask=False)
    assert [m["box"] for m in wire] == BOXES
    assert [m["score"] for m in wire] == [0.25, 0.75]
    assert wire[1]["area"] == 6 and wire[1]["bbox"] == [1.0, 1.0, 3.0, 2.0]


def test_wire_masks_multimask_gives_three_per_box_in_order():
    tensor = torch.zeros(2, 3, 4, 6, dtype=torch.bool)
    for box in range(2):
        for candidate in range(3):
            tensor[box, candidate, 0, : box * 3 + candidate + 1] = True  # area tells them apart
    scores = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 10
    wire = masks.wire_masks(tensor, scores, BOXES, multimask=True)
    assert [len(group) for group in wire] == [3, 3]
    assert [[m["area"] for m in group] for group in wire] == [[1, 2, 3], [4, 5, 6]]
    assert [[m["score"] for m in group] for group in wire] == [[0.0, 0.1, 0.2], [0.3, 0.4, 0.5]]
    assert all(m["box"] == BOXES[1] for m in wire[1])
