"""End-to-end time of a 1-box request next to the model's own time, in one run.

    .venv/bin/python -m bench.one_box [--runs 7] [--model vit_b]

Writes a full-size checkpoint with random weights (no download), starts the
real server in-process on SQLite with that checkpoint (production loader),
serves distinct images from a local HTTP server, and alternates: one raw
`SamModel.segment` call (SamPredictor.set_image + predict_torch, what the
model itself allows), then one request through the server, measured at the
client from connect to result. Medians and their ratio are printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from segment_anything import sam_model_registry

from server import images
from server.config import Settings
from server.main import App, production_model_loader
from server.sam_model import SamModel, load_sam
from server.store.sqlite import SQLiteStore
from tests.support import image_files
from tests.support.client import exchange
from tests.support.http_server import ImageHTTPServer

BOX = {"x": 100, "y": 80, "width": 300, "height": 200}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cap-bench-"))
    checkpoint = work / f"sam_{args.model}_random.pth"
    torch.manual_seed(0)
    torch.save(sam_model_registry[args.model]().state_dict(), checkpoint)

    settings = Settings(
        host="127.0.0.1", port=0, sqlite_path=work / "cap.sqlite3", image_dir=work / "images",
        allow_private_urls=True, sam_model_type=args.model, sam_checkpoint=checkpoint, sam_device="cpu",
    )
    raw_model = SamModel(load_sam(args.model, checkpoint, "cpu"), args.model)
    app = App(settings, SQLiteStore(settings.sqlite_path), production_model_loader(settings))
    app.start()
    assert app.processor.ready.wait(300)

    raw_ms, e2e_ms = [], []
    with ImageHTTPServer() as image_server:
        for run in range(args.runs + 1):  # run 0 warms both up and is not counted
            data = image_files.jpeg_rgb(640 + run, 480)  # a distinct image each time
            image_server.add(f"/{run}.jpg", data, content_type="image/jpeg")
            pixels = images.decode(data, max_pixels=10**8).pixels
            boxes = np.array([[BOX["x"], BOX["y"], BOX["x"] + BOX["width"], BOX["y"] + BOX["height"]]], np.float32)

            started = time.perf_counter()
            raw_model.segment(pixels, boxes, multimask=False)
            raw = (time.perf_counter() - started) * 1000

            started = time.perf_counter()
            outcome = exchange(f"ws://127.0.0.1:{app.port}/", {"image_url": image_server.url(f"/{run}.jpg"), "boxes": [BOX]})
            e2e = (time.perf_counter() - started) * 1000
            assert outcome.types == ["queued", "status", "result"], outcome.messages
            if run:
                raw_ms.append(raw)
                e2e_ms.append(e2e)
    app.stop()

    raw_median, e2e_median = statistics.median(raw_ms), statistics.median(e2e_ms)
    print(json.dumps({
        "model": args.model, "runs": args.runs, "threads": torch.get_num_threads(),
        "raw_model_ms_median": round(raw_median, 1), "end_to_end_ms_median": round(e2e_median, 1),
        "ratio": round(e2e_median / raw_median, 3), "overhead_ms_median": round(e2e_median - raw_median, 1),
        "raw_model_ms": [round(v, 1) for v in raw_ms], "end_to_end_ms": [round(v, 1) for v in e2e_ms],
    }, indent=2))


if __name__ == "__main__":
    main()
