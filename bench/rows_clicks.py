"""Rows 10 to 14: clicks on a session against the stock predictor, the peak memory of 16 boxes on a
photograph-sized image, the first click after `prompts: []`, superseding; and what permessage-deflate
costs on those results."""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from bench.rig import Sitting, cpu_flags
from harness.client import Session, session
from harness.memory import release_free_memory, rss_bytes
from harness.waiting import wait_for
from server import jobs, masks
from server.compression import SizeAwareDeflate, SizeAwareDeflateFactory
from server.main import App

DEFLATE_DEFAULTS = (False, False, 12, 12, {"memLevel": 5})  # what websockets' serve() and connect() agree on
CAP_DEFLATE = (*DEFLATE_DEFAULTS[:4], SizeAwareDeflateFactory().compress_settings)  # CAP's server's: at level 1


@dataclasses.dataclass
class Click:
    ms: float  # request sent to result parsed, at the client
    result: dict
    text: str  # the result message as it came off the socket (after the client inflated it)


def click(sess: Session, request: dict) -> Click:
    """One request on a session, timed from its send to its result."""
    started = time.perf_counter()
    sess.send({"keep_open": True, **request})
    while True:
        text = sess.ws.recv(timeout=sess.timeout)
        message = json.loads(text)
        if message["type"] in ("result", "error"):
            break
    elapsed = (time.perf_counter() - started) * 1000
    assert message["type"] == "result", message
    return Click(elapsed, message, text)


def point_prompt(x: float, y: float) -> dict:
    return {"points": [{"x": x, "y": y, "label": 1}]}


def click_points(width: int, height: int, count: int, seed: int = 0) -> list[tuple[float, float]]:
    """Points spread over the middle of the image, each used once by each side."""
    rng = np.random.default_rng(seed)
    return [(round(float(x), 1), round(float(y), 1))
            for x, y in zip(rng.uniform(0.2, 0.8, count) * width, rng.uniform(0.2, 0.8, count) * height)]


def stock_click_ms(sitting: Sitting, x: float, y: float) -> float:
    """Stock SamPredictor.predict for one positive point, after set_image: the decoder's own speed."""
    started = time.perf_counter()
    with torch.inference_mode():
        sitting.raw.predict(np.array([[x, y]], np.float32), np.array([1]), multimask_output=False)
    return (time.perf_counter() - started) * 1000


def open_image(sess: Session, url: str) -> str:
    """`prompts: []` on a session: the server reads the image and runs the encoder; the image's hash."""
    answer = sess.ask({"image_url": url, "prompts": []})
    assert answer["type"] == "result", answer
    return answer["image"]["sha256"]


def mask_steps(app: App, result: dict, scale: float | None, repeats: int = 9) -> dict:
    """Where one click's mask time goes, step by step, on the logits the server kept for it (p50, ms).

    upsample and threshold (one step: `Upsampler.crop` thresholds as it
    upsamples), encode (`crop_rle`), wire (`extent`: area, bbox; the RLE as text), JSON (the
    mask's text, as `OutputMeter.count` and the result's message make it).
    """
    kept = app.mask_cache.mask("bench", {"id": result["id"], "index": 0}, result["image"]["sha256"], scope=None)
    upsampler = masks.Upsampler(kept.postprocess.at_scale(scale), kept.logits.shape[-1])
    logits = kept.logits[0]
    steps: dict[str, list[float]] = {"upsample_threshold_ms": [], "encode_ms": [], "wire_ms": [], "json_ms": []}
    for _ in range(repeats):
        started = time.perf_counter()
        crop = upsampler.crop(logits)
        encoded = time.perf_counter()
        rle = masks.crop_rle(crop)
        wired = time.perf_counter()
        entry = {**masks.extent(crop), "segmentation": masks.wire_segmentation(rle)}
        dumped = time.perf_counter()
        json.dumps(entry, separators=(",", ":"))
        done = time.perf_counter()
        for name, (start, end) in zip(steps, ((started, encoded), (encoded, wired), (wired, dumped), (dumped, done))):
            steps[name].append((end - start) * 1000)
    return {name: statistics.median(values) for name, values in steps.items()}


