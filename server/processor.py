"""The processor thread: the only code that touches the SAM model.

It loads the model and warms it up, then loops: claim the oldest claimable
records (up to BATCH_SIZE), segment their images (one encoder pass for the
batch, none for images whose embedding is cached), store each result in
SAMOutput, mark each record processed, and wake the connection waiting for
it. An insert wakes it at once through `wake`, and it claims again straight
after a batch, so it never sleeps while records wait; the `POLL_INTERVAL`
timeout only catches records inserted by other processes sharing the
database. Between batches it sweeps records stuck past `JOB_TIMEOUT` and
images past `IMAGE_RETENTION_HOURS`.

Images arrive decoded from the connection threads (`hand_over`), so this
thread only computes. Writing a result (RLE and two store writes) stays on
this thread: it costs a few milliseconds against seconds of encoder time
(see bench/README.md), and a second writer thread would compete with the
encoder for the same cores.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Callable

import numpy as np
import torch

from server import images, jobs, masks, prompts
from server.config import Settings
from server.errors import ClientError
from server.sam_model import CheckpointError, ImageJob, SamModel, Segmentation
from server.store import Conflict, Record, Store, StoreUnavailable

log = logging.getLogger(__name__)

CLAIM_CANDIDATES = 8
ERROR_BACKOFF_SECONDS = 1.0


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class JobEvents:
    """Per-record wake-ups from the processor to the connection waiting on it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, threading.Event] = {}

    def subscribe(self, job_id: str) -> threading.Event:
        with self._lock:
            return self._events.setdefault(job_id, threading.Event())

    def unsubscribe(self, job_id: str) -> None:
        with self._lock:
            self._events.pop(job_id, None)

    def notify(self, job_id: str) -> None:
        with self._lock:
            event = self._events.get(job_id)
        if event is not None:
            event.set()


