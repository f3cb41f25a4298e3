"""Where a request's image comes from: its URL, a data: URL, or an image this server already has.

`from_url` downloads (through the SSRF guard) or reads a data: URL, and
decodes. `by_hash` serves `image_sha256`: an image whose embedding is cached
needs no pixels at all, so nothing is read, decoded or hashed; otherwise a
saved file with that hash is read again, or the image is fetched again from
the http(s) URL that first brought it (a record in the shared store says
which); otherwise the image is unknown (`image_unknown`). Either way the
result says what the record keeps in `imageUrl` and how its file is kept.

Only the records of the request's own scope (its API token's,
server/tokens.py) are looked at, and the embedding cache is asked for that
scope's entry: another token's image is unknown, with the same message as
an image no one sent, and no message names the URL that brought it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from server import fetch, images
from server.budget import PixelBudget, Reservation
from server.config import Settings
from server.errors import ClientError
from server.store import Store

log = logging.getLogger(__name__)

# How many of the newest records with the hash are looked at for a saved file or a URL.
RECORDS_LOOKED_AT = 8


@dataclasses.dataclass
class ImageSource:
    sha256: str
    width: int
    height: int
    record_url: str  # what the record keeps as imageUrl
    pixels: np.ndarray | None = None  # None when the embedding is cached
    reservation: Reservation | None = None
    data: bytes | None = None  # bytes to save for the record, with their extension
    extension: str = ""
    existing: Path | None = None  # a saved file with these bytes: linked for the record instead

    def keep(self, image_dir: Path, job_id: str) -> Path | None:
        """Save (or link) the image as the record's file, when there is one to keep."""
        if self.data is not None:
            return images.save(self.data, image_dir, job_id, self.extension)
        if self.existing is not None:
            return images.link(self.existing, image_dir, job_id)
        return None

    def release(self) -> None:
        if self.reservation is not None:
            self.reservation.release()


def from_url(url: str, settings: Settings, budget: PixelBudget) -> ImageSource:
    """Download (or read a data: URL) and decode; a data: URL's record keeps a short description."""
    if images.is_data_url(url):
        data = images.parse_data_url(url, max_bytes=settings.max_image_bytes)
        image = images.decode(data, max_pixels=settings.max_image_pixels, formats=images.DATA_URL_FORMATS, budget=budget)
        record_url = images.describe_data_url(url, len(data))
    else:
        data = download(url, settings)
        image = images.decode(data, max_pixels=settings.max_image_pixels, budget=budget)
        record_url = url
    return ImageSource(
        images.sha256_hex(data), image.width, image.height, record_url,
        pixels=image.pixels, reservation=image.reservation, data=data, extension=image.extension,
    )


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
    saved = [path for r in records if (path := images.find_saved(settings.image_dir, r["id"])) is not None]
    if embedding_cached(sha256, scope):
        return ImageSource(sha256, width, height, url, existing=saved[0] if saved else None)
    for path in saved:
        data = path.read_bytes()
        if images.sha256_hex(data) == sha256:
            image = images.decode(data, max_pixels=settings.max_image_pixels, budget=budget)
            return ImageSource(sha256, width, height, url, image.pixels, image.reservation, existing=path)
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
    return ImageSource(
        sha256, width, height, url, image.pixels, image.reservation, data=data, extension=image.extension
    )


def download(url: str, settings: Settings) -> bytes:
    """`fetch.download` with the server's limits: MAX_IMAGE_BYTES, DOWNLOAD_TIMEOUT, ALLOW_PRIVATE_URLS, MAX_REDIRECTS."""
    return fetch.download(
        url,
        max_bytes=settings.max_image_bytes,
        timeout=settings.download_timeout,
        allow_private=settings.allow_private_urls,
        max_redirects=settings.max_redirects,
    )


def _unknown(sha256: str, why: str) -> ClientError:
    return ClientError(
        "image_unknown", f"This server does not have the image {sha256[:12]}…: {why}. Send it again with image_url."
    )
