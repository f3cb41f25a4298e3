"""A propagation's frames on their way from the processor to the waiting connection, in this process.

The processor `put`s each frame's masks as `propagate_in_video` yields it
and rings the connection's bell; the connection `take`s what has come and
sends one `frame` message each, in order. A video's records are processed
by the replica whose session holds the clip, so the waiting connection is
always in this process. What nobody takes is `forget`-ten when the request
ends.
"""

from __future__ import annotations

import threading
from typing import Any

Frame = tuple[int, list[dict[str, Any]]]  # (frame index, each object's wire mask)


class VideoOutbox:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frames: dict[str, list[Frame]] = {}

    def put(self, job_id: str, frame: int, masks: list[dict[str, Any]]) -> None:
        with self._lock:
            self._frames.setdefault(job_id, []).append((frame, masks))

    def take(self, job_id: str) -> list[Frame]:
        with self._lock:
            return self._frames.pop(job_id, [])

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._frames.pop(job_id, None)