class Processor:
    def __init__(
        self,
        *,
        store: Store,
        settings: Settings,
        load_model: Callable[[], SamModel],
        events: JobEvents,
        server_id: str,
        on_fatal: Callable[[Exception], None],
    ):
        self.store = store
        self.settings = settings
        self.events = events
        self.server_id = server_id
        self.wake = threading.Event()
        self.ready = threading.Event()
        self.model: SamModel | None = None
        self._load_model = load_model
        self._on_fatal = on_fatal
        self._stopping = threading.Event()
        self._pixels: dict[str, np.ndarray] = {}
        self._pixels_lock = threading.Lock()
        self._next_sweep = 0.0
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

    def hand_over(self, job_id: str, pixels: np.ndarray) -> None:
        """Give the processor the decoded image, so that it need not decode it again."""
        with self._pixels_lock:
            self._pixels[job_id] = pixels

    def drop(self, job_id: str) -> None:
        """Forget a handed-over image whose record will not be processed here."""
        with self._pixels_lock:
            self._pixels.pop(job_id, None)

    # --- the thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.model = self._load_model()
        except Exception as exc:  # CheckpointError, or anything else the load raised
            if not isinstance(exc, CheckpointError):
                log.exception("loading the model failed")
            self._on_fatal(exc)
            return
        self.batch_size = self.settings.batch_size or (4 if torch.device(self.model.device).type == "cuda" else 1)
        try:
            warm_up_ms = self.model.warm_up()
        except Exception as exc:
            log.exception("the model's warm-up pass failed")
            self._on_fatal(exc)
            return
        self.ready.set()
        log.info(
            "model ready: %s on %s (warm-up %.0f ms, batch size %d)",
            self.model.model_type, self.model.device, warm_up_ms, self.batch_size,
        )
        while not self._stopping.is_set():
            try:
                self.wake.clear()
                self._sweep_if_due()
                batch = self._claim_batch()
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

    def _claim_batch(self) -> list[Record]:
        """Claim up to `batch_size` of the oldest claimable records."""
        batch: list[Record] = []
        for candidate in self.store.claimable(utcnow(), max(CLAIM_CANDIDATES, 2 * self.batch_size)):
            if len(batch) == self.batch_size:
                break
            if self._image_is_elsewhere(candidate):
                continue
            try:
                claimed = jobs.claim(
                    candidate,
                    now=utcnow(),  # not the time of the query: the record may be younger than that
                    server_id=self.server_id,
                    lease_seconds=self.settings.lease_seconds,
                    max_attempts=self.settings.max_attempts,
                )
                stored = self.store.replace(claimed, etag=candidate["_etag"])
            except (jobs.TransitionRefused, Conflict):
                continue  # another processor, or an interruption, got there first
            self.events.notify(stored["id"])
            if stored["status"] == jobs.PROCESSING:
                batch.append(stored)
                continue
            log.warning("job %s failed: %s", stored["id"], stored["error"]["message"])
            self.drop(stored["id"])
        return batch

    def _image_is_elsewhere(self, record: Record) -> bool:
        """An image sent inline (data: URL) that another replica received and this one cannot read.

        Its record is left for the replica that has the image (or, should that
        one be gone, for the sweep to interrupt after JOB_TIMEOUT).
        """
        if not images.is_data_url(record["imageUrl"]):
            return False
        with self._pixels_lock:
            if record["id"] in self._pixels:  # received here: no need to scan IMAGE_DIR
                return False
        return images.find_saved(self.settings.image_dir, record["id"]) is None

    def _process(self, batch: list[Record]) -> None:
        ready: list[tuple[Record, ImageJob]] = []
        for record in batch:
            try:
                pixels = self._pixels_for(record)
            except ClientError as exc:
                self._fail(record["id"], "processing_failed", f"The image is no longer available: {exc.message}")
                continue
            job = ImageJob(pixels, prompts.from_boxes(record["boxes"]), record["multimask"], record["imageSha256"])
            ready.append((record, job))
        if not ready:
            return

        assert self.model is not None
        ids = ", ".join(record["id"] for record, _ in ready)
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                results = self.model.segment_batch([job for _, job in ready])
                break
            except Exception as exc:
                log.warning("job %s: model failed on attempt %d: %s", ids, attempt, exc)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        else:
            for record, _ in ready:
                self._fail(record["id"], "processing_failed", "The model failed on this image; see the server log.")
            return
        for (record, _), result in zip(ready, results):
            self._finish(record, result)

    def _finish(self, record: Record, result: Segmentation) -> None:
        """Store the result, mark the record processed, wake its connection."""
        assert self.model is not None
        job_id = record["id"]
        started = time.perf_counter()
        wire = masks.wire_masks(
            result.low_res, result.scores, result.postprocess, [{"box": box} for box in record["boxes"]], record["multimask"]
        )
        rle_ms = (time.perf_counter() - started) * 1000
        self.store.put_output(
            {
                "id": job_id,
                "masks": wire,
                "model": self.model.model_type,
                "createdAt": jobs.format_time(utcnow()),
                "cachedEmbedding": result.cached_embedding,
                "timings": {
                    "encode_ms": round(result.encode_ms, 2),
                    "decode_ms": round(result.decode_ms, 2),
                    "rle_ms": round(rle_ms, 2),
                },
            }
        )
        processed = self.store.update(job_id, lambda r: jobs.mark_processed(r, now=utcnow()), current=record)
        if processed is None:
            log.info("job %s: result stored, but the record was no longer processing", job_id)
        self.events.notify(job_id)

    def _pixels_for(self, record: Record) -> np.ndarray:
        """The decoded image: handed over in memory, else from disk, else downloaded again."""
        with self._pixels_lock:
            pixels = self._pixels.pop(record["id"], None)
        if pixels is not None:
            return pixels
        settings = self.settings
        path = images.find_saved(settings.image_dir, record["id"])
        if path is not None:
            data = path.read_bytes()
        else:
            data = images.download(
                record["imageUrl"],
                max_bytes=settings.max_image_bytes,
                timeout=settings.download_timeout,
                allow_private=settings.allow_private_urls,
                max_redirects=settings.max_redirects,
            )
        if images.sha256_hex(data) != record["imageSha256"]:
            raise ClientError("unsupported_image", "The image changed since the request was made.")
        return images.decode(data, max_pixels=settings.max_image_pixels).pixels

    def _fail(self, job_id: str, code: str, message: str) -> None:
        self.store.update(job_id, lambda r: jobs.fail(r, now=utcnow(), code=code, message=message))
        self.events.notify(job_id)

    def _sweep_if_due(self) -> None:
        """End records stuck past JOB_TIMEOUT; delete images past their retention."""
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + min(30.0, self.settings.job_timeout / 2)
        now = utcnow()
        for record in self.store.unfinished_before(now - dt.timedelta(seconds=self.settings.job_timeout)):
            if self.store.update(record["id"], lambda r: jobs.interrupt(r, now=utcnow())) is not None:
                log.warning("job %s: interrupted by the sweep after JOB_TIMEOUT", record["id"])
                self.events.notify(record["id"])
        if self.settings.image_retention_hours > 0:
            images.delete_older_than(self.settings.image_dir, self.settings.image_retention_hours * 3600)
