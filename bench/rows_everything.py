"""Rows 16 to 19: segment everything, CAP's server against the reference generator's `generate()`, side by side.

For each image size and each parameter set (the defaults, and the
thresholds at 0, so that random weights, which the defaults may filter
away, still show the cost of every mask), on a new image each time:

- CAP: one `everything` request through a real server in this process, its
  client in a process of its own (so that its copy of the result is not
  counted): end-to-end ms, the server's peak extra RSS, and the seconds from
  `status` to the first `progress` message, and the longest silence after;
- the reference: `SamAutomaticMaskGenerator(output_mode="coco_rle").generate`
  on the same weights and pixels, in a process of its own (after an untimed
  warm-up call): ms and peak extra RSS. Its `points_per_batch` is its default
  64 where that fits the machine's memory, else 32 or 16
  (`reference_points_per_batch`).

Both include the encoder pass. The goals (issue 22): 640×480 time ratio
≤ 1.0; 4000×3000 ≤ 0.5 and peak extra RSS ratio ≤ 0.25; first progress
≤ 2 s after `status`.

    .venv/bin/python -m bench.sitting --only everything --mode quick   # tiny SAM, smaller images, about a minute
    .venv/bin/python -m bench.sitting --only everything --mode full    # vit_b, 640×480 and 4000×3000
    bench/gpu_everything.sh                                            # vit_h on a CUDA GPU, under 8 minutes
    .venv/bin/python -m bench.sitting --only everything --mode full --size 4000x3000 --parameters defaults
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.rig import Sitting, cpu_flags, flags_text
from bench.rows_clicks import peak_extra_rss_mb

THRESHOLDS_AT_0 = {"pred_iou_thresh": 0, "stability_score_thresh": 0}
SIZES = {"quick": ((640, 480), (1600, 1200)), "full": ((640, 480), (4000, 3000))}
# The grid in quick mode: the tiny SAM's masks are noise, and 1,024 of them at 0 thresholds say little more.
GRID = {"quick": 8, "full": 32}

# The client, in a process of its own: the result, and when status and each progress message came.
ONE_EVERYTHING = """
import json, sys, time
from websockets.sync.client import connect
url, request, out = sys.argv[1:4]
seen = []
with connect(url, open_timeout=10, max_size=None) as ws:
    seen.append((time.monotonic(), "sent"))
    ws.send(request)
    while True:
        text = ws.recv(timeout=1200)
        kind = json.loads(text)["type"]
        seen.append((time.monotonic(), kind))
        if kind in ("result", "error"):
            break
json.dump({"result": json.loads(text), "seen": seen}, open(out, "w"))
"""

# The reference, in a process of its own: its memory neither stacks on the server's nor stays behind in this
# process's allocator. Loads the model, then times `generate` and its peak RSS above the RSS just before.
REFERENCE = """
import json, sys, time
from pathlib import Path
import numpy as np, torch
from segment_anything import SamAutomaticMaskGenerator
from harness.memory import release_free_memory, rss_bytes
from harness.tiny_sam import build_tiny_sam
from server.models.sam1 import load_sam
model, image, params, batch, out = sys.argv[1:6]
model_type, weights = model.split("=", 1)
if model_type == "tiny":
    sam = build_tiny_sam()
    sam.load_state_dict(torch.load(weights, weights_only=True))
else:
    sam = load_sam(model_type, Path(weights), "cuda" if torch.cuda.is_available() else "cpu")
