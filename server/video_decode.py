"""A video file's bytes to compact RGB frames, through OpenCV's FFmpeg (docs/protocol.md, "Video").

Why OpenCV and not PyAV: OpenCV is already a dependency, and its wheel
carries FFmpeg's decoders (mp4: H.264, MPEG-4; webm: VP8, VP9); PyAV would
add a second copy of FFmpeg for the same work. Decoding is not the cost
(`docs/protocol.md` gives the figures): the model's frames are.

Only mp4 (an ISO base media file: `ftyp` at byte 4) and webm (an EBML
header) reach FFmpeg, as a local file: a playlist or any other format that
could make FFmpeg read other files or addresses is `unsupported_video`
before it is opened (FFmpeg's mp4 reader follows no external data
reference unless told to).

Each frame is kept as the model takes it, `size`² uint8 RGB, resized by
Pillow as sam2's `load_video_frames` resizes a folder of frames: 3 MB a
frame at 1024², never a float tensor (server/models/sam2_video.py makes each
frame's tensor when the model asks for it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from server.errors import ClientError

EBML_MAGIC = b"\x1a\x45\xdf\xa3"


@dataclasses.dataclass(frozen=True)
class Limits:
    max_frames: int  # MAX_VIDEO_FRAMES
    max_pixels: int  # MAX_IMAGE_PIXELS, per frame


@dataclasses.dataclass
class Clip:
    """A decoded clip: its frames at the model's size, and what the client is told about it."""

    frames: list[np.ndarray]  # size × size × 3 uint8 RGB
    width: int
    height: int
    fps: float
    sha256: str

    def describe(self) -> dict[str, object]:
        return {"sha256": self.sha256, "frames": len(self.frames), "width": self.width, "height": self.height,
                "fps": round(self.fps, 3)}


def container_of(data: bytes) -> str | None:
    """"mp4" or "webm" by the file's first bytes, else None."""
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return "mp4"
    if data[:4] == EBML_MAGIC:
        return "webm"
    return None


def frame_bytes(size: int) -> int:
    """What one kept frame costs: the pixel budget's unit for a video."""
    return size * size * 3


def decode(
    data: bytes,
    size: int,
    limits: Limits,
    on_frame: Callable[[int, int], None] = lambda done, total: None,
    sha256: str | None = None,
) -> Clip:
    """Every frame of `data`, at `size`², or `ClientError` (`unsupported_video`, `video_too_large`).

    `on_frame(done, total)` is called after each frame; `total` is the
    container's frame count (an estimate for some files), at least `done`.
    """
    if container_of(data) is None:
        raise ClientError("unsupported_video", "The file is neither an mp4 nor a webm video.")
    digest = sha256 or hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory(prefix="cap-video-") as folder:
        path = Path(folder) / "clip"
        path.write_bytes(data)
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        try:
            return _read(capture, size, limits, on_frame, digest)
        finally:
            capture.release()


def _read(capture: cv2.VideoCapture, size: int, limits: Limits, on_frame: Callable[[int, int], None], digest: str) -> Clip:
    if not capture.isOpened():
        raise ClientError("unsupported_video", "The video could not be decoded (an mp4 or webm file FFmpeg can read).")
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width * height > limits.max_pixels:
        raise ClientError(
            "video_too_large", f"Its frames are {width}x{height}, over MAX_IMAGE_PIXELS ({limits.max_pixels}) each."
        )
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    stated = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if stated > limits.max_frames:
        raise ClientError("video_too_large", f"It has {stated} frames, over MAX_VIDEO_FRAMES ({limits.max_frames}).")
    frames: list[np.ndarray] = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        if len(frames) == limits.max_frames:
            raise ClientError("video_too_large", f"It has more than MAX_VIDEO_FRAMES ({limits.max_frames}) frames.")
        if bgr.shape[:2] != (height, width):
            raise ClientError("unsupported_video", "Its frames change size; every frame must be the same size.")
        frames.append(model_frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size))
        on_frame(len(frames), max(stated, len(frames)))
    if not frames:
        raise ClientError("unsupported_video", "The video has no frame that could be decoded.")
    return Clip(frames, width, height, fps, digest)


def model_frame(rgb: np.ndarray, size: int) -> np.ndarray:
    """One RGB frame at the model's `size`², as sam2's `load_video_frames` resizes a frame file (Pillow)."""
    return np.array(Image.fromarray(rgb).resize((size, size)))
