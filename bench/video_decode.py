"""Decode speed and memory of server/video_decode.py on a generated clip (not a test; not run by CI).

    .venv/bin/python -m bench.video_decode --frames 120 --width 1920 --height 1080

Prints ms per frame and the process's peak RSS growth while decoding.
"""

from __future__ import annotations

import argparse
import resource
import time

from harness import video_clips
from server import video_decode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--container", default="mp4", choices=sorted(video_clips.FOURCC))
    parser.add_argument("--size", type=int, default=1024, help="the model's side")
    args = parser.parse_args()
    data = video_clips.clip(args.frames, args.width, args.height, args.container)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    clip = video_decode.decode(data, args.size, video_decode.Limits(max_frames=10_000, max_pixels=10**9))
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kept = sum(frame.nbytes for frame in clip.frames)
    print(
        f"{args.container} {args.width}x{args.height}, {len(clip.frames)} frames, {len(data) / 1e6:.1f} MB: "
        f"{seconds / len(clip.frames) * 1000:.1f} ms/frame, frames kept {kept / 2**20:.0f} MiB, "
        f"peak RSS growth {(peak - before) / 1024:.0f} MiB"
    )


if __name__ == "__main__":
    main()
