"""The server-wide budget for decoded pixels (PIXEL_BUDGET_MB).

A small compressed image can decode to tens of megapixels: a 132 kB PNG is
40 Mpx, 120 MB as RGB and several times that while Pillow decodes it. Each
image reserves its bytes from this budget before any pixel is decoded,
keeps a smaller reservation while its pixels wait for the processor, and
gives it back once the encoder has run (or the request ended). A request
that finds the budget spent is refused with `queue_full`, rather than the
process running out of memory.
"""

from __future__ import annotations

import threading

from server.errors import ClientError

# Peak bytes per pixel while one image is decoded: Pillow's RGBX image (4),
# an EXIF rotation's or a mode conversion's copy (4) and the RGB array (3),
# rounded up. Measured: a flat 40 Mpx PNG (130 kB) peaks at about 10.
DECODE_BYTES_PER_PIXEL = 12
# Bytes per pixel held once decoded: the RGB array the processor reads.
HELD_BYTES_PER_PIXEL = 3


class PixelBudget:
    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        return self._used

    def reserve(self, nbytes: int, *, force: bool = False) -> "Reservation":
        """Take `nbytes`, or refuse with `queue_full`; `force` never refuses (the processor's own reads)."""
        with self._lock:
            if not force and self._used + nbytes > self.limit:
                raise ClientError(
                    "queue_full",
                    f"The server is holding as many decoded images as its memory budget allows "
                    f"(PIXEL_BUDGET_MB={self.limit // 2**20}); try again shortly.",
                )
            self._used += nbytes
        return Reservation(self, nbytes)

    def _give_back(self, nbytes: int) -> None:
        with self._lock:
            self._used -= nbytes


class Reservation:
    """Bytes held from a `PixelBudget`; `shrink` and `release` give them back (release is idempotent)."""

    def __init__(self, budget: PixelBudget, nbytes: int):
        self._budget = budget
        self.nbytes = nbytes

    def shrink(self, nbytes: int) -> None:
        if nbytes < self.nbytes:
            self._budget._give_back(self.nbytes - nbytes)
            self.nbytes = nbytes

    def release(self) -> None:
        self.shrink(0)
