"""Label Studio's brush RLE: a mask as the `rle` list a `brushlabels` region carries.

Label Studio's format (thi-ng's rle-pack, as label-studio-sdk's
`converter/brush.py` `mask2rle` writes it), which is not COCO's: the mask's
pixels row by row, each pixel as 4 RGBA bytes of 0 or 255, in one bit
stream. A 32-bit count of bytes, the word size less 1 in 5 bits (7: 8-bit
words), the four run-length field sizes less 1 in 4 bits each (3, 4, 8 and
16 bits), then one token per run: `1`, the field's index in 2 bits, the run
length less 1 in that field, the byte. A run longer than 65,536 bytes is cut
into tokens of 65,536 first. Zero bits pad the stream to whole bytes, a full
zero byte when it already ends on one, as the SDK pads it. The output is the
SDK's byte for byte (tests/test_label_studio.py checks it against the SDK).

Written here, in numpy, rather than imported: label-studio-sdk pins
opencv-python-headless below 4.13, against CAP's 4.14 (requirements/runtime.txt),
and label-studio-brush-rle-rs took 0.9 s for a 3-megapixel mask where this
takes milliseconds (docs/label-studio.md, "The brush masks").
"""

from __future__ import annotations

import numpy as np

CHANNELS = 4  # RGBA: every pixel is 4 bytes
WORD_BITS = 8
FIELD_BITS = (3, 4, 8, 16)  # the run-length fields, the SDK's rle_sizes
LONGEST_TOKEN = 1 << FIELD_BITS[-1]  # 65,536 bytes


def mask_to_brush_rle(mask: np.ndarray) -> list[int]:
    """The `rle` of a 2-D mask (nonzero: on), as label-studio-sdk's `mask2rle(mask * 255)` gives it."""
    flat = np.ascontiguousarray(mask).ravel() != 0
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    run_bytes = np.diff(np.concatenate((starts, [flat.size]))).astype(np.int64) * CHANNELS
    run_values = np.where(flat[starts], 255, 0).astype(np.int64)
    lengths, values = _cut_long_runs(run_bytes, run_values)
    field = (lengths > 1 << FIELD_BITS[0]).astype(np.int64) + (lengths > 1 << FIELD_BITS[1]) + (lengths > 1 << FIELD_BITS[2])
    field_bits = np.array(FIELD_BITS, dtype=np.int64)[field]
    widths = 3 + field_bits + WORD_BITS
    codes = (1 << (widths - 1)) | (field << (widths - 3)) | ((lengths - 1) << WORD_BITS) | values
    header = [(flat.size * CHANNELS, 32), (WORD_BITS - 1, 5)] + [(bits - 1, 4) for bits in FIELD_BITS]
    codes = np.concatenate((np.array([code for code, _ in header], dtype=np.int64), codes))
    widths = np.concatenate((np.array([width for _, width in header], dtype=np.int64), widths))
    return np.packbits(_bit_stream(codes, widths)).tolist()


def _cut_long_runs(lengths: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each run as tokens of at most LONGEST_TOKEN bytes: the full ones first, the rest last."""
    tokens = (lengths + LONGEST_TOKEN - 1) // LONGEST_TOKEN
    cut = np.full(int(tokens.sum()), LONGEST_TOKEN, dtype=np.int64)
    cut[np.cumsum(tokens) - 1] = lengths - LONGEST_TOKEN * (tokens - 1)
    return cut, np.repeat(values, tokens)


def _bit_stream(codes: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """The codes' bits, most significant first, one after another, then the SDK's zero padding."""
    ends = np.cumsum(widths)
    total = int(ends[-1])
    bits = np.zeros(total + 8 - total % 8, dtype=np.uint8)
    offsets = ends - widths
    for bit in range(int(widths.max())):
        present = widths > bit
        shift = widths[present] - 1 - bit
        bits[offsets[present] + bit] = (codes[present] >> shift) & 1
    return bits
