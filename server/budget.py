"""The server-wide memory budget (PIXEL_BUDGET_MB): decoded pixels, and results on their way out.

A small compressed image can decode to tens of megapixels: a 132 kB PNG is
40 Mpx, 120 MB as RGB and several times that while Pillow decodes it. Each
image reserves its bytes from this budget before any pixel is decoded,
keeps a smaller reservation while its pixels wait for the processor, and
gives it back once the encoder has run (or the request ended). A request
that finds the budget spent is refused with `queue_full`, rather than the
process running out of memory.

Results draw on the same budget (server/output_budget.py): the processor's
reservation grows with each mask it makes, and a connection reserves its
result's share before reading it from the store, waiting for other
reservations to be given back rather than refusing a result already made.
"""

from __future__ import annotations

import threading
import time

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
        self._given_back = threading.Condition(self._lock)

    @property
    def used(self) -> int:
        return self._used

    def reserve(self, nbytes: int, *, force: bool = False, wait: float = 0.0) -> "Reservation":
        """Take `nbytes`, or refuse with `queue_full`.

        `force` never refuses (the processor's own work); `wait` is how many
        seconds to wait for other reservations to give bytes back before refusing.
        """
        self._take(nbytes, force=force, wait=wait)
        return Reservation(self, nbytes)

    def _take(self, nbytes: int, *, force: bool, wait: float = 0.0) -> None:
        deadline = time.monotonic() + wait
        with self._lock:
            while not force and self._used + nbytes > self.limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClientError(
                        "queue_full",
                        f"The server is holding as many decoded images and results as its memory budget "
                        f"allows (PIXEL_BUDGET_MB={self.limit // 2**20}); try again shortly.",
                    )
                self._given_back.wait(remaining)
            self._used += nbytes

    def _give_back(self, nbytes: int) -> None:
        with self._lock:
            self._used -= nbytes
            self._given_back.notify_all()


class Reservation:
    """Bytes held from a `PixelBudget`; `shrink` and `release` give them back (idempotent; a `with` releases)."""

    def __init__(self, budget: PixelBudget, nbytes: int):
        self._budget = budget
        self.nbytes = nbytes

    def grow(self, nbytes: int, *, force: bool = True) -> None:
        """Hold `nbytes` more: by default never refused, for memory the processor is already spending;
        with `force=False`, `queue_full` past the budget (a clip's frames, as they are decoded)."""
        self._budget._take(nbytes, force=force)
        self.nbytes += nbytes

    def shrink(self, nbytes: int) -> None:
        if nbytes < self.nbytes:
            self._budget._give_back(self.nbytes - nbytes)
            self.nbytes = nbytes

    def release(self) -> None:
        self.shrink(0)

    def __enter__(self) -> "Reservation":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