def clicks_against_stock(
    sitting: Sitting, app: App, image: tuple[str, np.ndarray], runs: int, scale: float | None = None
) -> dict:
    """Rows 10 and 11: a click on a session against stock predict, interleaved A B C (D) A B C (D) ….

    A: a session that negotiated permessage-deflate (any browser does); B: the
    stock predictor, on the same point, after set_image on the same image;
    C: a session whose client offers no compression; D, with a `scale`: A's
    session asking the masks at that `mask_scale`. The first round warms
    them all and is not counted. "Beyond the decoder" is a click's time at
    the client less the server's decoder time.
    """
    url, pixels = image
    height, width = pixels.shape[:2]
    times: dict[str, list[float]] = {"cap": [], "stock": [], "cap_uncompressed": [], "cap_scaled": [],
                                     "cap_beyond_decoder": [], "cap_scaled_beyond_decoder": []}
    parts: dict[str, list[float]] = {"queue_ms": [], "download_ms": [], "decode_ms": [], "rle_ms": [],
                                     "server_rest_ms": [], "client_ms": []}
    ws = f"ws://127.0.0.1:{app.port}/"
    d: Click | None = None
    with session(ws, timeout=600) as compressed:
        sha = open_image(compressed, url)
        with torch.inference_mode():
            sitting.raw.set_image(pixels)
        # Opened only now: a connection that sends nothing for REQUEST_TIMEOUT is closed.
        with session(ws, timeout=600, compression=None) as plain:
            for run, (x, y) in enumerate(click_points(width, height, runs + 1)):
                request = {"image_sha256": sha, "prompts": [point_prompt(x, y)]}
                a = click(compressed, request)
                stock_ms = stock_click_ms(sitting, x, y)
                c = click(plain, request)
                d = click(compressed, {**request, "mask_scale": scale}) if scale is not None else None
                assert a.result["cached_embedding"] and c.result["cached_embedding"]
                if not run:
                    continue
                times["cap"].append(a.ms)
                times["stock"].append(stock_ms)
                times["cap_uncompressed"].append(c.ms)
                times["cap_beyond_decoder"].append(a.ms - a.result["timings"]["decode_ms"])
                if d is not None:
                    times["cap_scaled"].append(d.ms)
                    times["cap_scaled_beyond_decoder"].append(d.ms - d.result["timings"]["decode_ms"])
                timings = a.result["timings"]
                before_rest = sum(timings[name] for name in ("queue_ms", "download_ms", "decode_ms", "rle_ms"))
                for name in ("queue_ms", "download_ms", "decode_ms", "rle_ms"):
                    parts[name].append(timings[name])
                parts["server_rest_ms"].append(timings["total_ms"] - before_rest)
                parts["client_ms"].append(a.ms - timings["total_ms"])
    p50 = {name: statistics.median(values) for name, values in times.items() if values}
    row = {
        "width": width, "height": height, "runs": runs, "sha256": sha, "cpu": cpu_flags(), **times,
        "cap_p50_ms": p50["cap"], "stock_p50_ms": p50["stock"], "cap_uncompressed_p50_ms": p50["cap_uncompressed"],
        "ratio": p50["cap"] / p50["stock"], "ratio_uncompressed": p50["cap_uncompressed"] / p50["stock"],
        "beyond_decoder_p50_ms": p50["cap_beyond_decoder"],
        "breakdown_p50_ms": {name: statistics.median(values) for name, values in parts.items()},
        "mask_steps_p50_ms": mask_steps(app, a.result, None),
        "result_bytes": len(a.text.encode()), "result_text": a.text,
    }
    if d is not None:
        row["scaled"] = {
            "mask_scale": scale, "cap_p50_ms": p50["cap_scaled"], "ratio": p50["cap_scaled"] / p50["stock"],
            "beyond_decoder_p50_ms": p50["cap_scaled_beyond_decoder"], "mask_steps_p50_ms": mask_steps(app, d.result, scale),
        }
    return row


