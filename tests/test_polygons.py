"""Polygons: outer rings along pixel edges that, rasterised by COCO's own code, give back the filled mask."""

import numpy as np
import pytest
import torch

from server import masks
from server.polygons import outer_rings
from tests.support.mask_shapes import filled, iou, rasterised


def assert_rings_of(mask: np.ndarray, rings: list, top: int = 0, left: int = 0, size=None):
    height, width = size or mask.shape
    image = np.zeros((height, width), bool)
    image[top : top + mask.shape[0], left : left + mask.shape[1]] = mask
    for ring in rings:
        assert len(ring) >= 6 and len(ring) % 2 == 0 and all(isinstance(v, int) for v in ring)
        xs, ys = np.array(ring[0::2]), np.array(ring[1::2])
        assert xs.min() >= 0 and xs.max() <= width and ys.min() >= 0 and ys.max() <= height
    found = rasterised(rings, height, width)
    assert iou(found, filled(image)) >= 0.9
    np.testing.assert_array_equal(found, filled(image))  # in fact exact: edges, not centres


@pytest.mark.parametrize("density", [0.02, 0.1, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("shape", [(37, 53), (120, 90)])
def test_random_masks_many_small_fragments_and_diagonal_touches(density, shape):
    mask = np.random.default_rng(int(density * 100) + shape[0]).random(shape) < density
    assert_rings_of(mask, outer_rings(mask))


def test_single_pixels_are_unit_squares_not_lost():
    mask = np.zeros((5, 6), bool)
    mask[0, 0] = mask[2, 3] = mask[4, 5] = True
    rings = outer_rings(mask)
    assert sorted(rings) == sorted([[0, 0, 0, 1, 1, 1, 1, 0], [3, 2, 3, 3, 4, 3, 4, 2], [5, 4, 5, 5, 6, 5, 6, 4]])
    assert_rings_of(mask, rings)


def test_a_ring_with_a_hole_is_one_outer_boundary_and_the_hole_is_filled():
    mask = np.zeros((20, 20), bool)
    mask[3:17, 4:15] = True
    mask[6:12, 7:11] = False
    mask[8, 8] = True  # an island in the hole: inside the outer ring too
    rings = outer_rings(mask)
    assert len(rings) == 1 and len(rings[0]) == 8  # a rectangle: 4 corners, no collinear vertices
    assert_rings_of(mask, rings)


def test_a_concave_l_shape_follows_its_edges():
    mask = np.array([[1, 0], [1, 1]], bool)
    [ring] = outer_rings(mask)
    corners = sorted(zip(ring[0::2], ring[1::2]))
    assert corners == [(0, 0), (0, 2), (1, 0), (1, 1), (2, 1), (2, 2)]
    assert_rings_of(mask, [ring])


def test_a_mask_filling_the_image_touches_every_border_and_stays_inside():
    assert outer_rings(np.ones((3, 4), bool)) == [[0, 0, 0, 3, 4, 3, 4, 0]]
    assert outer_rings(np.ones((1, 1), bool)) == [[0, 0, 0, 1, 1, 1, 1, 0]]
    assert outer_rings(np.zeros((3, 4), bool)) == []


def test_a_crop_is_placed_at_its_offset():
    mask = np.random.default_rng(3).random((15, 25)) < 0.4
    assert_rings_of(mask, outer_rings(mask, top=7, left=11), top=7, left=11, size=(40, 50))


def test_a_column_major_view_as_crops_come():
    mask = np.ascontiguousarray((np.random.default_rng(4).random((30, 20)) < 0.5).T).T
    assert not mask.flags.c_contiguous
    assert_rings_of(mask, outer_rings(mask))


def test_wire_masks_with_polygons_only_and_with_both():
    height, width = 300, 400
    post = masks.Postprocess(1024, (768, 1024), (height, width))
    low_res = torch.full((1, 1, 256, 256), -4.0)
    low_res[0, 0, 40:90, 60:140] = 4.0
    low_res[0, 0, 60:70, 90:100] = -4.0  # a hole
    low_res[0, 0, 150:152, 200:203] = 4.0  # a fragment
    [both] = masks.wire_masks(low_res, torch.ones(1, 1), post, [{}], False, output=["rle", "polygons"])
    [only] = masks.wire_masks(low_res, torch.ones(1, 1), post, [{}], False, output=["polygons"])
    assert set(only) == {"polygons", "area", "bbox", "score"}
    assert set(both) == {"polygons", "area", "bbox", "score", "segmentation"}
    assert only["polygons"] == both["polygons"] and len(only["polygons"]) == 2
    mask = masks.decode(both["segmentation"]).astype(bool)
    assert (filled(mask) != mask).any()  # the hole survived the upsampling
    assert_rings_of(mask, only["polygons"])
    [plain] = masks.wire_masks(low_res, torch.ones(1, 1), post, [{}], False)
    assert "polygons" not in plain and plain["segmentation"] == both["segmentation"]


@pytest.mark.parametrize("output", [[], ["png"], ["rle", "mesh"]])
def test_wire_masks_refuses_an_unknown_output(output):
    with pytest.raises(ValueError, match="output"):
        masks.wire_masks(torch.zeros(1, 1, 256, 256), torch.zeros(1, 1), masks.Postprocess(1024, (8, 8), (8, 8)), [{}], False, output)
