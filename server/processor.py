"""The processor thread: the only code that touches the SAM model.

It loads and warms the model, then loops: claim the oldest claimable records
(up to BATCH_SIZE, server/claims.py), segment their images (one encoder pass for the batch,
none for cached embeddings), write each result (server/results.py) and
wake its waiter. An `everything` record runs after its batch's others
(server/everything_job.py); a video record goes to `VideoWork`. An insert
wakes it (`wake`); `POLL_INTERVAL` catches other processes' inserts.

Images arrive decoded (`hand_over`); one this replica lacks is fetched by the
`Refetcher`'s threads. A failed batch is tried one request at a time.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import numpy as np
import torch

from server import fetch, image_layout, images, jobs, prompts, renders
from server.budget import PixelBudget, Reservation
from server.claims import Claims
from server.config import Settings
from server.errors import ClientError
from server.everything_job import EverythingJob
from server.image_store import ImageStore
from server.mask_cache import MaskCache
from server.models.checkpoint_file import CheckpointError
from server.models.seam import ImageJob, SegmentationModel
from server.refetch import Refetcher
from server.results import ResultWriter
from server.store import Record, Store, StoreUnavailable
from server.video_work import VideoWork
from server.wakeups import JobEvents

log = logging.getLogger(__name__)

ERROR_BACKOFF_SECONDS = 1.0


class Processor:
    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        load_model: Callable[[], SegmentationModel],
        events: JobEvents,
        budget: PixelBudget,
        mask_cache: MaskCache,
        image_store: ImageStore,
        server_id: str,
        on_fatal: Callable[[Exception], None],
    ):
        self.store = store
        self.settings = settings
        self.events = events
        self.server_id = server_id
        self.wake = threading.Event()
        self.ready = threading.Event()
        self.model: SegmentationModel | None = None
        self._load_model = load_model
        self._on_fatal = on_fatal
        self._stopping = threading.Event()
        self._pixels: dict[str, tuple[np.ndarray | None, Reservation | None]] = {}
        self.budget = budget
        self.mask_cache = mask_cache
        self.fetcher = Refetcher(settings, store, image_store, on_ready=self._image_arrived)
        self.claims = Claims(store=store, settings=settings, events=events, server_id=server_id,
                             image_is_here=self._image_is_here, dropped=self.drop)
        self.results = ResultWriter(store=store, settings=settings, budget=budget, mask_cache=mask_cache,
                                    image_store=image_store, events=events)
        long_jobs = {"store": store, "settings": settings, "events": events, "budget": budget,
                     "results": self.results, "server_id": server_id}
        self.everything, self.video = EverythingJob(**long_jobs), VideoWork(**long_jobs)
        self._pixels_lock = threading.Lock()
        self.batch_size = 1  # BATCH_SIZE, resolved once the model's device is known
        self._thread = threading.Thread(target=self._run, name="processor", daemon=True)

    # --- used by other threads ---------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stopping.set()
        self.wake.set()
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def hand_over(self, job_id: str, pixels: np.ndarray | None, reservation: Reservation | None) -> None:
        """Give the processor the decoded image, so that it need not decode it again.

        Its share of the pixel budget goes back once the encoder has run, or on `drop`.
        """
        with self._pixels_lock:
            self._pixels[job_id] = (pixels, reservation)

    def first_in_line(self, inserted: Record) -> None:
        """A record just inserted here with none queued ahead of it: claimed next, without a claim query."""
        self.claims.first_in_line(inserted)

    def drop(self, job_id: str) -> None:
        """Forget a handed-over image whose record will not be processed here."""
        with self._pixels_lock:
            _, reservation = self._pixels.pop(job_id, (None, None))
        if reservation is not None:
            reservation.release()

    def has_embedding(self, sha256: str, scope: str | None) -> bool:
        """Whether the loaded model holds this image's embedding for this token's scope."""
        return self.ready.is_set() and self.model is not None and self.model.has_embedding(sha256, scope)

    def _image_arrived(self, job_id: str) -> None:
        """The refetcher saved a record's image, or failed the record: look again now."""
        self.events.notify(job_id)
        self.wake.set()

    # --- the thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.model = self._load_model()
        except Exception as exc:  # CheckpointError, or anything else the load raised
            if not isinstance(exc, CheckpointError):
                log.exception("loading the model failed")
            self._on_fatal(exc)
            return
        try:
            self.batch_size = self.settings.batch_size or self.model.preferred_batch_size
            warm_up_ms = self.model.warm_up()
        except Exception as exc:
            log.exception("the model's warm-up pass failed")
            self._on_fatal(exc)
            return
        self.ready.set()
        log.info("model ready: %s on %s (warm-up %.0f ms, batch size %d)",
                 self.model.model_type, self.model.device, warm_up_ms, self.batch_size)
        while not self._stopping.is_set():
            try:
                self.wake.clear()
                batch = self.claims.batch(self.batch_size)
                if batch:
                    self._process(batch)
                else:
                    self.wake.wait(self.settings.poll_interval)
            except StoreUnavailable as exc:
                log.error("processor: store unavailable, retrying: %s", exc)
                self._stopping.wait(ERROR_BACKOFF_SECONDS)
            except Exception:
                # The thread must not die: log, back off, and go on.
                log.exception("processor loop error")
                self._stopping.wait(ERROR_BACKOFF_SECONDS)

    def _image_is_here(self, record: Record) -> bool:
        """Whether this replica holds the record's image: handed over, or in IMAGE_DIR.

        An image it lacks is fetched again from the record's URL by the
        fetcher's thread, never this one, and the record is claimed once it
        is saved. An image sent inline (data: URL) to another replica cannot
        be fetched, nor can an image named only by its hash (`sha256:<hex>`):
        that record is left to the replica that has it (or, should that one
        be gone, to the sweep after JOB_TIMEOUT). An image whose embedding is
        cached here, for the record's token scope, needs no pixels at all.
        """
        with self._pixels_lock:
            if record["id"] in self._pixels or record.get("video"):  # received here (a video's: see _left_to_another)
                return True
        if image_layout.find(self.settings.image_dir, record["imageSha256"]) is not None:
            return True
        if self.model is not None and self.model.has_embedding(record["imageSha256"], record.get("scope")):
            return True
        if fetch.is_fetchable(record["imageUrl"]):
            self.fetcher.fetch(record)
        return False

    def _process(self, batch: list[Record]) -> None:
        for record in (video := [record for record in batch if record.get("video")]):
            self.video.process(record, self.model)
        batch = [record for record in batch if record not in video]
        ready: list[tuple[Record, jobs.Work, ImageJob]] = []
        everything: list[tuple[Record, jobs.Work, np.ndarray | None]] = []
        reservations: list[Reservation] = []
        for record in batch:
            work = jobs.Work.of(record)  # the one typed view of the record, to its result
            try:
                job_prompts = self._prompts_for(work)
            except ClientError as exc:  # a mask to refine that is no longer kept
                self.results.fail(work.id, exc.code, exc.message)
                continue
            if renders.renders_only(work.prompts):  # earlier masks again: neither the model nor the pixels
                self.drop(work.id)
                self.results.write(record, work, None, self.model.model_type)  # type: ignore[union-attr]
                continue
            try:
                pixels, reservation = self._pixels_for(work)
            except ClientError as exc:
                self.results.fail(work.id, "processing_failed", f"The image is no longer available: {exc.message}")
                continue
            if reservation is not None:
                reservations.append(reservation)
            if work.everything is not None:  # a long job of its own, after the batch's others
                everything.append((record, work, pixels))
                continue
            ready.append((record, work, ImageJob(pixels, job_prompts, work.multimask, work.image_sha256, work.scope)))
        try:
            if len(ready) > 1:
                self._segment_together(ready)
            elif ready:
                self._segment_alone(*ready[0])
            for record, work, pixels in everything:
                self.everything.run(self.model, record, work, pixels)  # type: ignore[arg-type]
        finally:
            for reservation in reservations:
                reservation.release()

    def _segment_together(self, ready: list[tuple[Record, jobs.Work, ImageJob]]) -> None:
        """One encoder pass for the batch; if it fails, each request alone, so that only a guilty one fails."""
        assert self.model is not None
        try:
            results = self.model.segment_batch([job for _, _, job in ready])
        except Exception as exc:
            log.warning("a batch of %d failed (%s); trying each request alone", len(ready), exc)
            _empty_cuda_cache()
            for record, work, job in ready:
                self._segment_alone(record, work, job)
            return
        for (record, work, _), result in zip(ready, results):
            self.results.write(record, work, result, self.model.model_type)

    def _segment_alone(self, record: Record, work: jobs.Work, job: ImageJob) -> None:
        assert self.model is not None
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                [result] = self.model.segment_batch([job])
                break
            except Exception as exc:
                log.warning("job %s: model failed on attempt %d: %s", record["id"], attempt, exc)
                _empty_cuda_cache()
        else:
            self.results.fail(work.id, "processing_failed", "The model failed on this image; see the server log.")
            return
        self.results.write(record, work, result, self.model.model_type)

    def _prompts_for(self, work: jobs.Work) -> list[prompts.Prompt]:
        """The record's prompts for the model, with each `mask_input` resolved to the logits it names."""
        if work.prompts is None:
            return prompts.from_boxes(list(work.boxes))
        made = []
        for index, wire in enumerate(work.prompts):
            if renders.is_render(wire):
                continue  # its mask is kept: `renders.splice` puts it in the result
            ref = wire.get("mask_input")
            logits = None if ref is None else self.mask_cache.logits(f"prompts[{index}]", ref, work.image_sha256, scope=work.scope)
            made.append(prompts.from_dict(wire, logits))
        return made

    def _pixels_for(self, work: jobs.Work) -> tuple[np.ndarray | None, Reservation | None]:
        """The decoded image and its share of the pixel budget: handed over in memory, else read from IMAGE_DIR.

        No pixels (None) when the image's embedding is cached: the encoder will not run.
        """
        with self._pixels_lock:
            handed_over = self._pixels.pop(work.id, None)
        if handed_over is not None and handed_over[0] is not None:
            return handed_over
        assert self.model is not None
        crops = (work.everything or {}).get("crop_n_layers", 0) > 0  # an everything's crops need the pixels
        if self.model.has_embedding(work.image_sha256, work.scope) and not crops:
            return None, None
        data = image_layout.read(self.settings.image_dir, work.image_sha256)
        if data is None:
            raise ClientError("image_download_failed", "The image file was deleted before it was processed.")
        if images.sha256_hex(data) != work.image_sha256:
            raise ClientError("unsupported_image", "The image changed since the request was made.")
        # Forced: the record is claimed, and this thread must not be refused its own work.
        image = images.decode(data, max_pixels=self.settings.max_image_pixels, budget=self.budget, force=True)
        return image.pixels, image.reservation


def _empty_cuda_cache() -> None:
    """After a failure (CUDA out of memory, say), give the cached blocks back before trying again."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
