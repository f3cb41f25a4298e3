"""How a claimed record ends, on the processor thread: its result written, or its failure.

`write` makes the masks within the output budget (server/output_budget.py),
keeps the low-res logits for `mask_input` (the mask cache), stores the result
in SAMOutput, marks the record processed, hands the result to its connection
in memory (server/wakeups.py) and then keeps the image's file (it was
processed). A result too large for its budget or for
the store fails its record at once: too large is final, never a retry.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from server import jobs, masks, output_budget, renders
from server.budget import PixelBudget
from server.clock import utcnow
from server.config import Settings
from server.errors import ClientError
from server.image_store import ImageStore
from server.mask_cache import MaskCache
from server.models.seam import Segmentation
from server.store import ItemTooLarge, Record, Store
from server.wakeups import JobEvents

log = logging.getLogger(__name__)


class ResultWriter:
    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        budget: PixelBudget,
        mask_cache: MaskCache,
        image_store: ImageStore,
        events: JobEvents,
    ):
        self.store = store
        self.settings = settings
        self.budget = budget
        self.mask_cache = mask_cache
        self.image_store = image_store
        self.events = events

    def write(self, record: Record, work: jobs.Work, result: Segmentation | None, model_type: str) -> None:
        """Keep the result within its budget, or fail its record: too large is final, never a retry.

        `result` is the decoder's, for the prompts that are not `render`s (None when all are).
        """
        try:
            spliced = renders.splice(result, work.prompts, self.mask_cache, work.image_sha256, work.scope)
        except ClientError as exc:  # mask_unknown: a render's mask is no longer kept
            self.fail(record["id"], exc.code, exc.message)
            return

        def made(meter: output_budget.OutputMeter) -> list[Any]:
            wire = masks.wire_masks(
                spliced.low_res, spliced.scores, spliced.postprocess.at_scale(work.mask_scale),
                work.echoes(), work.multimask, work.output, meter,
            )
            self.mask_cache.put(
                work.id, work.image_sha256, work.multimask, spliced.low_res.numpy(), spliced.scores.numpy(),
                spliced.postprocess, scope=work.scope,
            )
            return wire

        timings = {"encode_ms": spliced.encode_ms, "decode_ms": spliced.decode_ms}
        self.write_masks(record, work, made, model_type, timings, spliced.cached_embedding)

    def write_masks(
        self,
        record: Record,
        work: jobs.Work,
        made: Callable[[output_budget.OutputMeter], list[Any]],
        model_type: str,
        timings: dict[str, float],
        cached_embedding: bool,
    ) -> None:
        """The masks `made` within the output budget (they count each on the meter), stored; or the record failed."""
        meter = output_budget.OutputMeter.for_settings(self.settings, self.budget)
        try:
            started = time.perf_counter()
            wire = made(meter)
            rle_ms = (time.perf_counter() - started) * 1000
            self._store(record, work, wire, model_type, {**timings, "rle_ms": rle_ms}, cached_embedding, meter)
        except ClientError as exc:  # result_too_large, while its masks were made
            self.fail(record["id"], exc.code, exc.message)
        except ItemTooLarge:
            self.fail(record["id"], "result_too_large", output_budget.refused_by_store(meter.bytes).message)
        finally:
            meter.release()

    def _store(
        self,
        record: Record,
        work: jobs.Work,
        wire: list[Any],
        model_type: str,
        timings: dict[str, float],
        cached_embedding: bool,
        meter: output_budget.OutputMeter,
    ) -> None:
        """Store the result, mark the record processed, hand it to its connection; then keep the image's file."""
        job_id = work.id
        output = {
            "id": job_id,
            "masks": wire,
            "model": model_type,
            "createdAt": jobs.format_time(utcnow()),
            "cachedEmbedding": cached_embedding,
            "timings": {name: round(value, 2) for name, value in timings.items()},
        }
        self.store.put_output(output)
        processed = self.store.update(
            job_id, lambda r: jobs.mark_processed(r, now=utcnow(), result_bytes=meter.bytes), current=record
        )
        if processed is None:
            log.info("job %s: result stored, but the record was no longer processing", job_id)
            self.events.notify(job_id)
        else:
            self.events.deliver(job_id, processed, output, meter.give_memory())
        # After the connection is woken, off the result's way. Should its hold be released first, the file is
        # still pending for RELEASE_GRACE_SECONDS, and kept then all the same: its record was processed.
        self.image_store.promote(work.image_sha256)

    def fail(self, job_id: str, code: str, message: str) -> None:
        self.store.update(job_id, lambda r: jobs.fail(r, now=utcnow(), code=code, message=message))
        self.events.notify(job_id)
