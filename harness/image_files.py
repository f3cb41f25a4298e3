"""Deterministic test images, encoded in memory.

`rgb_pattern` and `gray16_pattern` give the exact pixels that the lossless
files below hold, so that tests can compare decoded pixels value for value.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112


def rgb_pattern(w: int, h: int) -> np.ndarray:
    """(h, w, 3) uint8: pixel (x, y) is (x % 256, y % 256, (x + y) % 256)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x % 256, y % 256, (x + y) % 256], axis=2).astype(np.uint8)


def gray_pattern(w: int, h: int) -> np.ndarray:
    """(h, w) uint8: pixel (x, y) is (3 * x + 5 * y) % 256."""
    y, x = np.mgrid[0:h, 0:w]
    return ((3 * x + 5 * y) % 256).astype(np.uint8)


def gray16_pattern(w: int, h: int) -> np.ndarray:
    """(h, w) uint16 spanning 0..65535; row 0 starts 0, 255, 256, 32768, 65535 (w >= 5)."""
    values = np.linspace(0, 65535, w * h).round().astype(np.uint16).reshape(h, w)
    values[0, :5] = [0, 255, 256, 32768, 65535]
    return values


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def jpeg_rgb(w: int, h: int) -> bytes:
    """`rgb_pattern(w, h)` as a JPEG (lossy, quality 95)."""
    return _encode(Image.fromarray(rgb_pattern(w, h)), "JPEG", quality=95)


def jpeg_photo(w: int, h: int, seed: int = 0) -> bytes:
    """A JPEG that compresses like a photograph: smooth colour waves under sensor-like noise.

    About 3.2 MB at 4000×3000 (quality 90), where `jpeg_rgb`'s flat pattern
    gives a fraction of that, so downloading and decoding cost what they cost
    on a camera's picture.
    """
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    pixels = np.empty((h, w, 3), np.uint8)
    for channel in range(3):
        fx, fy, gx, gy = rng.uniform(1, 4, 4)
        px, py, pz = rng.uniform(0, 2 * np.pi, 3)
        wave = 50 * np.sin(2 * np.pi * fx * x + px) * np.cos(2 * np.pi * fy * y + py)
        wave = wave + 40 * np.sin(2 * np.pi * (gx * x + gy * y) + pz) + 128
        noise = rng.normal(0, 8, (h, w)).astype(np.float32)
        pixels[..., channel] = np.clip(wave + noise, 0, 255)
    return _encode(Image.fromarray(pixels), "JPEG", quality=90)


def png_rgb(w: int, h: int) -> bytes:
    """`rgb_pattern(w, h)` as an RGB PNG."""
    return _encode(Image.fromarray(rgb_pattern(w, h)), "PNG")


def jpeg_exif_rotated(w: int, h: int) -> bytes:
    """A JPEG storing w x h pixels with EXIF Orientation 6 (rotate 90° clockwise).

    Displayed, it is h wide and w tall. Its top-left block, rows [0, w // 2)
    and columns [0, h // 2) of the displayed image, is white (255); the rest
    is dark gray (40). Stored, that block lies in the bottom-left corner.
    """
    shown = np.full((w, h, 3), 40, dtype=np.uint8)  # displayed: height w, width h
    shown[: w // 2, : h // 2] = 255
    stored = Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90)  # undo a 90° cw turn
    assert stored.size == (w, h)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return _encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def noise_png(w: int, h: int, seed: int = 0) -> bytes:
    """Random pixels: a model's masks on it are ragged, so their RLE is long."""
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return _encode(Image.fromarray(pixels), "PNG")


def png_rgba(w: int, h: int) -> bytes:
    """RGBA PNG: colour `rgb_pattern(w, h)`, alpha 0 in the left half, 128 in the right."""
    alpha = np.zeros((h, w, 1), dtype=np.uint8)
    alpha[:, w // 2 :] = 128
    return _encode(Image.fromarray(np.concatenate([rgb_pattern(w, h), alpha], axis=2)), "PNG")


def png_gray(w: int, h: int) -> bytes:
    """8-bit grayscale (mode L) PNG of `gray_pattern(w, h)`."""
    return _encode(Image.fromarray(gray_pattern(w, h)), "PNG")


def jpeg_cmyk(w: int, h: int) -> bytes:
    """CMYK JPEG: left half pure cyan (255, 0, 0, 0), right half pure black (0, 0, 0, 255)."""
    image = Image.new("CMYK", (w, h), (255, 0, 0, 0))
    image.paste((0, 0, 0, 255), (w // 2, 0, w, h))
    return _encode(image, "JPEG", quality=95)


def png_gray16(w: int, h: int) -> bytes:
    """16-bit grayscale PNG of `gray16_pattern(w, h)`."""
    return _encode(Image.fromarray(gray16_pattern(w, h)), "PNG")


def truncated_jpeg(w: int, h: int) -> bytes:
    """The first half of `jpeg_rgb(w, h)`: a valid header, missing scan data."""
    data = jpeg_rgb(w, h)
    return data[: len(data) // 2]


def html_page() -> bytes:
    """What a URL returns when it points at a web page rather than an image."""
    return (
        b"<!DOCTYPE html>\n<html><head><title>Cat</title></head>"
        b"<body><img src='cat.jpg'></body></html>\n"
    )


def png_bomb(side: int) -> bytes:
    """A valid 1-bit PNG declaring side x side black pixels, a few KiB on disk.

    Written row by row with zlib, so memory stays small whatever the side.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    row = bytes(1 + (side + 7) // 8)  # filter byte 0, then zeros
    compressor = zlib.compressobj(9)
    compressed = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", compressed)
        + chunk(b"IEND", b"")
    )