pixels = np.load(image)
SamAutomaticMaskGenerator(sam, points_per_side=2).generate(pixels[:64, :64])  # first calls' set-up, untimed
generator = SamAutomaticMaskGenerator(sam, output_mode="coco_rle", points_per_batch=int(batch), **json.loads(params))
release_free_memory()
Path("/proc/self/clear_refs").write_text("5")
before = rss_bytes()
started = time.perf_counter()
masks = generator.generate(pixels)
ms = (time.perf_counter() - started) * 1000
json.dump({"ms": ms, "peak_extra_rss_mb": (rss_bytes("VmHWM") - before) / 2**20, "masks": len(masks)}, open(out, "w"))
"""


PARAMETER_SETS = {"defaults": {}, "thresholds at 0": THRESHOLDS_AT_0}


def everything(sitting: Sitting, sizes: list[tuple[int, int]] | None = None, sets: list[str] | None = None) -> dict:
    """Every size × parameter set (the mode's sizes and both sets, unless `sizes` and `sets` name some); each
    figure from one run (they take seconds to minutes each)."""
    app = sitting.start_app(pixel_budget_mb=8192, max_result_bytes=256 * 2**20)
    rows = []
    try:
        one_row(sitting, app, 320, 240, "warm-up", {"points_per_side": GRID[sitting.mode]})  # first calls' set-up, both sides
        for width, height in sizes or SIZES[sitting.mode]:
            for name in sets or PARAMETER_SETS:
                params = PARAMETER_SETS[name]
                rows.append(one_row(sitting, app, width, height, name, {"points_per_side": GRID[sitting.mode], **params}))
                print(json.dumps(rows[-1]), flush=True)  # a row at a time: the large ones take many minutes
    finally:
        app.stop()
    return {"rows": rows, "model": sitting.model_type, "cpu": cpu_flags(),
            "device": "CUDA" if torch.cuda.is_available() else "CPU"}


def one_row(sitting: Sitting, app, width: int, height: int, name: str, params: dict) -> dict:
    url, pixels = sitting.new_photo(width, height)
    out = sitting.work / "everything-result.json"
    request = json.dumps({"image_url": url, "everything": params})
    command = [sys.executable, "-c", ONE_EVERYTHING, f"ws://127.0.0.1:{app.port}/", request, str(out)]
    cap_mb = peak_extra_rss_mb(lambda: subprocess.run(command, check=True, timeout=1800))
    answer = json.loads(out.read_text())
    result, seen = answer["result"], answer["seen"]
    assert result["type"] == "result", result
    cap_ms = (seen[-1][0] - seen[0][0]) * 1000  # sent to result, on the client's clock
    after_status = [at for at, kind in seen if kind not in ("sent", "queued")]
    status_at = after_status[0]
    first_progress = next(at for at, kind in seen if kind == "progress") - status_at
    silence = max(later - earlier for earlier, later in zip(after_status, after_status[1:]))

    batch = reference_points_per_batch(width, height)
    image = sitting.work / "everything-pixels.npy"
    np.save(image, pixels)
    reference_out = sitting.work / "everything-reference.json"
    row = {
        "size": f"{width}x{height}", "parameters": name, "points_per_side": params["points_per_side"],
        "cap_ms": cap_ms, "cap_peak_extra_rss_mb": cap_mb,
        "first_progress_after_status_s": first_progress, "longest_silence_s": silence,
        "masks": len(result["masks"]), "timings": result["timings"], "reference_points_per_batch": batch,
    }
    killed = run_reference([sys.executable, "-c", REFERENCE, reference_model(sitting), str(image), json.dumps(params),
                            str(batch), str(reference_out)])
    if killed:
        print(f"the reference's process was killed (out of memory?) on {width}x{height}, {name}, at batch {batch}: "
              "the row is reported without it", flush=True)
        return {**row, "reference_killed": True}
    reference = json.loads(reference_out.read_text())
    return {
        **row, "reference_ms": reference["ms"], "time_ratio": cap_ms / reference["ms"],
        "reference_peak_extra_rss_mb": reference["peak_extra_rss_mb"],
        "rss_ratio": cap_mb / reference["peak_extra_rss_mb"] if reference["peak_extra_rss_mb"] > 0 else float("nan"),
        "reference_masks": reference["masks"],
    }


def run_reference(command: list[str]) -> bool:
    """Run the reference's process; True if it was killed (SIGKILL: on this machine, the kernel's out-of-memory
    killer, when the sitting's own process holds gigabytes from earlier rows), so that the row is reported
    without it instead of the sitting ending with nothing written. Any other failure raises."""
    try:
        subprocess.run(command, check=True, timeout=3600, cwd=Path(__file__).resolve().parent.parent)
    except subprocess.CalledProcessError as exc:
        if exc.returncode != -signal.SIGKILL:
            raise
        return True
    return False


def reference_model(sitting: Sitting) -> str:
    """What the reference's process loads: the checkpoint CAP's server loaded (full mode), or the tiny SAM's
    weights written to a file (quick mode: `build_tiny_sam` is the same model on both sides)."""
    if sitting.model_type != "tiny":
        return f"{sitting.model_type}={sitting.checkpoint}"
    weights = sitting.work / "tiny-sam.pth"
    torch.save(sitting.raw_sam.state_dict(), weights)
    return f"tiny={weights}"


def reference_points_per_batch(width: int, height: int) -> int:
    """The reference generator's default batch of 64 points, unless that batch would not fit in this machine's
    available memory with 2 GiB to spare: then 32 or 16. Its batch holds up to about 17 bytes per pixel for
    each of its 3 candidates per point (measured at 4000×3000: 19.3 GB for 64 points with the thresholds at
    0, more at the defaults, where every candidate passing the predicted-IoU filter is copied), and a
    24 GiB machine ran out of memory at 64 and at 32 there. The batch does not change its masks; a smaller
    one only lowers its peak, so CAP's memory ratio against it is, if anything, too high."""
    available = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemAvailable:"))
    for batch in (64, 32):
        if 17 * 3 * batch * width * height + 2 * 2**30 <= available:
            return batch
    return 16


def lines(figures: dict) -> list[str]:
    """The rows as a Markdown table, after the model, the device and the CPU's flags they were measured on."""
    flags = flags_text(figures["cpu"])
    out = [f"{figures['model']} on the {figures['device']} [{flags}]", "",
           "| size | parameters | CAP ÷ reference (time) | CAP ms | reference ms | peak extra RSS CAP ÷ reference "
           "| CAP MB | reference MB | first progress after status (s) | longest silence (s) | masks (reference) "
           "| reference points_per_batch |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in figures["rows"]:
        if row.get("reference_killed"):
            reference = {"time_ratio": "-", "reference_ms": "killed", "rss_ratio": "-", "reference_peak_extra_rss_mb": "killed",
                         "reference_masks": "-"}
        else:
            reference = {"time_ratio": f"{row['time_ratio']:.2f}", "reference_ms": f"{row['reference_ms']:.0f}",
                         "rss_ratio": f"{row['rss_ratio']:.2f}",
                         "reference_peak_extra_rss_mb": f"{row['reference_peak_extra_rss_mb']:.0f}",
                         "reference_masks": row["reference_masks"]}
        out.append(
            f"| {row['size']} | {row['parameters']}, grid {row['points_per_side']} | {reference['time_ratio']} "
            f"| {row['cap_ms']:.0f} | {reference['reference_ms']} | {reference['rss_ratio']} "
            f"| {row['cap_peak_extra_rss_mb']:.0f} | {reference['reference_peak_extra_rss_mb']} "
            f"| {row['first_progress_after_status_s']:.2f} | {row['longest_silence_s']:.2f} "
            f"| {row['masks']} ({reference['reference_masks']}) | {row['reference_points_per_batch']} |"
        )
    if any(row.get("reference_killed") for row in figures["rows"]):
        out += ["", "killed: the reference's process was killed (SIGKILL, the kernel's out-of-memory killer on this "
                "machine) at that batch; run the row alone (`--only everything --size WxH --parameters NAME`)."]
    return out
