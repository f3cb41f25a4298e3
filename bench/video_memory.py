"""Peak extra memory of one open clip: CAP's `VideoTracker` against sam2's own `init_state` (not a test; not run by CI).

    .venv/bin/python -m bench.video_memory --frames 300 --width 1920 --height 1080 [--propagate 8]

Makes a clip (moving shapes, mp4), decodes its frames once, and measures in
a fresh process for each side the peak resident set beyond the loaded model
(VmHWM, reset after the load): CAP decodes the file and opens the clip as
the server does; the reference runs `init_state` on a folder of the same
frames as JPEG files (sam2's own way to read a clip without decord). With
`--propagate k`, each side then prompts frame 0 and propagates k frames.
Random-weight models: memory, not masks.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from harness import video_clips
from harness.memory import release_free_memory, rss_bytes


def reset_peak() -> None:
    release_free_memory()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM starts again from VmRSS


def measure(side: str, clip: Path, folder: Path, model_type: str, propagate: int) -> None:
    import torch

    from server import video_decode
    from server.models.sam2 import Sam2Model, build

    torch.manual_seed(0)
    model = Sam2Model(build(model_type).eval(), model_type)
    reset_peak()
    base = rss_bytes()
    if side == "cap":
        data = clip.read_bytes()
        decoded = video_decode.decode(data, model.image_size, video_decode.Limits(10_000, 10**9))
        del data
        tracker = model.open_video(decoded.frames, decoded.width, decoded.height)
        if propagate:
            tracker.prompt(0, 1, [(decoded.width / 4, decoded.height / 3)], [1], None)
            for _ in tracker.propagate(0, propagate, False):
                pass
    else:
        state = model.model.init_state(str(folder))
        if propagate:
            width, height = state["video_width"], state["video_height"]
            with torch.inference_mode():
                model.model.add_new_points_or_box(state, 0, 1, points=np.array([[width / 4, height / 3]], np.float32), labels=np.array([1], np.int32))
                for _ in model.model.propagate_in_video(state, 0, propagate):
                    pass
    peak = rss_bytes("VmHWM") - base
    print(f"{side}: peak extra RSS {peak / 2**20:.0f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--model", default="sam2.1_hiera_t")
    parser.add_argument("--propagate", type=int, default=0)
    parser.add_argument("--side", choices=["cap", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--clip", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        measure(args.side, args.clip, args.folder, args.model, args.propagate)
        return
    with tempfile.TemporaryDirectory() as scratch:
        clip, folder = Path(scratch) / "clip.mp4", Path(scratch) / "frames"
        clip.write_bytes(video_clips.encode(video_clips.moving_shapes(args.frames, args.width, args.height)))
        folder.mkdir()
        for index, rgb in enumerate(video_clips.decoded_rgb(clip.read_bytes())):
            from PIL import Image

            Image.fromarray(rgb).save(folder / f"{index:05d}.jpg", quality=95)
        print(f"{args.frames} frames of {args.width}x{args.height}, {args.model}, propagating {args.propagate}")
        for side in ("cap", "reference"):
            subprocess.run(
                [sys.executable, "-m", "bench.video_memory", "--side", side, "--clip", str(clip), "--folder", str(folder),
                 "--model", args.model, "--propagate", str(args.propagate)],
                check=True,
            )


if __name__ == "__main__":
    main()
