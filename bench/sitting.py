"""One benchmark sitting: every figure of issue 5's table, side by side in one run.

    .venv/bin/python -m bench.sitting --mode quick    # tiny SAM, about a minute
    .venv/bin/python -m bench.sitting --mode full     # vit_b with random weights (vit_h too on a GPU)

Writes bench/results/<mode>-<machine>.json, .md and .png. Nothing is
downloaded: full mode writes a checkpoint with random weights and loads it
through the production loader. The server runs in this process (real
sockets, real SQLite file, the real Cosmos DB emulator when npm installed it),
so that its figures and the raw model's come from the same run, alternated
image by image, on a machine that is shared and noisy: ratios, not absolute
times, are the result.

Rows (see bench/README.md for what each measures and why):
 1 raw model                 SamPredictor.set_image + predict_torch, stock segment-anything
 2 one client at a time      end to end ÷ row 1, overhead p50/p99 (SQLite, emulator)
 3 cache hit                 same image, new box: end to end ÷ row 2
 4 16 concurrent clients     images/s ÷ the raw model's on the same 16 images, just before
 5 insert to claim           queue_ms with an idle processor, p50/p99
 6 500 sequential requests   RSS after 500 ÷ RSS after 50 (tiny model in both modes)
 7 1,000 idle connections    extra RSS per connection, /ping p99 while held
 8 16 boxes on one image     decoder + RLE ms per box, stock path vs CAP's
 9 GPU encoder               only with CUDA: images/s at batch 1 and 4, fp32 and bf16
10 click, 640×480            session click by hash ÷ stock SamPredictor.predict, interleaved
11 click, 4000×3000          the same on a photograph-sized JPEG, with where the time goes
12 16 boxes, 4000×3000       peak extra RSS of the request
13 prepare then first click  first click ÷ later clicks, after `prompts: []`
14 superseding               10 requests 20 ms apart on one session: results, superseded, records
15 model families            per model type (random weights, official layout, the production loader): encoder
                             ms in fp32 and bf16, one click's ms, end to end ÷ its own predictor; quick mode
                             builds vit_b and sam2.1_hiera_t only. `--only families` runs just this row and
                             prints it, writing no results file.
16-19 segment everything     640×480 and 4000×3000 (quick: 1600×1200), defaults and thresholds at 0: CAP's server
                             ÷ SamAutomaticMaskGenerator.generate (time, peak extra RSS), first progress after
                             status; `--only everything` runs just these rows and prints them

Where each row is measured: rows_latency.py (1 to 5), rows_resources.py (6, 7),
rows_model.py (8, 9), rows_clicks.py (10 to 14), rows_families.py (15), rows_everything.py (16 to 19), on
rig.py's `Sitting`; report.py writes the table. This module runs them in order.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from bench import plot
from bench.report import click_figures, families_lines, markdown
from bench.rig import Sitting, cpu_flags
from bench.rows_clicks import clicks
from bench.rows_everything import PARAMETER_SETS, everything, lines as everything_lines
from bench.rows_families import model_families
from bench.rows_latency import concurrent, cosmos_one_at_a_time, one_at_a_time
from bench.rows_model import decoder_per_box, gpu_encoder
from bench.rows_resources import idle_connections, memory_growth

RESULTS = Path(__file__).parent / "results"


def run(mode: str) -> dict:
    quick = mode == "quick"
    sitting = Sitting(mode, runs=20 if quick else 5)
    started = time.perf_counter()
    try:
        app = sitting.start_app()
        try:
            sqlite = one_at_a_time(sitting, app, "sqlite")
        finally:
            app.stop()
        cosmos = cosmos_one_at_a_time(sitting)
        rows = {
            "one_at_a_time_sqlite": sqlite,
            "one_at_a_time_cosmos": cosmos,
            "concurrent": concurrent(sitting, 16),
            "memory": memory_growth(sitting, 500),
            "idle_connections": idle_connections(sitting, 1000),
            "decoder": decoder_per_box(sitting, 16, repeats=9 if quick else 5),
            "gpu": gpu_encoder(),
            "clicks": clicks(sitting, runs=30),
            "families": model_families(sitting, repeats=1 if quick else 3),
            "everything": everything(sitting),
        }
    finally:
        sitting.images.stop()
    return {
        "mode": mode, "model": sitting.model_type, "machine": platform.node(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
        "tcmalloc": "tcmalloc" in os.environ.get("LD_PRELOAD", ""), "cpu_flags": cpu_flags(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": time.perf_counter() - started, "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["quick", "full"], default="quick")
    parser.add_argument("--only", choices=["families", "clicks", "everything"],
                        help="run only these rows and print them; no results file")
    parser.add_argument("--model", default="vit_b", help="with --only clicks or everything in full mode: the SAM 1 model type built")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                        help="with --only clicks: the server's PRECISION (the stock predictor runs in fp32)")
    parser.add_argument("--runs", type=int, default=30, help="with --only clicks: clicks per image and side")
    parser.add_argument("--size", action="append", type=lambda text: tuple(map(int, text.split("x"))),
                        help="with --only everything: WIDTHxHEIGHT, instead of the mode's sizes (repeatable)")
    parser.add_argument("--parameters", action="append", choices=list(PARAMETER_SETS),
                        help="with --only everything: one parameter set instead of both (repeatable)")
    args = parser.parse_args()
    if args.only == "everything":
        sitting = Sitting(args.mode, runs=0, model_type=args.model)
        try:
            print("\n".join(everything_lines(everything(sitting, args.size, args.parameters))))
        finally:
            sitting.images.stop()
        return
    if args.only == "clicks":
        sitting = Sitting(args.mode, runs=0, model_type=args.model, precision=args.precision)
        try:
            found = clicks(sitting, runs=args.runs)
        finally:
            sitting.images.stop()
        print(json.dumps(found, indent=2))
        print(f"{sitting.model_type}, server {args.precision}, {torch.get_num_threads()} torch threads, "
              f"{'CUDA' if torch.cuda.is_available() else 'CPU'}:")
        print("\n".join(click_figures(found)))
        return
    if args.only == "families":
        sitting = Sitting(args.mode, runs=0)
        try:
            print("\n".join(families_lines(model_families(sitting, repeats=1 if args.mode == "quick" else 3))))
        finally:
            sitting.images.stop()
        return
    report = run(args.mode)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"{args.mode}-{platform.node() or 'machine'}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    plot.latency_by_scenario(report, stem.with_suffix(".png"))
    print(markdown(report))
    print(f"written: {stem}.json, .md and .png")


if __name__ == "__main__":
    main()
