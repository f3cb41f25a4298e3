"""The clips this replica holds, by session (docs/protocol.md, "Video"): shared by connections and the processor.

A clip's state (a `VideoTracker`, server/models/sam2_video.py) lives in the
session that opened it, on this replica. The processor `keep`s it after an
open and finds it (`tracker`) for that session's later requests; the
connection asks `describe` before admitting one (`video_unknown` when the
session does not hold it), and `close_session` frees them all when the
session ends, with their share of the pixel budget. A video file's bytes
wait here from admission to the open's claim (`hand_over`, `take_file`).
No torch here: the connection side imports this module.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from server.budget import Reservation


@dataclasses.dataclass
class HeldClip:
    tracker: Any  # server.models.sam2_video.VideoTracker
    reservation: Reservation  # its frames' share of PIXEL_BUDGET_MB
    info: dict[str, Any]  # what an open's result said: sha256, frames, width, height, fps


class VideoSessions:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clips: dict[tuple[str, str], HeldClip] = {}
        self._files: dict[str, bytes] = {}
        self._open: set[str] = set()  # sessions still open: a clip decoded for one that ended is not kept

    # --- the connection side --------------------------------------------------------

    def hand_over(self, job_id: str, data: bytes) -> None:
        with self._lock:
            self._files[job_id] = data

    def drop(self, job_id: str) -> None:
        with self._lock:
            self._files.pop(job_id, None)

    def begin(self, session: str) -> None:
        with self._lock:
            self._open.add(session)

    def describe(self, session: str, sha256: str) -> dict[str, Any] | None:
        """The clip's open result (frames, width, height, ...), or None when the session does not hold it."""
        with self._lock:
            held = self._clips.get((session, sha256))
        return None if held is None else held.info

    def close_session(self, session: str) -> int:
        """Free every clip the session holds; how many there were."""
        with self._lock:
            self._open.discard(session)
            mine = [key for key in self._clips if key[0] == session]
            freed = [self._clips.pop(key) for key in mine]
        for held in freed:
            held.reservation.release()
        return len(freed)

    def bytes_held(self) -> int:
        with self._lock:
            return sum(held.reservation.nbytes for held in self._clips.values())

    # --- the processor side ---------------------------------------------------------

    def take_file(self, job_id: str) -> bytes | None:
        with self._lock:
            return self._files.pop(job_id, None)

    def keep(self, session: str, held: HeldClip) -> None:
        """The session holds this clip now. One it held under that hash is freed; so is this one, at once,
        if the session ended while the clip was decoded."""
        key = (session, held.info["sha256"])
        with self._lock:
            freed = [self._clips.pop(key)] if key in self._clips else []
            if session in self._open:
                self._clips[key] = held
            else:
                freed.append(held)
        for clip in freed:
            clip.reservation.release()

    def tracker(self, session: str, sha256: str) -> Any | None:
        with self._lock:
            held = self._clips.get((session, sha256))
        return None if held is None else held.tracker
