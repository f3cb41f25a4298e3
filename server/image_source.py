"""Where a request's image comes from: its URL, a data: URL, or an image this server already has.

`from_url` downloads (through the SSRF guard) or reads a data: URL, and
decodes. `by_hash` serves `image_sha256`: an image whose embedding is cached
needs no pixels at all, so nothing is read, decoded or hashed; otherwise
its file in IMAGE_DIR is read again (found by its hash, no listing), or the
image is fetched again from the http(s) URL that first brought it (a record
in the shared store says which); otherwise the image is unknown
(`image_unknown`). Either way the
result says what the record keeps in `imageUrl`, and carries the bytes to
keep in IMAGE_DIR when they came from outside it (`server.image_store`).

Only the records of the request's own scope (its API token's,
server/tokens.py) are looked at, and the embedding cache is asked for that
scope's entry: another token's image is unknown, with the same message as
an image no one sent, and no message names the URL that brought it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import numpy as np

from server import data_urls, fetch, image_layout, images
from server.budget import PixelBudget, Reservation
from server.config import Settings
from server.errors import ClientError, image_too_large
from server.store import Store

log = logging.getLogger(__name__)

# How many of the newest records with the hash are looked at for a URL.
RECORDS_LOOKED_AT = 8


@dataclasses.dataclass
class ImageSource:
    sha256: str
    width: int
    height: int
    record_url: str  # what the record keeps as imageUrl
    pixels: np.ndarray | None = None  # None when the embedding is cached
    reservation: Reservation | None = None
    data: bytes | None = None  # read from outside IMAGE_DIR: to be kept there, unless it is already

    def release(self) -> None:
        if self.reservation is not None:
            self.reservation.release()


def read(
    image_url: str | None,
    image_sha256: str | None,
    scope: str | None,
    *,
    settings: Settings,
    store: Store,
    budget: PixelBudget,
    embedding_cached: Callable[[str, str | None], bool],
) -> ImageSource:
    """A request's image: by its URL (or data: URL), else by its hash within `scope`. The intake's `read_image`."""
    if image_url is not None:
        return from_url(image_url, settings, budget)
    assert image_sha256 is not None
    return by_hash(image_sha256, settings, store, budget, embedding_cached, scope)


def from_url(url: str, settings: Settings, budget: PixelBudget) -> ImageSource:
    """Download (or read a data: URL) and decode; a data: URL's record keeps a short description."""
    if data_urls.is_data_url(url):
        data = data_urls.parse_data_url(url, max_bytes=settings.max_image_bytes)
        image = images.decode(data, max_pixels=settings.max_image_pixels, formats=images.DATA_URL_FORMATS, budget=budget)
        record_url = data_urls.describe_data_url(url, len(data))
    else:
        return from_bytes(download(url, settings), url, settings, budget)
    return ImageSource(
        images.sha256_hex(data), image.width, image.height, record_url,
        pixels=image.pixels, reservation=image.reservation, data=data,
    )


def from_bytes(data: bytes, record_url: str, settings: Settings, budget: PixelBudget) -> ImageSource:
    """An image's file as it came (downloaded, or sent in an adapter's call); the record keeps `record_url`."""
    if len(data) > settings.max_image_bytes:
        raise image_too_large(settings.max_image_bytes)
    image = images.decode(data, max_pixels=settings.max_image_pixels, budget=budget)
    return ImageSource(
        images.sha256_hex(data), image.width, image.height, record_url,
        pixels=image.pixels, reservation=image.reservation, data=data,
    )


def from_trusted(url: str, trusted: fetch.Trusted, settings: Settings, budget: PixelBudget) -> ImageSource:
    """An image from the origin the operator named (an adapter's tool, e.g. LABEL_STUDIO_URL), with its headers."""
    return from_bytes(download(url, settings, trusted), url, settings, budget)


def by_hash(
    sha256: str,
    settings: Settings,
    store: Store,
    budget: PixelBudget,
    embedding_cached: Callable[[str, str | None], bool],
    scope: str | None,
) -> ImageSource:
    """The image that `scope`'s records with this hash name.

    `embedding_cached(sha256, scope)` says whether the model holds its embedding for that scope.
    """
    records = store.with_image(sha256, RECORDS_LOOKED_AT, scope)
    if not records:
        raise _unknown(sha256, "no request has brought it")
    width, height = records[0]["width"], records[0]["height"]
    url = next((r["imageUrl"] for r in records if fetch.is_fetchable(r["imageUrl"])), f"sha256:{sha256}")
    if embedding_cached(sha256, scope):
        return ImageSource(sha256, width, height, url)
    data = image_layout.read(settings.image_dir, sha256)
    if data is not None and images.sha256_hex(data) == sha256:
        image = images.decode(data, max_pixels=settings.max_image_pixels, budget=budget)
        return ImageSource(sha256, width, height, url, image.pixels, image.reservation)
    if not fetch.is_fetchable(url):
        raise _unknown(sha256, "its file is gone and it was sent inline, so it cannot be fetched again")
    try:
        data = download(url, settings)
    except ClientError as exc:
        log.info("image %s: fetching it again failed: %s", sha256[:12], exc.message)
        raise _unknown(sha256, "fetching it again from the URL that brought it failed") from None
    if images.sha256_hex(data) != sha256:
        raise _unknown(sha256, "the image at its URL has changed")
    image = images.decode(data, max_pixels=settings.max_image_pixels, budget=budget)
    return ImageSource(sha256, width, height, url, image.pixels, image.reservation, data=data)


def download(url: str, settings: Settings, trusted: fetch.Trusted | None = None) -> bytes:
    """`fetch.download` with the server's limits: MAX_IMAGE_BYTES, DOWNLOAD_TIMEOUT, ALLOW_PRIVATE_URLS, MAX_REDIRECTS."""
    return fetch.download(
        url,
        max_bytes=settings.max_image_bytes,
        timeout=settings.download_timeout,
        allow_private=settings.allow_private_urls,
        max_redirects=settings.max_redirects,
        trusted=trusted,
    )


def _unknown(sha256: str, why: str) -> ClientError:
    return ClientError(
        "image_unknown", f"This server does not have the image {sha256[:12]}…: {why}. Send it again with image_url."
    )
