"""The work and output budget of one request: checked at admission, kept while its masks are made.

**Work.** Turning SAM's low-resolution logits into image-sized masks costs
time and output in proportion to prompts × candidates (3 with multimask,
else 1) × the image's pixels: its *mask pixels*. Measured on a 2-core CPU, a
ragged mask on a 40 Mpx image took 1.4 s with polygons and gave 1.1 MB of
RLE and 6 MB of polygons (520,000 vertices). A request over MAX_MASK_PIXELS
is refused with `result_too_large` when it is admitted, before the model runs.

**Output.** As masks are made, an `OutputMeter` counts their polygon
vertices and their bytes as the result's JSON holds them. Polygons past
MAX_POLYGON_VERTICES (for the whole request) are left out, and each mask
that lost them says so (`polygons_omitted`). A result past MAX_RESULT_BYTES
stops there: its record fails with `result_too_large`, as does a result the
store refuses, the first time, never claimed and run again.

**Memory.** A result's Python objects and its JSON text take up to
RESULT_MEMORY_PER_BYTE bytes per byte of result. The meter holds that much
of the server's memory budget (server/budget.py) while the processor makes
and stores the result, and a connection reserves as much again while it
reads the result and sends it, waiting for other reservations to be given
back rather than refusing a result already made.
"""

from __future__ import annotations

import json
from typing import Any

from server.budget import PixelBudget, Reservation
from server.config import Settings
from server.errors import ClientError
from server.jobs import Record

MULTIMASK_CANDIDATES = 3  # SAM's multimask output: three candidate masks per prompt
# Bytes of memory per byte of result JSON, rounded up from measurements on
# results of 1 to 7 MB: while made, 1 (RLE) to 8 (polygons: lists of Python
# ints); while read back and sent (stored text, parsed objects, message text
# and its bytes), 4 (RLE) to 10.6 (polygons).
RESULT_MEMORY_PER_BYTE = 12
ASK_FOR_LESS = "Send fewer prompts, no multimask, or output without polygons."


def mask_pixels(prompts: int, multimask: bool, width: int, height: int) -> int:
    """A request's work: prompts × candidates × image pixels."""
    return prompts * (MULTIMASK_CANDIDATES if multimask else 1) * width * height


def check_work(prompts: int, multimask: bool, width: int, height: int, max_mask_pixels: int) -> None:
    """Refuse, before the model runs, a request whose masks would cover more than MAX_MASK_PIXELS."""
    work = mask_pixels(prompts, multimask, width, height)
    if work > max_mask_pixels:
        asked = f"{prompts} prompt{'' if prompts == 1 else 's'}"
        if multimask:
            asked += f" × {MULTIMASK_CANDIDATES} candidates (multimask)"
        raise ClientError(
            "result_too_large",
            f"{asked} on a {width}x{height} image make {work:,} mask pixels; the limit is {max_mask_pixels:,} "
            f"(MAX_MASK_PIXELS). Send fewer prompts, no multimask, or a smaller image.",
        )


def refused_by_store(nbytes: int) -> ClientError:
    """The error of a result the store cannot hold: final, never tried again."""
    return ClientError(
        "result_too_large",
        f"The result ({nbytes:,} bytes) is larger than the store accepts. {ASK_FOR_LESS}",
    )


def json_size(mask: dict[str, Any]) -> int:
    """The length of a mask entry's compact JSON, without writing its RLE string out again.

    COCO's compressed counts are ASCII from "0" to "o": JSON escapes only the
    backslash among them (as two characters).
    """
    segmentation = mask.get("segmentation")
    if segmentation is None:
        return len(json.dumps(mask, separators=(",", ":")))
    counts = segmentation["counts"]
    rest = {**mask, "segmentation": {**segmentation, "counts": ""}}
    return len(json.dumps(rest, separators=(",", ":"))) + len(counts) + counts.count("\\")


class OutputMeter:
    """Counts one result's polygon vertices and bytes as its masks are made, and holds their memory."""

    def __init__(self, *, max_bytes: int, max_vertices: int, budget: PixelBudget | None = None):
        self.max_bytes = max_bytes
        self.vertices_left = max_vertices
        self.bytes = 0
        self._memory: Reservation | None = None if budget is None else budget.reserve(0, force=True)

    @classmethod
    def for_settings(cls, settings: Settings, budget: PixelBudget) -> OutputMeter:
        return cls(max_bytes=settings.max_result_bytes, max_vertices=settings.max_polygon_vertices, budget=budget)

    def take_vertices(self, count: int) -> bool:
        """Whether a mask's polygons of `count` vertices still fit MAX_POLYGON_VERTICES; if so, they are counted."""
        if count > self.vertices_left:
            return False
        self.vertices_left -= count
        return True

    def count(self, mask: dict[str, Any]) -> None:
        """Count one mask entry of the result; `result_too_large` once the result is past MAX_RESULT_BYTES."""
        size = json_size(mask) + 1  # and its comma in the list
        self.bytes += size
        if self._memory is not None:
            self._memory.grow(size * RESULT_MEMORY_PER_BYTE)
        if self.bytes > self.max_bytes:
            raise ClientError(
                "result_too_large",
                f"The result grew past {self.max_bytes:,} bytes (MAX_RESULT_BYTES) and was not kept. {ASK_FOR_LESS}",
            )

    def release(self) -> None:
        """Give back the memory held for the result, once it is stored (or failed), unless given away."""
        if self._memory is not None:
            self._memory.release()

    def give_memory(self) -> Reservation | None:
        """The memory held for the result, for whoever holds the result next; `release` no longer gives it back."""
        memory, self._memory = self._memory, None
        return memory


def reserve_delivery(budget: PixelBudget, record: Record, *, wait: float) -> Reservation:
    """The memory a stored result takes while it is read back and sent (at most the whole budget).

    Sized by the record's `resultBytes` (none for a record processed before
    results were counted). Waits up to `wait` seconds for other reservations
    to be given back; past that, `queue_full`.
    """
    nbytes = (record.get("resultBytes") or 0) * RESULT_MEMORY_PER_BYTE
    return budget.reserve(min(nbytes, budget.limit), wait=wait)
