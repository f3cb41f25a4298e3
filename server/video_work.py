"""A video record's work, on the processor thread: open, prompt, remove, propagate (docs/protocol.md, "Video").

- **open**: the file handed over at admission is decoded (server/video_decode.py)
  into frames at the model's size, each frame's bytes taken from the pixel
  budget as it comes, with the record's progress after each; the model's
  `open_video` makes the tracker, which the session then holds
  (server/video_sessions.py).
- **prompt**, **remove**: the session's tracker, at once.
- **propagate**: each frame `propagate_in_video` yields goes to the
  connection through the outbox (server/video_outbox.py) and renews the
  record's lease (`ProgressReporter`, forced each frame); a record no longer
  this processor's (superseded, its client gone) stops it between frames.

Each ends with the result in SAMOutput and the record `processed`, or the
record `failed` with a `ClientError`'s code.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np
from pycocotools import mask as mask_utils

from server import jobs, masks, output_budget, video_decode
from server.budget import PixelBudget
from server.clock import utcnow
from server.config import Settings
from server.errors import ClientError
from server.models.seam import VideoModel
from server.progress import Cancelled, ProgressReporter
from server.results import ResultWriter
from server.store import ItemTooLarge, Record, Store
from server.video_outbox import VideoOutbox
from server.video_sessions import HeldClip, VideoSessions
from server.wakeups import JobEvents

log = logging.getLogger(__name__)
NEEDS_SAM2 = "Video needs a SAM 2.1 model (SAM_MODEL_TYPE sam2.1_hiera_*); this server runs {model}."


class VideoWork:
    def __init__(
        self, *, store: Store, settings: Settings, budget: PixelBudget, events: JobEvents, results: ResultWriter, server_id: str
    ):
        self.store = store
        self.results = results  # its `fail`
        self.settings = settings
        self.budget = budget
        self.events = events
        self.server_id = server_id
        self.sessions = VideoSessions()
        self.outbox = VideoOutbox()
        self.meter: output_budget.OutputMeter  # the record at work's, made anew by `process`

    def process(self, record: Record, model: Any) -> None:
        self.meter = output_budget.OutputMeter.for_settings(self.settings, self.budget)  # MAX_RESULT_BYTES, memory
        try:
            self._process(record, model)
        finally:
            self.meter.release()

    def _process(self, record: Record, model: Any) -> None:
        job_id = record["id"]
        started = time.perf_counter()
        reporter = ProgressReporter(
            self.store, self.events, job_id, server_id=self.server_id, lease_seconds=self.settings.lease_seconds
        )
        try:
            if not isinstance(model, VideoModel):
                raise ClientError("invalid_request", NEEDS_SAM2.format(model=getattr(model, "model_type", "SAM 1")))
            work: Callable[[Record, Any, ProgressReporter], dict[str, Any]] = getattr(self, "_" + record["video"]["kind"])
            output = work(record, model, reporter)
        except Cancelled:
            log.info("job %s: stopped between frames: the record is no longer this processor's", job_id)
            return
        except ClientError as exc:
            self.results.fail(job_id, exc.code, exc.message)
            return
        except Exception:
            log.exception("job %s: the video work failed", job_id)
            self.results.fail(job_id, "processing_failed", "The model failed on this video request; see the server log.")
            return
        self._store(record, output, model.model_type, (time.perf_counter() - started) * 1000)

    # --- the four kinds -------------------------------------------------------------

    def _open(self, record: Record, model: Any, reporter: ProgressReporter) -> dict[str, Any]:
        data = self.sessions.take_file(record["id"])
        if data is None:
            raise ClientError("processing_failed", "The video file is no longer here; open it again.")
        reservation = self.budget.reserve(0)
        size = model.image_size

        def on_frame(done: int, total: int) -> None:
            reservation.grow(video_decode.frame_bytes(size), force=False)  # queue_full past PIXEL_BUDGET_MB
            reporter.report(done, total)

        try:
            limits = video_decode.Limits(self.settings.max_video_frames, self.settings.max_image_pixels)
            clip = video_decode.decode(data, size, limits, on_frame, sha256=record["imageSha256"])
            del data
            tracker = model.open_video(clip.frames, clip.width, clip.height)
        except BaseException:
            reservation.release()
            raise
        info = clip.describe()
        self.sessions.keep(record["video"]["session"], HeldClip(tracker, reservation, info))
        return {"video": info}

    def _prompt(self, record: Record, model: Any, reporter: ProgressReporter) -> dict[str, Any]:
        tracker, frame = self._tracker(record), record["video"]["frame"]
        made = []
        for prompt in record["prompts"]:
            points = [(point["x"], point["y"]) for point in prompt.get("points", [])]
            labels = [point["label"] for point in prompt.get("points", [])]
            box = prompt.get("box")
            xyxy = None if box is None else [box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"]]
            mask = tracker.prompt(frame, prompt["object"], points, labels, xyxy)
            made.append({"object": prompt["object"], **wire(mask)})
            self.meter.count(made[-1])
        return {"frame": frame, "masks": made}

    def _remove(self, record: Record, model: Any, reporter: ProgressReporter) -> dict[str, Any]:
        tracker = self._tracker(record)
        tracker.remove(record["video"]["removeObject"])
        return {"objects": tracker.objects()}

    def _propagate(self, record: Record, model: Any, reporter: ProgressReporter) -> dict[str, Any]:
        tracker = self._tracker(record)
        if not tracker.objects():
            raise ClientError("invalid_request", "No object has been prompted on this video yet: prompt a frame first.")
        params = record["video"]["propagate"]
        reverse = params["direction"] == "backward"
        count = params.get("frames", tracker.frames)
        total = frames_tracked(tracker.frames, params["from"], count, reverse)
        frames = []
        for frame, objects in tracker.propagate(params["from"], count, reverse):
            made = [{"object": obj, **wire(mask)} for obj, mask in objects]
            frames.append({"frame": frame, "masks": made})
            self.meter.count(frames[-1])  # result_too_large past MAX_RESULT_BYTES
            self.outbox.put(record["id"], frame, made)
            reporter.report(len(frames), total, force=True)  # renews the lease; Cancelled once superseded
        return {"frames": len(frames), "masks": frames}  # masks: split across store items as large results are

    def _tracker(self, record: Record) -> Any:
        tracker = self.sessions.tracker(record["video"]["session"], record["imageSha256"])
        if tracker is None:
            raise ClientError("video_unknown", "This session no longer holds that video; open it again.")
        return tracker

    # --- the end ----------------------------------------------------------------------

    def _store(self, record: Record, output: dict[str, Any], model_type: str, video_ms: float) -> None:
        job_id = record["id"]
        item = {
            "id": job_id,
            "masks": output.pop("masks", []),
            "video": output,
            "model": model_type,
            "createdAt": jobs.format_time(utcnow()),
            "cachedEmbedding": False,
            "timings": {"video_ms": round(video_ms, 2)},
        }
        try:
            self.store.put_output(item)
        except ItemTooLarge:
            self.results.fail(job_id, "result_too_large", "This result is larger than the store keeps; propagate fewer frames.")
            return
        size = {"width": output["video"]["width"], "height": output["video"]["height"]} if "video" in output else {}
        result_bytes = self.meter.bytes  # what the connection reserves before reading it back
        processed = self.store.update(job_id, lambda r: jobs.mark_processed(r, now=utcnow(), result_bytes=result_bytes) | size)
        if processed is None:
            log.info("job %s: result stored, but the record was no longer processing", job_id)
        self.events.notify(job_id)



def wire(mask: np.ndarray) -> dict[str, Any]:
    """One object's mask on a frame as the wire carries it: `segmentation` (COCO RLE), `area`, `bbox`."""
    return masks.wire_rle(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))


def frames_tracked(frames: int, start: int, count: int, reverse: bool) -> int:
    """How many frames `propagate_in_video(start_frame_idx=start, max_frame_num_to_track=count)` yields."""
    if reverse:
        return start - max(start - count, 0) + 1 if start > 0 else 0
    return min(start + count, frames - 1) - start + 1
