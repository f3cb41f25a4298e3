"""Propagation speed: CAP's `VideoTracker` against `SAM2VideoPredictor.propagate_in_video`, side by side (not a test).

    .venv/bin/python -m bench.video_speed --model sam2.1_hiera_l --frames 100 [--width 1920 --height 1080]

On a GPU (bf16 autocast, as sam2's own demo runs it) this gives frames per
second for both and their ratio; on the CPU, fp32. Random weights (no
checkpoint is downloaded): the speed is the architecture's, the masks mean
nothing. Both sides read the same frames: CAP from the mp4, the reference
from a folder of those frames as JPEG files. About 5 minutes for 100
frames of 1080p with hiera_l on one H100.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness import video_clips
from server import video_decode
from server.models.device import Precision
from server.models.sam2 import Sam2Model, build


def timed_frames(frames) -> tuple[float, list[float]]:
    """Seconds to the first frame, and each frame's seconds after it."""
    started = time.perf_counter()
    stamps = [time.perf_counter() for _ in frames]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return stamps[0] - started, list(np.diff(stamps))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="sam2.1_hiera_t")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = Precision(torch.bfloat16 if device.type == "cuda" else torch.float32, "bench")
    torch.manual_seed(0)
    model = Sam2Model(build(args.model).to(device).eval(), args.model, precision=precision)
    data = video_clips.encode(video_clips.moving_shapes(args.frames, args.width, args.height))
    point = [(args.width / 4, args.height / 3)]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    started = time.perf_counter()
    clip = video_decode.decode(data, model.image_size, video_decode.Limits(10_000, 10**9))
    tracker = model.open_video(clip.frames, clip.width, clip.height)
    cap_open = time.perf_counter() - started
    tracker.prompt(0, 1, point, [1], None)
    cap_first, cap_each = timed_frames(tracker.propagate(0, None, False))

    with tempfile.TemporaryDirectory() as folder:
        for index, rgb in enumerate(video_clips.decoded_rgb(data)):
            Image.fromarray(rgb).save(Path(folder) / f"{index:05d}.jpg", quality=95)
        predictor = model.model
        with torch.inference_mode(), autocast:
            started = time.perf_counter()
            state = predictor.init_state(folder)
            ref_open = time.perf_counter() - started
            predictor.add_new_points_or_box(state, 0, 1, points=np.array(point, np.float32), labels=np.array([1], np.int32))
            frames = predictor.propagate_in_video(state, 0, None)
            ref_first, ref_each = timed_frames((masks > 0).cpu() for _, _, masks in frames)  # as CAP takes its masks

    cap_ms, ref_ms = 1000 * float(np.median(cap_each)), 1000 * float(np.median(ref_each))
    print(f"{args.model} on {device} ({precision.name}), {args.frames} frames of {args.width}x{args.height}")
    print(f"open: CAP {cap_open:.1f} s, init_state {ref_open:.1f} s")
    print(f"per frame (median): CAP {cap_ms:.1f} ms ({1000 / cap_ms:.1f} fps), predictor {ref_ms:.1f} ms ({1000 / ref_ms:.1f} fps)")
    print(f"ratio CAP / predictor: {cap_ms / ref_ms:.3f} (goal <= 1.10)")
    print(f"to the first frame: CAP {1000 * cap_first:.0f} ms, predictor {1000 * ref_first:.0f} ms")


if __name__ == "__main__":
    main()
