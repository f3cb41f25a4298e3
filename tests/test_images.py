"""server.images: decode and data: URLs (downloads are tests/test_fetch.py; files, tests/test_image_store.py)."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from harness import image_files as files
from server import data_urls, images
from server.budget import PixelBudget
from server.errors import ClientError
from server.images import decode, sha256_hex

MIB = 1024 * 1024


def error_of(call, *args, **kwargs) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call(*args, **kwargs)
    return caught.value


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def gray_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[:, :, np.newaxis], 3, axis=2)


# --- decode -----------------------------------------------------------------


def test_png_rgb_decodes_exactly():
    image = decode(files.png_rgb(300, 200), max_pixels=10**6)
    assert (image.width, image.height) == (300, 200)
    assert image.pixels.dtype == np.uint8 and image.pixels.flags.c_contiguous
    np.testing.assert_array_equal(image.pixels, files.rgb_pattern(300, 200))


def test_jpeg_rgb_decodes_close_to_the_source():
    image = decode(files.jpeg_rgb(64, 48), max_pixels=10**6)
    assert image.pixels.shape == (48, 64, 3)
    difference = np.abs(image.pixels.astype(int) - files.rgb_pattern(64, 48).astype(int))
    assert difference.mean() < 3


def test_exif_orientation_is_applied():
    image = decode(files.jpeg_exif_rotated(80, 40), max_pixels=10**6)
    assert (image.width, image.height) == (40, 80)  # displayed: h wide, w tall
    pixels = image.pixels.astype(int)
    assert pixels[5:35, 2:18].min() > 230  # the white block, top-left as displayed
    assert pixels[45:, :].max() < 70  # bottom half is dark
    assert pixels[:, 22:].max() < 70  # right half is dark


def test_rgba_drops_alpha_and_keeps_colour():
    image = decode(files.png_rgba(50, 30), max_pixels=10**6)
    np.testing.assert_array_equal(image.pixels, files.rgb_pattern(50, 30))


def test_grayscale_becomes_three_equal_channels():
    image = decode(files.png_gray(40, 30), max_pixels=10**6)
    np.testing.assert_array_equal(image.pixels, gray_rgb(files.gray_pattern(40, 30)))


def test_cmyk_jpeg_becomes_rgb():
    image = decode(files.jpeg_cmyk(32, 16), max_pixels=10**6)
    cyan, black = image.pixels[8, 4].astype(int), image.pixels[8, 28].astype(int)
    assert np.abs(cyan - [0, 255, 255]).max() <= 3
    assert black.max() <= 3


def test_sixteen_bit_png_is_scaled_not_clipped():
    image = decode(files.png_gray16(64, 8), max_pixels=10**6)
    assert image.pixels[0, :5, 0].tolist() == [0, 0, 1, 128, 255]
    expected = (files.gray16_pattern(64, 8) >> 8).astype(np.uint8)
    np.testing.assert_array_equal(image.pixels, gray_rgb(expected))


def test_sixteen_bit_big_endian_tiff_is_scaled():
    values = np.array([[0, 256, 32768, 65535]], dtype=">u2")
    image = decode(encode(Image.fromarray(values), "TIFF"), max_pixels=100)
    assert image.pixels[0, :, 1].tolist() == [0, 1, 128, 255]


def test_32_bit_integer_mode_is_scaled_as_sixteen_bit():
    values = np.array([[-5, 0, 32768, 65535, 70000]], dtype=np.int32)
    image = decode(encode(Image.fromarray(values), "TIFF"), max_pixels=100)
    assert image.pixels[0, :, 2].tolist() == [0, 0, 128, 255, 255]


def test_float_mode_in_unit_range_is_scaled_to_255():
    values = np.array([[0.25, 0.5, 0.75]], dtype=np.float32)
    image = decode(encode(Image.fromarray(values), "TIFF"), max_pixels=100)
    assert image.pixels[0, :, 0].tolist() == [64, 128, 191]


def test_float_mode_not_a_number_is_black():
    values = np.array([[np.nan, 0.5, 1.0]], dtype=np.float32)
    image = decode(encode(Image.fromarray(values), "TIFF"), max_pixels=100)
    assert image.pixels[0, :, 0].tolist() == [0, 128, 255]


def test_float_mode_beyond_unit_range_is_stretched():
    values = np.array([[0.0, 1000.0, 2000.0]], dtype=np.float32)
    image = decode(encode(Image.fromarray(values), "TIFF"), max_pixels=100)
    assert image.pixels[0, :, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize("transparency", [None, 0])
def test_palette_uses_palette_colours(transparency):
    palette = Image.new("P", (3, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50, 0, 255, 0])
    palette.putdata([0, 1, 2])
    options = {} if transparency is None else {"transparency": transparency}
    image = decode(encode(palette, "PNG", **options), max_pixels=100)
    assert image.pixels[0].tolist() == [[10, 20, 30], [200, 100, 50], [0, 255, 0]]


def test_gray_with_alpha_drops_alpha():
    values = np.array([[[7, 0], [200, 255]]], dtype=np.uint8)
    image = decode(encode(Image.fromarray(values, mode="LA"), "PNG"), max_pixels=100)
    assert image.pixels[0].tolist() == [[7, 7, 7], [200, 200, 200]]


def test_one_bit_image_is_black_and_white():
    bilevel = Image.new("1", (2, 1))
    bilevel.putpixel((1, 0), 1)
    image = decode(encode(bilevel, "PNG"), max_pixels=100)
    assert image.pixels[0].tolist() == [[0, 0, 0], [255, 255, 255]]


def test_animated_gif_gives_its_first_frame():
    red, blue = Image.new("RGB", (4, 4), (255, 0, 0)), Image.new("RGB", (4, 4), (0, 0, 255))
    gif = encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    image = decode(gif, max_pixels=100)
    assert image.pixels[2, 2].tolist() == [255, 0, 0]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_each_allowed_format_decodes(fmt):
    image = decode(encode(Image.new("RGB", (6, 4), (0, 0, 255)), fmt), max_pixels=100)
    assert (image.width, image.height) == (6, 4)
    assert np.abs(image.pixels[1, 1].astype(int) - [0, 0, 255]).max() <= 2  # JPEG, WebP: lossy


def test_first_decode_in_a_fresh_process_reads_every_format():
    # Pillow registers WebP and TIFF lazily; decode must not depend on an earlier caller.
    script = (
        "import sys; from server.images import decode; "
        "print(decode(sys.stdin.buffer.read(), max_pixels=100).pixels.shape)"
    )
    webp = encode(Image.new("RGB", (4, 4)), "WEBP")
    done = subprocess.run(
        [sys.executable, "-c", script], input=webp, capture_output=True, check=True
    )
    assert done.stdout.decode().strip() == "(4, 4, 3)"


@pytest.mark.parametrize(
    "data",
    [
        files.truncated_jpeg(64, 64),
        files.html_page(),
        b"",
        encode(Image.new("RGB", (4, 4)), "PPM"),
    ],
    ids=["truncated", "html", "empty", "ppm-not-allowed"],
)
def test_undecodable_data_is_unsupported(data):
    error = error_of(decode, data, max_pixels=10**6)
    assert error.code == "unsupported_image"
    assert error.message.endswith(".") and "Traceback" not in error.message


def test_pixel_limit_is_checked_before_decoding():
    error = error_of(decode, files.png_bomb(3000), max_pixels=10**6)
    assert error.code == "image_too_large"
    assert "3000x3000" in error.message


def test_bomb_beyond_pillows_own_limit_is_too_large():
    error = error_of(decode, files.png_bomb(20000), max_pixels=40_000_000)
    assert error.code == "image_too_large"


def test_image_exactly_at_the_pixel_limit_is_accepted():
    assert decode(files.png_rgb(100, 10), max_pixels=1000).pixels.shape == (10, 100, 3)
    assert error_of(decode, files.png_rgb(100, 10), max_pixels=999).code == "image_too_large"


def padded_png(png: bytes, total: int) -> bytes:
    """`png` grown to `total` bytes by a private ancillary chunk of junk after its header, which decoders skip."""
    body = b"j" * (total - len(png) - 12)  # a chunk is its body and 12 bytes: length, type, CRC
    chunk = len(body).to_bytes(4, "big") + b"juNk" + body + zlib.crc32(b"juNk" + body).to_bytes(4, "big")
    return png[:33] + chunk + png[33:]  # after the 8-byte signature and the 25-byte IHDR chunk


def test_a_file_far_larger_than_its_pixels_need_is_too_large_before_any_pixel_is_decoded():
    largest = 6 * 4 * 8 + 2**20  # 8 bytes a pixel (16-bit RGBA, raw) and 1 MiB of metadata
    budget = PixelBudget(10**6)
    assert decode(padded_png(files.png_rgb(6, 4), largest), max_pixels=100).pixels.shape == (4, 6, 3)
    error = error_of(decode, padded_png(files.png_rgb(6, 4), largest + 1), max_pixels=100, budget=budget)
    assert error.code == "image_too_large" and "6x4 pixels" in error.message and budget.used == 0


def test_decode_reads_only_the_formats_asked_for():
    gif = encode(Image.new("RGB", (4, 4)), "GIF")
    assert decode(gif, max_pixels=100).pixels.shape == (4, 4, 3)
    error = error_of(decode, gif, max_pixels=100, formats=images.DATA_URL_FORMATS)
    assert error.code == "unsupported_image" and "JPEG, PNG or WebP" in error.message


# --- data: URLs -------------------------------------------------------------


def as_data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "media_type, data",
    [
        ("image/png", files.png_rgb(20, 10)),
        ("image/jpeg", files.jpeg_rgb(20, 10)),
        ("IMAGE/WEBP", encode(Image.new("RGB", (20, 10)), "WEBP")),
    ],
)
def test_a_data_url_gives_back_its_bytes(media_type, data):
    assert data_urls.parse_data_url(as_data_url(data, media_type), max_bytes=MIB) == data
    assert data_urls.is_data_url(as_data_url(data, media_type).replace("data:", "DATA:"))


@pytest.mark.parametrize(
    "url, code, words",
    [
        ("data:image/png;base64,iVBOR!!!", "invalid_request", "malformed"),
        ("data:image/png;base64,iVBORw0KGgo", "invalid_request", "malformed"),  # padding missing
        ("data:image/png;base64,iVBO Rw0K", "invalid_request", "malformed"),
        ("data:image/png;base64,iVBOé===", "invalid_request", "malformed"),  # not ASCII
        ("data:image/png;base64,\ud800AAA", "invalid_request", "malformed"),  # a lone surrogate, as JSON allows
        ("data:image/\ud800;base64,AAAA", "unsupported_image", "image/\\ud800"),
        ("data:image/png,rawbytes", "invalid_request", "base64"),
        ("data:image/png;base64", "invalid_request", "base64"),
        ("data:text/plain;base64,aGVsbG8=", "unsupported_image", "text/plain"),
        ("data:image/gif;base64,R0lGODlh", "unsupported_image", "image/gif"),
        ("data:;base64,aGVsbG8=", "unsupported_image", "image/png, image/jpeg or image/webp"),
        ("data:image/png;base64,", "unsupported_image", "no image data"),
    ],
)
def test_a_malformed_data_url_gets_a_typed_error(url, code, words):
    error = error_of(data_urls.parse_data_url, url, max_bytes=MIB)
    assert (error.code, words in error.message) == (code, True), error.message


def test_the_data_url_limit_counts_decoded_bytes():
    data = files.png_rgb(30, 30)
    assert data_urls.parse_data_url(as_data_url(data), max_bytes=len(data)) == data
    error = error_of(data_urls.parse_data_url, as_data_url(data), max_bytes=len(data) - 1)
    assert error.code == "image_too_large" and f"{len(data) - 1:,}" in error.message


def test_a_huge_data_url_is_refused_before_decoding():
    error = error_of(data_urls.parse_data_url, "data:image/png;base64," + "!" * 10_000, max_bytes=1000)
    assert error.code == "image_too_large"  # not "malformed": the size is known without decoding


@pytest.mark.parametrize("max_bytes", [1, 2, 3, 4, 1000, 20 * MIB])
def test_data_url_max_chars_fits_the_largest_data_url(max_bytes):
    longest = as_data_url(b"x" * max_bytes, "image/webp")
    assert data_urls.data_url_max_chars(max_bytes) == len(longest)


def test_a_record_keeps_a_short_description_of_a_data_url():
    url = as_data_url(files.png_rgb(100, 100))
    assert data_urls.describe_data_url(url, 1234) == "data:image/png;base64,... (1234 bytes, sent inline)"


# --- files ------------------------------------------------------------------


def test_sha256_hex():
    assert sha256_hex(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
