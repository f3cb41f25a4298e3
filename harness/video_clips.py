"""Test clips made in memory: moving shapes, encoded by OpenCV's FFmpeg as mp4 or webm.

`moving_shapes` gives the frames; `encode` writes them as a file's bytes, as
the server will receive them (lossy: compare against the file's decode, not
these arrays).
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

FOURCC = {"mp4": "mp4v", "webm": "VP80"}


def moving_shapes(frames: int, width: int, height: int) -> Iterator[np.ndarray]:
    """RGB frames, one at a time: a disc moving right and a square moving down, on a grey ground."""
    radius = max(3, min(width, height) // 6)
    for i in range(frames):
        frame = np.full((height, width, 3), 60, np.uint8)
        x = radius + (i * (width - 2 * radius)) // max(frames - 1, 1)
        cv2.circle(frame, (x, height // 3), radius, (230, 120, 30), -1)
        y = radius + (i * (height - 3 * radius)) // max(frames - 1, 1)
        cv2.rectangle(frame, (width // 2, y), (width // 2 + 2 * radius, y + 2 * radius), (40, 200, 90), -1)
        yield frame


def encode(frames: Iterable[np.ndarray], container: str = "mp4", fps: float = 10.0) -> bytes:
    """The frames as an mp4 (MPEG-4 part 2) or webm (VP8) file's bytes."""
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"clip.{container}"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*FOURCC[container]), fps, (width, height))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write {container} here")
        for frame in itertools.chain([first], frames):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        return path.read_bytes()


def clip(frames: int = 8, width: int = 96, height: int = 64, container: str = "mp4") -> bytes:
    return encode(moving_shapes(frames, width, height), container)


def decoded_rgb(data: bytes) -> list[np.ndarray]:
    """The file's frames as OpenCV decodes them, RGB at their own size (what the server decodes too)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip"
        path.write_bytes(data)
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        frames = []
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        capture.release()
        return frames
