"""`server.mask_taps`: `edge_share`, the share of a mask's low-res bounding box on or next to its edge, and
`combine`, which applies the taps a chunk of rows at a time."""

import numpy as np
import pytest

from server.mask_taps import COMBINE_CHUNK_VALUES, Taps, combine, edge_share


def edge_share_pixel_by_pixel(positive: np.ndarray) -> float:
    """The definition, one pixel at a time: within the positive part's bounding box, a pixel whose
    neighbour to the left, right, above or below (inside the box) differs from it."""
    rows, cols = np.flatnonzero(positive.any(1)), np.flatnonzero(positive.any(0))
    box = positive[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = box.shape
    on_edge = 0
    for y in range(height):
        for x in range(width):
            neighbours = [(y + dy, x + dx) for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))]
            on_edge += any(0 <= ny < height and 0 <= nx < width and box[ny, nx] != box[y, x] for ny, nx in neighbours)
    return on_edge / box.size


@pytest.mark.parametrize("seed", range(6))
def test_edge_share_is_its_definition(seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((40, 48))
    if seed % 2:  # smooth: a few large blobs
        logits = np.cumsum(np.cumsum(logits, 0), 1)
    positive = logits > 0
    assert edge_share(positive) == pytest.approx(edge_share_pixel_by_pixel(positive), abs=1e-12)


def test_a_filled_rectangle_has_no_edge_inside_its_box_and_a_checkerboard_is_all_edge():
    positive = np.zeros((64, 64), dtype=bool)
    positive[10:30, 5:50] = True
    assert edge_share(positive) == 0.0
    checkerboard = (np.indices((16, 16)).sum(0) % 2).astype(bool)
    assert edge_share(checkerboard) == 1.0
    ring = np.zeros((9, 9), dtype=bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False  # a hole: the hole and its four neighbours are on the edge
    assert edge_share(ring) == pytest.approx(5 / 25)


@pytest.mark.parametrize("width", [1, 7, 480, COMBINE_CHUNK_VALUES + 3])
def test_combine_in_chunks_gives_the_float32_values_of_one_pass(width):
    """Bit for bit what one pass over the whole result gives (the sum in the order of the taps), at
    widths that make one row per chunk, many rows per chunk, and chunks that do not divide the rows."""
    rng = np.random.default_rng(width)
    lines = rng.standard_normal((256, width)).astype(np.float32)
    taps = Taps.along(256, 1024, 768, 333)
    one_pass = lines[taps.index[:, 0]] * taps.weight[:, 0, None]
    for k in range(1, 4):
        one_pass += lines[taps.index[:, k]] * taps.weight[:, k, None]
    combined = combine(lines, taps.index, taps.weight)
    assert combined.dtype == np.float32 and np.array_equal(combined, one_pass)
