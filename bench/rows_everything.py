"""Rows 16 to 19: segment everything, CAP's server against the reference generator's `generate()`, side by side.

For each image size and each parameter set (the defaults, and the
thresholds at 0, so that random weights, which the defaults may filter
away, still show the cost of every mask), on a new image each time:

- CAP: one `everything` request through a real server in this process, its
  client in a process of its own (so that its copy of the result is not
  counted): end-to-end ms, the server's peak extra RSS, and the seconds from
  `status` to the first `progress` message, and the longest silence after;
- the reference: `SamAutomaticMaskGenerator(output_mode="coco_rle").generate`
  on the same weights and pixels, in this process: ms and peak extra RSS.

Both include the encoder pass. The goals (issue 22): 640×480 time ratio
≤ 1.0; 4000×3000 ≤ 0.5 and peak extra RSS ratio ≤ 0.25; first progress
≤ 2 s after `status`.

    .venv/bin/python -m bench.sitting --only everything --mode quick   # tiny SAM, smaller images, about a minute
    .venv/bin/python -m bench.sitting --only everything --mode full    # vit_b (vit_h on a GPU), 640×480 and 4000×3000
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from segment_anything import SamAutomaticMaskGenerator

from bench.rig import Sitting
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


def everything(sitting: Sitting) -> dict:
    """Every size × parameter set; each figure from one run (they take seconds to minutes each)."""
    app = sitting.start_app(pixel_budget_mb=8192, max_result_bytes=256 * 2**20)
    rows = []
    try:
        one_row(sitting, app, 320, 240, "warm-up", {"points_per_side": GRID[sitting.mode]})  # first calls' set-up, both sides
        for width, height in SIZES[sitting.mode]:
            for name, params in (("defaults", {}), ("thresholds at 0", THRESHOLDS_AT_0)):
                rows.append(one_row(sitting, app, width, height, name, {"points_per_side": GRID[sitting.mode], **params}))
    finally:
        app.stop()
    return {"rows": rows}


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

    reference = {}

    def generate() -> None:
        started = time.perf_counter()
        reference["masks"] = SamAutomaticMaskGenerator(sitting.raw_sam, output_mode="coco_rle", **params).generate(pixels)
        reference["ms"] = (time.perf_counter() - started) * 1000

    reference_mb = peak_extra_rss_mb(generate)
    return {
        "size": f"{width}x{height}", "parameters": name, "points_per_side": params["points_per_side"],
        "cap_ms": cap_ms, "reference_ms": reference["ms"], "time_ratio": cap_ms / reference["ms"],
        "cap_peak_extra_rss_mb": cap_mb, "reference_peak_extra_rss_mb": reference_mb,
        "rss_ratio": cap_mb / reference_mb if reference_mb > 0 else float("nan"),
        "first_progress_after_status_s": first_progress, "longest_silence_s": silence,
        "masks": len(result["masks"]), "reference_masks": len(reference["masks"]), "timings": result["timings"],
    }


def lines(figures: dict) -> list[str]:
    """The rows as a Markdown table."""
    out = ["| size | parameters | CAP ÷ reference (time) | CAP ms | reference ms | peak extra RSS CAP ÷ reference "
           "| CAP MB | reference MB | first progress after status (s) | longest silence (s) | masks (reference) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in figures["rows"]:
        out.append(
            f"| {row['size']} | {row['parameters']}, grid {row['points_per_side']} | {row['time_ratio']:.2f} "
            f"| {row['cap_ms']:.0f} | {row['reference_ms']:.0f} | {row['rss_ratio']:.2f} "
            f"| {row['cap_peak_extra_rss_mb']:.0f} | {row['reference_peak_extra_rss_mb']:.0f} "
            f"| {row['first_progress_after_status_s']:.2f} | {row['longest_silence_s']:.2f} "
            f"| {row['masks']} ({row['reference_masks']}) |"
        )
    return out
