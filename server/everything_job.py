"""One `everything` record on the processor thread: its embeddings, its progress, its memory, its result.

The whole image's embedding comes from the embedding cache when the image
is open there (no encoder pass), else from one pass that is then cached,
as for any request; each further crop (`crop_n_layers`) gets one pass of
its own, never cached. The work holds its working memory in the pixel
budget (PIXEL_BUDGET_MB): one batch of low-resolution logits and one
image-sized region with its two temporaries (server/everything.py). Its
progress goes to the record (server/progress.py); a record interrupted
meanwhile (superseded, or its client gone) stops the work there, and it
stays interrupted.
"""

from __future__ import annotations

import logging
import time
import numpy as np

from server import everything, everything_params, jobs
from server.budget import PixelBudget
from server.config import Settings
from server.models.embedding_cache import Embedding
from server.models.seam import SegmentationModel
from server.progress import Cancelled, ProgressReporter
from server.results import ResultWriter
from server.store import Record, Store
from server.wakeups import JobEvents

log = logging.getLogger(__name__)

# Grid points per decoder batch: a GPU gains from large ones; on the CPU a
# batch is decoded prompt by prompt anyway, and a small one reports sooner.
POINTS_PER_BATCH = {"cuda": 64, "cpu": 16}
REGION_BYTES_PER_PIXEL = 4 * 3 + 1  # float32 values, two float32 temporaries, the bool mask


class EverythingJob:
    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        events: JobEvents,
        budget: PixelBudget,
        results: ResultWriter,
        server_id: str,
    ):
        self.store = store
        self.settings = settings
        self.events = events
        self.budget = budget
        self.results = results
        self.server_id = server_id

    def run(self, model: SegmentationModel, record: Record, work: jobs.Work, pixels: np.ndarray | None) -> None:
        """Generate the masks and write the result. `pixels` is None only when the image's embedding is cached
        and there are no crops."""
        assert work.everything is not None
        params = everything_params.for_model(work.everything, model.model_type)
        assert params is not None
        sam2 = everything_params.family_of(model.model_type) == everything_params.SAM2
        batch = POINTS_PER_BATCH.get(model.device.type, POINTS_PER_BATCH["cuda"])
        generator = everything.Generator(model.decode, params, sam2=sam2, points_per_batch=batch)
        height, width = record["height"], record["width"]
        reporter = ProgressReporter(
            self.store, self.events, work.id, server_id=self.server_id, lease_seconds=self.settings.lease_seconds
        )
        total = params.total_points()
        timings = {"encode_ms": 0.0, "decode_ms": 0.0}
        cached = [False]

        def embedding_of(crop_box: list[int]) -> Embedding:
            started = time.perf_counter()
            if crop_box == [0, 0, width, height]:
                embedding, cached[0] = self._whole(model, work, pixels)
            else:
                assert pixels is not None
                x0, y0, x1, y1 = crop_box
                [embedding] = model.embed([np.ascontiguousarray(pixels[y0:y1, x0:x1])])
            timings["encode_ms"] += (time.perf_counter() - started) * 1000
            return embedding

        working = self.budget.reserve(_working_bytes(batch, height, width), force=True)
        started = time.perf_counter()
        try:
            found = generator.run((height, width), embedding_of, lambda done: reporter.report(done, total))
        except Cancelled:
            log.info("job %s: everything stopped, the record is no longer this processor's", work.id)
            return
        except Exception:
            log.exception("job %s: everything failed", work.id)
            self.results.fail(work.id, "processing_failed", "The model failed on this image; see the server log.")
            return
        finally:
            working.release()
        timings["decode_ms"] = (time.perf_counter() - started) * 1000 - timings["encode_ms"]
        self.results.write_masks(
            record, work, lambda meter: [everything.wire(item, work.output, meter) for item in found],
            model.model_type, timings, cached[0],
        )

    @staticmethod
    def _whole(model: SegmentationModel, work: jobs.Work, pixels: np.ndarray | None) -> tuple[Embedding, bool]:
        """The whole image's embedding from the cache, or from one encoder pass that is then cached."""
        key = (work.image_sha256, model.model_type, work.scope)
        embedding = model.cache.get(key)
        if embedding is not None:
            return embedding, True
        if pixels is None:
            raise LookupError(f"no pixels, and no cached embedding, for the image {work.image_sha256}")
        [embedding] = model.embed([pixels])
        model.cache.put(key, embedding, scope=work.scope)
        return embedding, False


def _working_bytes(points_per_batch: int, height: int, width: int) -> int:
    """What one everything request holds while it works: a batch of logits (3 candidates of 256²), one region."""
    return points_per_batch * 3 * 256 * 256 * 4 + height * width * REGION_BYTES_PER_PIXEL