def peak_extra_rss_mb(action) -> float:
    """The process's peak RSS while `action` runs, above its RSS just before (peak reset via clear_refs)."""
    release_free_memory()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux 4.0+)
    before = rss_bytes()
    if rss_bytes("VmHWM") > before + 16 * 2**20:
        raise RuntimeError("writing 5 to /proc/self/clear_refs did not reset VmHWM here; cannot measure a peak")
    action()
    return (rss_bytes("VmHWM") - before) / 2**20


# The client of row 12, in a process of its own, so that its copy of the result is not counted.
ONE_REQUEST = """
import json, sys
from websockets.sync.client import connect
url, request, out = sys.argv[1:4]
with connect(url, open_timeout=10, max_size=None) as ws:
    ws.send(request)
    while json.loads(text := ws.recv(timeout=600))["type"] not in ("result", "error"):
        pass
open(out, "w").write(text)
"""


def boxes_memory(sitting: Sitting, app: App, sha: str, pixels: np.ndarray, boxes: int) -> dict:
    """Row 12: 16 boxes on the 4000×3000 image (embedding cached); the server's peak extra RSS.

    Stock predict_torch with the same boxes is measured the same way, for reference.
    """
    height, width = pixels.shape[:2]
    rng = np.random.default_rng(1)
    corners = rng.uniform(0, 0.6, (boxes, 2)) * (width, height)
    sizes = rng.uniform(0.1, 0.4, (boxes, 2)) * (width, height)
    boxes_xyxy = np.concatenate([corners, corners + sizes], 1).astype(np.float32)
    prompts = [{"box": {"x": float(x0), "y": float(y0), "width": float(x1 - x0), "height": float(y1 - y0)}}
               for x0, y0, x1, y1 in boxes_xyxy]
    out = sitting.work / "boxes-result.json"
    request = json.dumps({"image_sha256": sha, "prompts": prompts})
    command = [sys.executable, "-c", ONE_REQUEST, f"ws://127.0.0.1:{app.port}/", request, str(out)]
    server_mb = peak_extra_rss_mb(lambda: subprocess.run(command, check=True, timeout=600))
    text = out.read_text()
    result = json.loads(text)
    assert result["type"] == "result" and len(result["masks"]) == boxes and result["cached_embedding"], result["type"]

    def stock() -> None:
        with torch.inference_mode():
            transformed = sitting.raw.transform.apply_boxes_torch(torch.as_tensor(boxes_xyxy), (height, width))
            sitting.raw.predict_torch(None, None, boxes=transformed, multimask_output=False)

    stock_mb = peak_extra_rss_mb(stock)  # sitting.raw still holds this image's embedding (row 11)
    timings = result["timings"]
    return {"boxes": boxes, "width": width, "height": height, "cpu": cpu_flags(), "peak_extra_rss_mb": server_mb,
            "stock_peak_extra_rss_mb": stock_mb, "timings": timings,
            "masks_over_decoder": timings["rle_ms"] / timings["decode_ms"],
            "result_bytes": len(text.encode()), "result_text": text}


def prepare_then_click(sitting: Sitting, app: App, images_: int, later: int) -> dict:
    """Row 13: `prompts: []` on a new image, then its first click and `later` more, on one session."""
    firsts, laters = [], []
    with session(f"ws://127.0.0.1:{app.port}/", timeout=600) as sess:
        for index in range(images_ + 1):  # image 0 warms up and is not counted
            url, pixels = sitting.new_photo(640, 480)
            sha = open_image(sess, url)
            points = click_points(640, 480, later + 1, seed=index)
            clicks = [click(sess, {"image_sha256": sha, "prompts": [point_prompt(x, y)]}).ms for x, y in points]
            if index:
                firsts.append(clicks[0])
                laters.append(statistics.median(clicks[1:]))
    first, rest = statistics.median(firsts), statistics.median(laters)
    return {"images": images_, "later_clicks_per_image": later, "first_ms": firsts, "later_p50_ms": laters,
            "first_p50_ms": first, "later_ms": rest, "ratio": first / rest}


def superseding(app: App, sha: str, requests: int, gap_s: float) -> dict:
    """Row 14: `requests` clicks `gap_s` apart on one session, as a dragged point sends them."""
    answers: dict[str, dict] = {}
    ids: set[str] = set()
    with session(f"ws://127.0.0.1:{app.port}/", timeout=600) as sess:
        started = time.monotonic()
        for index in range(requests):
            time.sleep(max(0.0, started + index * gap_s - time.monotonic()))
            sess.send({"image_sha256": sha, "prompts": [point_prompt(100 + 10 * index, 200)], "keep_open": True,
                       "client_ref": f"drag-{index}"})
        while len(answers) < requests:
            message = sess.next()
            if message.get("id"):
                ids.add(message["id"])
            if message["type"] in ("result", "error"):
                answers[message["client_ref"]] = message
    finals = [answers[f"drag-{index}"] for index in range(requests)]

    def all_terminal() -> bool:
        records = [app.store.get(job_id) for job_id in ids]
        return all(r is not None and jobs.is_terminal(r) and not jobs.order_violations(r) for r in records)

    return {
        "requests": requests, "gap_ms": gap_s * 1000, "records": len(ids),
        "answers": [m["type"] if m["type"] == "result" else m["code"] for m in finals],
        "results": sum(m["type"] == "result" for m in finals),
        "superseded": sum(m.get("code") == "superseded" for m in finals),
        "last_is_the_result": finals[-1]["type"] == "result",
        "records_terminal": wait_for(all_terminal, timeout=30),
    }


def deflate_cost(text: str, repeats: int = 5) -> dict:
    """What permessage-deflate does to one message: websockets' own, and CAP's server (server/compression.py).

    Both with the parameters websockets' serve() and connect() agree on by
    default: window 2**12 both ways, memLevel 5, context takeover (a fresh
    context here, as for a session's first result); CAP's server at zlib's
    level 1 (COMPRESS_LEVEL), websockets' at the default.
    """
    data = text.encode()

    def timed(work) -> tuple[float, Frame]:
        started = time.perf_counter()
        frame = work()
        return (time.perf_counter() - started) * 1000, frame

    compress, inflate, cap = [], [], []
    for _ in range(repeats):
        ms, deflated = timed(lambda: PerMessageDeflate(*DEFLATE_DEFAULTS).encode(Frame(Opcode.TEXT, data)))
        compress.append(ms)
        ms, sent = timed(lambda: SizeAwareDeflate(*CAP_DEFLATE).encode(Frame(Opcode.TEXT, data)))
        cap.append(ms)
        inflate.append(timed(lambda: PerMessageDeflate(*DEFLATE_DEFAULTS).decode(deflated, max_size=None))[0])
    return {"bytes": len(data), "deflated_bytes": len(deflated.data), "compress_ms": statistics.median(compress),
            "inflate_ms": statistics.median(inflate), "cap_compresses": sent.rsv1, "cap_encode_ms": statistics.median(cap)}


# A click drawn on a 1280-pixel-wide canvas, on the 4000×3000 photograph.
CANVAS_SCALE = 0.32


def clicks(sitting: Sitting, runs: int) -> dict:
    """Rows 10 to 14 on one server (SQLite), with the stock predictor on the same weights beside it."""
    app = sitting.start_app()
    try:
        small = clicks_against_stock(sitting, app, sitting.new_photo(640, 480), runs)
        big_image = sitting.new_photo(4000, 3000)
        big = clicks_against_stock(sitting, app, big_image, runs, scale=CANVAS_SCALE)
        memory = boxes_memory(sitting, app, big["sha256"], big_image[1], 16)
        first = prepare_then_click(sitting, app, images_=3, later=8)
        drag = superseding(app, small["sha256"], 10, 0.020)
    finally:
        app.stop()
    compression = {name: deflate_cost(row.pop("result_text"))
                   for name, row in (("click_640x480", small), ("click_4000x3000", big), ("boxes_4000x3000", memory))}
    return {"click_small": small, "click_big": big, "boxes_memory": memory, "prepare_then_click": first,
            "superseding": drag, "compression": compression}
