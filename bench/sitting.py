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
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from segment_anything import SamPredictor, sam_model_registry
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from bench import plot
from bench.burst import burst
from harness import image_files
from harness.client import Session, exchange, session
from harness.http_server import ImageHTTPServer
from harness.memory import release_free_memory, rss_bytes
from harness.tiny_sam import build_tiny_sam
from harness.waiting import wait_for
from server import images, jobs, masks
from server.compression import SizeAwareDeflate
from server.config import SAM1_TYPES, Settings, checkpoint_name
from server.main import App, production_model_loader
from server.models.sam1 import SamModel, load_sam
from server.prompts import Point, Prompt
from server.sam_model import CachingModel, Embedding, Precision, load_model
from server.store.sqlite import SQLiteStore

RESULTS = Path(__file__).parent / "results"
DEFLATE_DEFAULTS = (False, False, 12, 12, {"memLevel": 5})  # what websockets' serve() and connect() agree on
BOX = {"x": 100, "y": 80, "width": 300, "height": 200}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def xyxy(box: dict) -> np.ndarray:
    return np.array([[box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"]]], np.float32)


def tiny_model_loader(settings: Settings):
    """The tiny random SAM, as the App's model loader (the production one reads a checkpoint)."""
    return lambda: SamModel(build_tiny_sam(), "tiny", settings.embedding_cache_size)


class Sitting:
    """The model, the image server and the figures of one run."""

    def __init__(self, mode: str, runs: int):
        self.mode, self.runs = mode, runs
        self.work = Path(tempfile.mkdtemp(prefix="cap-bench-"))
        self.images = ImageHTTPServer().start()
        self._image_count = 0
        self.checkpoint = self.work / "sam_vit_b_random.pth"  # written in full mode only
        if mode == "quick":
            self.model_type = "tiny"
            self.raw_sam = build_tiny_sam()
            self.load_model = tiny_model_loader
        else:
            self.model_type = "vit_b"
            torch.manual_seed(0)
            torch.save(sam_model_registry["vit_b"]().state_dict(), self.checkpoint)
            self.raw_sam = load_sam("vit_b", self.checkpoint, "cuda" if torch.cuda.is_available() else "cpu")
            self.load_model = production_model_loader
        self.raw = SamPredictor(self.raw_sam)

    def settings(self, **overrides) -> Settings:
        base = dict(
            host="127.0.0.1", port=0, sqlite_path=self.work / f"cap-{time.monotonic_ns()}.sqlite3",
            image_dir=self.work / "images", allow_private_urls=True, sam_model_type="vit_b",
            sam_checkpoint=self.checkpoint, log_level="WARNING",
        )
        return Settings(**{**base, **overrides})

    def start_app(self, store=None, load_model=None, **overrides) -> App:
        settings = self.settings(**overrides)
        app = App(settings, store or SQLiteStore(settings.sqlite_path), (load_model or self.load_model)(settings))
        app.start()
        assert app.processor.ready.wait(600), "the model never loaded"
        return app

    def new_image(self) -> tuple[str, np.ndarray]:
        """A distinct 640×480-ish JPEG (cold for the cache); its URL and decoded pixels."""
        self._image_count += 1
        data = image_files.jpeg_rgb(640 + self._image_count % 50, 480 + self._image_count // 50)
        path = f"/img-{self._image_count}.jpg"
        self.images.add(path, data, content_type="image/jpeg")
        return self.images.url(path), images.decode(data, max_pixels=10**8).pixels

    def new_photo(self, width: int, height: int) -> tuple[str, np.ndarray]:
        """A JPEG of this size that compresses like a photograph; its URL and decoded pixels."""
        self._image_count += 1
        data = image_files.jpeg_photo(width, height, seed=self._image_count)
        path = f"/photo-{self._image_count}.jpg"
        self.images.add(path, data, content_type="image/jpeg")
        return self.images.url(path), images.decode(data, max_pixels=10**8).pixels

    def raw_ms(self, pixels: np.ndarray, box: dict) -> float:
        started = time.perf_counter()
        with torch.inference_mode():
            self.raw.set_image(pixels)
            boxes = self.raw.transform.apply_boxes_torch(torch.as_tensor(xyxy(box)), pixels.shape[:2])
            self.raw.predict_torch(None, None, boxes=boxes, multimask_output=False)
        return (time.perf_counter() - started) * 1000


def request(app: App, url: str, box: dict = BOX, timeout: float = 600) -> tuple[float, dict]:
    started = time.perf_counter()
    outcome = exchange(f"ws://127.0.0.1:{app.port}/", {"image_url": url, "boxes": [box]}, timeout=timeout)
    elapsed = (time.perf_counter() - started) * 1000
    assert outcome.types == ["queued", "status", "result"], outcome.messages
    return elapsed, outcome.last


# --- rows 1, 2, 3 and 5: one client at a time ------------------------------------------


def one_at_a_time(sitting: Sitting, app: App, store_name: str) -> dict:
    """Alternate raw model and server on the same fresh image; then the same image, a new box."""
    raw, e2e, hit, queue, added, download, rle = [], [], [], [], [], [], []
    for run in range(sitting.runs + 1):  # run 0 warms both sides and is not counted
        url, pixels = sitting.new_image()
        raw_ms = sitting.raw_ms(pixels, BOX)
        e2e_ms, result = request(app, url)
        hit_ms, again = request(app, url, {"x": 20, "y": 30, "width": 150, "height": 100})
        assert not result["cached_embedding"] and again["cached_embedding"]
        if run:
            raw.append(raw_ms)
            e2e.append(e2e_ms)
            hit.append(hit_ms)
            queue.append(result["timings"]["queue_ms"])
            added.append(e2e_ms - result["timings"]["encode_ms"] - result["timings"]["decode_ms"])
            download.append(result["timings"]["download_ms"])
            rle.append(result["timings"]["rle_ms"])
    overhead = [s - r for s, r in zip(e2e, raw)]
    return {
        "store": store_name, "runs": sitting.runs,
        "raw_ms": raw, "end_to_end_ms": e2e, "cache_hit_ms": hit, "insert_to_claim_ms": queue,
        "raw_p50_ms": statistics.median(raw), "end_to_end_p50_ms": statistics.median(e2e),
        "ratio": statistics.median(e2e) / statistics.median(raw),
        "overhead_p50_ms": statistics.median(overhead), "overhead_p99_ms": percentile(overhead, 99),
        # The same request's end to end minus its own encoder and decoder time: what CAP adds, without
        # the run-to-run spread of the encoder (±100 ms on a shared CPU) that the paired difference carries.
        "added_p50_ms": statistics.median(added), "added_p99_ms": percentile(added, 99),
        "download_p50_ms": statistics.median(download), "rle_p50_ms": statistics.median(rle),
        "cache_hit_p50_ms": statistics.median(hit),
        "cache_hit_ratio": statistics.median(hit) / statistics.median(e2e),
        "insert_to_claim_p50_ms": statistics.median(queue), "insert_to_claim_p99_ms": percentile(queue, 99),
    }


def cosmos_one_at_a_time(sitting: Sitting) -> dict | None:
    import urllib3

    from server.store.cosmos import CosmosStore
    from harness.cosmos_emulator import KEY, CosmosEmulator

    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the emulator's self-signed certificate

    try:
        emulator = CosmosEmulator().start()
    except Exception as exc:  # npm ci not run, or node missing
        print(f"skipping the Cosmos DB emulator: {exc}")
        return None
    try:
        store = CosmosStore(emulator.endpoint, KEY, database="bench", queue_container="Queue",
                            output_container="SAMOutput", verify_tls=False, timeout=10)
        app = sitting.start_app(store=store, poll_interval=1.0)
        try:
            return one_at_a_time(sitting, app, "cosmos-emulator")
        finally:
            app.stop()
    finally:
        emulator.stop()


# --- row 4: concurrent clients ---------------------------------------------------------


def concurrent(sitting: Sitting, clients: int) -> dict:
    """A burst of distinct images against the raw model on the same images, just before it."""
    app = sitting.start_app(max_queue=4 * clients)
    try:
        images_ = [sitting.new_image() for _ in range(clients)]
        raw_seconds = sum(sitting.raw_ms(pixels, BOX) for _, pixels in images_) / 1000
        latencies: list[float] = [0.0] * clients

        def client(index: int) -> None:
            latencies[index] = request(app, images_[index][0])[0]

        elapsed = burst(client, clients)
        gaps = processor_gaps(app)
    finally:
        app.stop()
    achieved, limit = clients / elapsed, clients / raw_seconds
    return {"clients": clients, "seconds": elapsed, "raw_seconds": raw_seconds, "images_per_s": achieved,
            "model_limit_images_per_s": limit, "ratio": achieved / limit,
            "latency_p50_ms": statistics.median(latencies), "latency_p99_ms": percentile(latencies, 99), **gaps}


def processor_gaps(app: App) -> dict:
    """From the records of a busy run: what writing a result costs, and the idle time between jobs.

    write: `processed` − `processing` − encoder − decoder (RLE, the SAMOutput
    write, the record update). gap: the next record's `processing` − this
    one's `processed` (waking, the claim query, the claim write).
    """
    records = sorted(app.store.records(), key=lambda r: r["processing"])
    stamp = lambda record, field: jobs.parse_time(record[field]).timestamp() * 1000  # noqa: E731
    writes, gaps = [], []
    for record, following in zip(records, records[1:] + [None]):
        timings = app.store.get_output(record["id"])["timings"]
        spent = stamp(record, "processed") - stamp(record, "processing")
        writes.append(spent - timings["encode_ms"] - timings["decode_ms"])
        if following is not None:
            gaps.append(stamp(following, "processing") - stamp(record, "processed"))
    return {"write_result_p50_ms": statistics.median(writes), "write_result_max_ms": max(writes),
            "between_jobs_p50_ms": statistics.median(gaps), "between_jobs_max_ms": max(gaps)}


# --- row 6: memory over 500 requests ---------------------------------------------------


def memory_growth(sitting: Sitting, requests: int) -> dict:
    """Always the tiny model: 500 full-size passes would take most of an hour on a CPU."""
    app = sitting.start_app(load_model=tiny_model_loader)
    urls = [sitting.new_image()[0] for _ in range(40)]  # more distinct images than the cache holds
    samples = {}
    try:
        for n in range(1, requests + 1):
            request(app, urls[n % len(urls)], {"x": n % 300, "y": 10, "width": 100, "height": 100})
            if n in (50, requests):
                samples[n] = rss_bytes()
    finally:
        app.stop()
    return {"requests": requests, "rss_after_50_mb": samples[50] / 2**20,
            "rss_after_last_mb": samples[requests] / 2**20, "ratio": samples[requests] / samples[50]}


# --- row 7: idle connections -----------------------------------------------------------


def upgrade(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head[:100]
    return sock


def ping_ms(port: int) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=10) as response:
        assert response.read() == b"pong"
    return (time.perf_counter() - started) * 1000


def idle_connections(sitting: Sitting, count: int) -> dict:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * count + 256)), hard))
    app = sitting.start_app(request_timeout=600, max_connections=count + 64)
    held: list[socket.socket] = []
    try:
        for _ in range(20):
            ping_ms(app.port)
        before = rss_bytes()
        for _ in range(count):
            held.append(upgrade(app.port))
        time.sleep(1.0)
        pings = [ping_ms(app.port) for _ in range(200)]
        after = rss_bytes()
    finally:
        for sock in held:
            sock.close()
        app.stop()
    return {"connections": count, "extra_rss_per_connection_kb": (after - before) / count / 1024,
            "ping_p50_ms": statistics.median(pings), "ping_p99_ms": percentile(pings, 99),
            "note": "client sockets live in the same process; their RSS is counted too (an upper bound)"}


# --- row 8: the decoder, stock and CAP's ----------------------------------------------------


def stock_rle(masks_nchw: torch.Tensor) -> list:
    """The RLE path before this work: a uint8 copy, then a Fortran-ordered copy."""
    flat = masks_nchw.reshape(-1, *masks_nchw.shape[-2:])
    return mask_utils.encode(np.asfortranarray(flat.to(torch.uint8).cpu().numpy().transpose(1, 2, 0)))


def decoder_per_box(sitting: Sitting, boxes: int, repeats: int) -> dict:
    _, pixels = sitting.new_image()
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 300, (boxes, 2))
    boxes_xyxy = np.concatenate([corners, corners + rng.uniform(40, 300, (boxes, 2))], 1).astype(np.float32)
    model = SamModel(sitting.raw_sam, sitting.model_type)
    box_prompts = [Prompt(box=tuple(map(float, box))) for box in boxes_xyxy]
    with torch.inference_mode():
        [embedding] = model.embed([pixels])
        sitting.raw.set_image(pixels)
        transformed = sitting.raw.transform.apply_boxes_torch(torch.as_tensor(boxes_xyxy), pixels.shape[:2])

        def stock() -> None:
            found, _, _ = sitting.raw.predict_torch(None, None, boxes=transformed, multimask_output=False)
            stock_rle(found)

        def cap() -> None:
            low_res, scores = model.decode(embedding, box_prompts, multimask=False)
            masks.wire_masks(low_res, scores, embedding.postprocess, [{}] * boxes, False)

        times: dict[str, list[float]] = {"stock": [], "cap": []}
        for _ in range(repeats + 1):
            for name, run in (("stock", stock), ("cap", cap)):  # alternated, so noise hits both alike
                started = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - started) * 1000 / boxes)
    stock_ms, cap_ms = statistics.median(times["stock"][1:]), statistics.median(times["cap"][1:])
    return {"boxes": boxes, "stock_ms_per_box": stock_ms, "cap_ms_per_box": cap_ms, "ratio": cap_ms / stock_ms}


# --- row 9: GPU only -----------------------------------------------------------------------


def gpu_encoder(repeats: int = 10) -> dict | None:
    if not torch.cuda.is_available():
        return None
    sam = sam_model_registry["vit_h"]().cuda().eval()
    figures = {}
    for batch in (1, 4):
        inputs = torch.randn(batch, 3, 1024, 1024, device="cuda")
        for precision in ("fp32", "bf16"):
            autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")
            with torch.inference_mode(), autocast:
                sam.image_encoder(inputs)
                torch.cuda.synchronize()
                started = time.perf_counter()
                for _ in range(repeats):
                    sam.image_encoder(inputs)
                torch.cuda.synchronize()
            figures[f"batch{batch}_{precision}_images_per_s"] = batch * repeats / (time.perf_counter() - started)
    figures["device"] = torch.cuda.get_device_name()
    return figures


# --- rows 10 to 14: clicks on a session ---------------------------------------------------


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


def clicks_against_stock(sitting: Sitting, app: App, image: tuple[str, np.ndarray], runs: int) -> dict:
    """Rows 10 and 11: a click on a session against stock predict, interleaved A B C A B C ….

    A: a session that negotiated permessage-deflate (any browser does); B: the
    stock predictor, on the same point, after set_image on the same image;
    C: a session whose client offers no compression. The first round warms
    all three and is not counted.
    """
    url, pixels = image
    height, width = pixels.shape[:2]
    times: dict[str, list[float]] = {"cap": [], "stock": [], "cap_uncompressed": []}
    parts: dict[str, list[float]] = {"queue_ms": [], "download_ms": [], "decode_ms": [], "rle_ms": [],
                                     "server_rest_ms": [], "client_ms": []}
    ws = f"ws://127.0.0.1:{app.port}/"
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
                assert a.result["cached_embedding"] and c.result["cached_embedding"]
                if not run:
                    continue
                times["cap"].append(a.ms)
                times["stock"].append(stock_ms)
                times["cap_uncompressed"].append(c.ms)
                timings = a.result["timings"]
                before_rest = sum(timings[name] for name in ("queue_ms", "download_ms", "decode_ms", "rle_ms"))
                for name in ("queue_ms", "download_ms", "decode_ms", "rle_ms"):
                    parts[name].append(timings[name])
                parts["server_rest_ms"].append(timings["total_ms"] - before_rest)
                parts["client_ms"].append(a.ms - timings["total_ms"])
    p50 = {name: statistics.median(values) for name, values in times.items()}
    return {
        "width": width, "height": height, "runs": runs, "sha256": sha, **times,
        "cap_p50_ms": p50["cap"], "stock_p50_ms": p50["stock"], "cap_uncompressed_p50_ms": p50["cap_uncompressed"],
        "ratio": p50["cap"] / p50["stock"], "ratio_uncompressed": p50["cap_uncompressed"] / p50["stock"],
        "breakdown_p50_ms": {name: statistics.median(values) for name, values in parts.items()},
        "result_bytes": len(a.text.encode()), "result_text": a.text,
    }


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
    return {"boxes": boxes, "width": width, "height": height, "peak_extra_rss_mb": server_mb,
            "stock_peak_extra_rss_mb": stock_mb, "timings": result["timings"],
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
    context here, as for a session's first result).
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
        ms, sent = timed(lambda: SizeAwareDeflate(*DEFLATE_DEFAULTS).encode(Frame(Opcode.TEXT, data)))
        cap.append(ms)
        inflate.append(timed(lambda: PerMessageDeflate(*DEFLATE_DEFAULTS).decode(deflated, max_size=None))[0])
    return {"bytes": len(data), "deflated_bytes": len(deflated.data), "compress_ms": statistics.median(compress),
            "inflate_ms": statistics.median(inflate), "cap_compresses": sent.rsv1, "cap_encode_ms": statistics.median(cap)}


def clicks(sitting: Sitting, runs: int) -> dict:
    """Rows 10 to 14 on one server (SQLite), with the stock predictor on the same weights beside it."""
    app = sitting.start_app()
    try:
        small = clicks_against_stock(sitting, app, sitting.new_photo(640, 480), runs)
        big_image = sitting.new_photo(4000, 3000)
        big = clicks_against_stock(sitting, app, big_image, runs)
        memory = boxes_memory(sitting, app, big["sha256"], big_image[1], 16)
        first = prepare_then_click(sitting, app, images_=3, later=8)
        drag = superseding(app, small["sha256"], 10, 0.020)
    finally:
        app.stop()
    compression = {name: deflate_cost(row.pop("result_text"))
                   for name, row in (("click_640x480", small), ("click_4000x3000", big), ("boxes_4000x3000", memory))}
    return {"click_small": small, "click_big": big, "boxes_memory": memory, "prepare_then_click": first,
            "superseding": drag, "compression": compression}


# --- row 15: the model families ------------------------------------------------------------

FAMILY_TYPES = {
    "quick": ("vit_b", "sam2.1_hiera_t"),
    "full": ("vit_b", "vit_l", "sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l"),
}
BF16 = Precision(torch.bfloat16, "the sitting's bf16 column")


def random_checkpoint(folder: Path, model_type: str) -> Path:
    """`model_type` with random weights, saved in Meta's layout under Meta's file name."""
    torch.manual_seed(0)
    path = folder / checkpoint_name(model_type)
    if model_type in SAM1_TYPES:
        torch.save(sam_model_registry[model_type]().state_dict(), path)
    else:
        from server.models.sam2 import build

        torch.save({"model": build(model_type).state_dict()}, path)
    return path


def reference_predictor(model: CachingModel):
    """The family's own predictor on the model's weights."""
    if isinstance(model, SamModel):
        return SamPredictor(model.sam)
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    return SAM2ImagePredictor(model.model)  # type: ignore[attr-defined]


def timed_ms(run) -> float:
    started = time.perf_counter()
    run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - started) * 1000


def family_row(sitting: Sitting, model_type: str, repeats: int) -> dict:
    """One model type: encoder fp32 and bf16 alternated, a click on a cached image, end to end ÷ its predictor (fp32)."""
    checkpoint = random_checkpoint(sitting.work, model_type)
    model = load_model(model_type, checkpoint, "auto", "fp32", cache_size=8)
    checkpoint.unlink()  # up to 2.5 GB
    fp32, memory = model.precision, model.memory()
    _, pixels = sitting.new_image()
    encoder: dict[str, list[float]] = {"fp32": [], "bf16": []}
    embeddings = {}
    with torch.inference_mode():
        for run in range(repeats + 1):  # run 0 warms both up and is not counted
            for name, precision in (("fp32", fp32), ("bf16", BF16)):
                model.precision = precision
                elapsed = timed_ms(lambda: embeddings.__setitem__(name, model.embed([pixels])[0]))
                if run:
                    encoder[name].append(elapsed)
        model.precision = fp32
        click = [Prompt(points=(Point(300, 200, 1),))]

        def one_click(autocast) -> None:
            with autocast:
                low_res, scores = model.decode(embeddings["fp32"], click, multimask=True)
            masks.wire_masks(low_res, scores, embeddings["fp32"].postprocess, [{}], True)

        clicks: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for run in range(5 * repeats + 1):
            for name, precision in (("fp32", fp32), ("bf16", BF16)):
                elapsed = timed_ms(lambda: one_click(precision.autocast(model.device)))
                if run:
                    clicks[name].append(elapsed)
        drift = bf16_drift(model, embeddings["fp32"], embeddings["bf16"])

    predictor = reference_predictor(model)

    def raw(pixels: np.ndarray) -> None:
        with torch.inference_mode():
            predictor.set_image(pixels)
            predictor.predict(box=xyxy(BOX)[0], multimask_output=False)

    app = sitting.start_app(load_model=lambda settings: lambda: model, sam_model_type=model_type)
    raw_ms, e2e_ms = [], []
    try:
        for run in range(repeats + 1):
            url, pixels = sitting.new_image()
            raw_elapsed = timed_ms(lambda: raw(pixels))
            e2e_elapsed = request(app, url)[0]
            if run:
                raw_ms.append(raw_elapsed)
                e2e_ms.append(e2e_elapsed)
    finally:
        app.stop()
    fp32_ms, bf16_ms = statistics.median(encoder["fp32"]), statistics.median(encoder["bf16"])
    return {
        "model_type": model_type, "device": str(model.device),
        "weights_mb": memory.weights_bytes / 1e6, "embedding_mb": memory.embedding_bytes / 1e6,
        "encoder_fp32_ms": fp32_ms, "encoder_bf16_ms": bf16_ms, "bf16_ratio": bf16_ms / fp32_ms,
        "click_ms": statistics.median(clicks["fp32"]), "click_bf16_decoder_ms": statistics.median(clicks["bf16"]),
        **drift, "raw_ms": statistics.median(raw_ms),
        "end_to_end_ms": statistics.median(e2e_ms), "ratio": statistics.median(e2e_ms) / statistics.median(raw_ms),
    }


def bf16_drift(model: CachingModel, fp32: Embedding, bf16: Embedding) -> dict:
    """How far a bf16 encoder moves the masks and scores (decoder in fp32 for both), over 3 prompts × 3 candidates.

    Differing pixels are counted against the pixels in either mask; random
    weights, so this measures arithmetic, not quality.
    """
    height, width = fp32.postprocess.original_size
    prompts = [
        Prompt(box=(width * 0.2, height * 0.2, width * 0.7, height * 0.8)),
        Prompt(points=(Point(width / 2, height / 2, 1),)),
        Prompt(box=(10.0, 10.0, width / 2, height / 2), points=(Point(width / 4, height / 4, 1), Point(5, 5, 0))),
    ]
    found = []
    for embedding in (fp32, bf16):
        low_res, scores = model.decode(embedding, prompts, multimask=True)
        wire = masks.wire_masks(low_res.float().cpu(), scores.float().cpu(), embedding.postprocess, [{}] * 3, True)
        found.append(([masks.decode(m["segmentation"]).astype(bool) for group in wire for m in group],
                      scores.float().cpu().flatten()))
    (masks_32, scores_32), (masks_16, scores_16) = found
    differing = sum(int((a != b).sum()) for a, b in zip(masks_32, masks_16))
    either = sum(int((a | b).sum()) for a, b in zip(masks_32, masks_16))
    return {"drift_pixels": differing / max(either, 1), "drift_score_max": float((scores_32 - scores_16).abs().max())}


def model_families(sitting: Sitting, repeats: int) -> list[dict]:
    return [family_row(sitting, model_type, repeats) for model_type in FAMILY_TYPES[sitting.mode]]


def families_lines(families: list[dict]) -> list[str]:
    """Row 15's table lines: one per model type, then SAM 2.1 hiera_t against vit_b."""
    lines = [
        f"| 15 | {f['model_type']} on {f['device']}: weights {fmt(f['weights_mb'], 0)} MB, "
        f"{fmt(f['embedding_mb'], 1)} MB per cached image | encoder fp32 → bf16; one click (decoder and RLE); end to "
        "end ÷ own predictor (fp32); masks and scores, bf16 encoder against fp32 | "
        f"{fmt(f['encoder_fp32_ms'], 0)} → {fmt(f['encoder_bf16_ms'], 0)} ms ({fmt(f['bf16_ratio'], 2)}×); "
        f"{fmt(f['click_ms'], 1)} ms ({fmt(f['click_bf16_decoder_ms'], 1)} with a bf16 decoder); "
        f"{fmt(f['ratio'], 3)} ({fmt(f['end_to_end_ms'], 0)} ms); bf16 drift: {fmt(100 * f['drift_pixels'], 2)} % of "
        f"mask pixels, scores ±{f['drift_score_max']:.1e} | bf16 ≤ 0.6 × fp32 | {verdict(f['bf16_ratio'] <= 0.6)} |"
        for f in families
    ]
    by_type = {f["model_type"]: f for f in families}
    if "vit_b" in by_type and "sam2.1_hiera_t" in by_type:
        tiny, base = by_type["sam2.1_hiera_t"], by_type["vit_b"]
        ratio = tiny["end_to_end_ms"] / base["end_to_end_ms"]
        lines.append(
            f"| 15 | new image, sam2.1_hiera_t ÷ vit_b | end to end, both fp32 | {fmt(ratio, 3)} "
            f"({fmt(tiny['end_to_end_ms'], 0)} / {fmt(base['end_to_end_ms'], 0)} ms) | ≤ 0.35 | {verdict(ratio <= 0.35)} |"
        )
    return lines


# --- the sitting ---------------------------------------------------------------------------


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
        }
    finally:
        sitting.images.stop()
    return {
        "mode": mode, "model": sitting.model_type, "machine": platform.node(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
        "tcmalloc": "tcmalloc" in os.environ.get("LD_PRELOAD", ""), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": time.perf_counter() - started, "rows": rows,
    }


def fmt(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def markdown(report: dict) -> str:
    rows = report["rows"]
    sqlite, cosmos, conc = rows["one_at_a_time_sqlite"], rows["one_at_a_time_cosmos"], rows["concurrent"]
    mem, idle, dec = rows["memory"], rows["idle_connections"], rows["decoder"]
    lines = [
        f"# Benchmark sitting: {report['mode']} mode, model {report['model']}",
        "",
        f"{report['date']} on `{report['machine']}`: {report['cpu_count']} cores, torch threads "
        f"{report['torch_threads']}, CUDA {report['cuda']}, tcmalloc {report['tcmalloc']}; "
        f"{report['seconds']:.0f} s in all. Command: `.venv/bin/python -m bench.sitting --mode {report['mode']}`.",
        "",
        "| # | scenario | figure | result | target | verdict |",
        "|---|---|---|---|---|---|",
        f"| 1 | raw model | set_image + predict_torch, p50 | {fmt(sqlite['raw_p50_ms'], 1)} ms | the limit | |",
        f"| 2 | one client at a time, SQLite | end to end ÷ row 1; overhead p50 / p99 | {fmt(sqlite['ratio'], 3)}; "
        f"{fmt(sqlite['overhead_p50_ms'], 1)} / {fmt(sqlite['overhead_p99_ms'], 1)} ms (in-request: "
        f"{fmt(sqlite['added_p50_ms'], 1)} / {fmt(sqlite['added_p99_ms'], 1)} ms) | ≤ 1.05; p50 ≤ 10 ms | "
        f"{verdict(sqlite['ratio'] <= 1.05 and sqlite['added_p50_ms'] <= 10)} |",
    ]
    if cosmos:
        lines.append(
            f"| 2 | one client at a time, Cosmos emulator | end to end ÷ row 1; overhead p50 / p99 | "
            f"{fmt(cosmos['ratio'], 3)}; {fmt(cosmos['overhead_p50_ms'], 1)} / {fmt(cosmos['overhead_p99_ms'], 1)} ms"
            f" (in-request: {fmt(cosmos['added_p50_ms'], 1)} / {fmt(cosmos['added_p99_ms'], 1)} ms)"
            f" | ≤ 1.05; p50 ≤ 30 ms | {verdict(cosmos['ratio'] <= 1.05 and cosmos['added_p50_ms'] <= 30)} |"
        )
    lines += [
        f"| 3 | same image, new box (cache hit) | end to end ÷ row 2 | {fmt(sqlite['cache_hit_ratio'], 3)} "
        f"({fmt(sqlite['cache_hit_p50_ms'], 1)} ms) | ≤ 0.10 with vit_b on CPU | {verdict(sqlite['cache_hit_ratio'] <= 0.10)} |",
        f"| 4 | {conc['clients']} concurrent clients, distinct images | images/s ÷ (1 / row 1) | "
        f"{fmt(conc['ratio'], 3)} ({fmt(conc['images_per_s'], 2)} of {fmt(conc['model_limit_images_per_s'], 2)} images/s) "
        f"| ≥ 0.95 | {verdict(conc['ratio'] >= 0.95)} |",
        f"| 5 | insert to claim (wake-up) | p50 / p99 | {fmt(sqlite['insert_to_claim_p50_ms'])} / "
        f"{fmt(sqlite['insert_to_claim_p99_ms'])} ms | p50 ≤ 2 ms | {verdict(sqlite['insert_to_claim_p50_ms'] <= 2)} |",
        f"| 6 | {mem['requests']} sequential requests (tiny model) | RSS after {mem['requests']} ÷ RSS after 50 | "
        f"{fmt(mem['ratio'], 3)} ({fmt(mem['rss_after_50_mb'], 0)} → {fmt(mem['rss_after_last_mb'], 0)} MB) | ≤ 1.05 "
        f"| {verdict(mem['ratio'] <= 1.05)} |",
        f"| 7 | {idle['connections']} idle WebSocket connections | extra RSS per connection; /ping p99 | "
        f"{fmt(idle['extra_rss_per_connection_kb'], 0)} KB; {fmt(idle['ping_p99_ms'])} ms | ≤ 300 KB; ≤ 50 ms | "
        f"{verdict(idle['extra_rss_per_connection_kb'] <= 300 and idle['ping_p99_ms'] <= 50)} |",
        f"| 8 | {dec['boxes']} boxes on one image | decoder + RLE ms per box, stock → CAP | "
        f"{fmt(dec['stock_ms_per_box'])} → {fmt(dec['cap_ms_per_box'])} ({fmt(dec['ratio'], 3)}×) | report both | |",
    ]
    gpu = rows["gpu"]
    if gpu:
        lines.append(
            f"| 9 | vit_h encoder on {gpu['device']} | images/s, batch 1 / 4, fp32 → bf16 | "
            f"{fmt(gpu['batch1_fp32_images_per_s'])} → {fmt(gpu['batch1_bf16_images_per_s'])} / "
            f"{fmt(gpu['batch4_fp32_images_per_s'])} → {fmt(gpu['batch4_bf16_images_per_s'])} | report | |"
        )
    else:
        lines.append("| 9 | GPU encoder | images/s | not run: no CUDA device | report | |")
    lines += click_rows(rows["clicks"])
    if rows.get("families"):
        lines += families_lines(rows["families"])
    if report["mode"] == "quick":
        lines += ["", "Quick mode checks the harness: the tiny model runs in milliseconds, so the ratio targets "
                  "(set for vit_b) cannot be met by construction. Read its overheads in ms."]
    lines += ["", "Row 2's overhead is end to end minus row 1 on the same image (paired); \"in-request\" is end to end "
              "minus the server's own encoder and decoder time for that request, which the encoder's run-to-run spread "
              "does not blur; the verdict uses it. Of it, p50: download and decode of the 640×480 JPEG "
              f"{fmt(sqlite['download_p50_ms'], 1)} ms (SQLite) / {fmt(cosmos['download_p50_ms'], 1) if cosmos else '-'} ms "
              f"(emulator), RLE {fmt(sqlite['rle_p50_ms'], 1)} ms, insert to claim as row 5; the rest is the store "
              "writes and reads, JSON and the socket.", "", f"Row 4's per-request latency: p50 {fmt(conc['latency_p50_ms'], 0)} ms, p99 {fmt(conc['latency_p99_ms'], 0)} ms. "
              f"While it ran, writing a result (RLE, SAMOutput, record) took p50 {fmt(conc['write_result_p50_ms'], 1)} ms "
              f"(max {fmt(conc['write_result_max_ms'], 1)}), and the processor's gap from one record's `processed` to "
              f"the next one's `processing` was p50 {fmt(conc['between_jobs_p50_ms'], 1)} ms "
              f"(max {fmt(conc['between_jobs_max_ms'], 1)}). "
              f"Row 7's /ping p50: {fmt(idle['ping_p50_ms'])} ms; {idle['note']}.", ""]
    lines += click_notes(rows["clicks"])
    return "\n".join(lines)


def click_rows(clicks_: dict) -> list[str]:
    small, big, memory = clicks_["click_small"], clicks_["click_big"], clicks_["boxes_memory"]
    first, drag = clicks_["prepare_then_click"], clicks_["superseding"]
    drag_ok = drag["results"] == 1 and drag["superseded"] == drag["requests"] - 1 and drag["records_terminal"]
    rows = []
    for number, row, goal in ((10, small, 1.15), (11, big, 1.30)):
        rows.append(
            f"| {number} | click on a session, {row['width']}×{row['height']} JPEG | session click (by hash, cached) ÷ "
            f"stock `predict` after `set_image`, interleaved, p50 | {fmt(row['ratio'], 3)} ({fmt(row['cap_p50_ms'], 1)} / "
            f"{fmt(row['stock_p50_ms'], 1)} ms) | ≤ {goal:.2f} | {verdict(row['ratio'] <= goal)} |"
        )
    return rows + [
        f"| 12 | {memory['boxes']} boxes on the {memory['width']}×{memory['height']} image, by hash | peak extra RSS "
        f"of the request (stock `predict_torch`) | {fmt(memory['peak_extra_rss_mb'], 0)} MB "
        f"({fmt(memory['stock_peak_extra_rss_mb'], 0)} MB) | ≤ 300 MB | {verdict(memory['peak_extra_rss_mb'] <= 300)} |",
        f"| 13 | prepare (`prompts: []`), then first click | first click ÷ later clicks, p50 | {fmt(first['ratio'], 3)} "
        f"({fmt(first['first_p50_ms'], 1)} / {fmt(first['later_ms'], 1)} ms) | ≤ 1.2 | {verdict(first['ratio'] <= 1.2)} |",
        f"| 14 | superseding: {drag['requests']} requests {drag['gap_ms']:.0f} ms apart on one session, by hash | "
        f"results / `superseded`; every record terminal | {drag['results']} / {drag['superseded']}; "
        f"{'yes' if drag['records_terminal'] else 'no'} | 1 / {drag['requests'] - 1}; yes | {verdict(drag_ok)} |",
    ]


def click_notes(clicks_: dict) -> list[str]:
    small, big, memory = clicks_["click_small"], clicks_["click_big"], clicks_["boxes_memory"]
    lines = ["Rows 10 and 11, where a session click's time goes (p50, ms; `server rest` is `total_ms` less the parts "
             "before it: the SAMOutput write and the record's updates, waking the connection, building the JSON and "
             "compressing and sending it; `client` is the client's time less `total_ms`: the socket both ways, "
             "inflating and parsing the result):", "",
             "| row, image | click | stock | queue | download | decoder | upsample + RLE | server rest | client | "
             "result | click, client without compression |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for number, row in ((10, small), (11, big)):
        parts = row["breakdown_p50_ms"]
        lines.append(
            f"| row {number}, {row['width']}×{row['height']} | {fmt(row['cap_p50_ms'], 1)} | {fmt(row['stock_p50_ms'], 1)} | "
            + " | ".join(fmt(parts[name], 1) for name in ("queue_ms", "download_ms", "decode_ms", "rle_ms",
                                                          "server_rest_ms", "client_ms"))
            + f" | {row['result_bytes'] / 1024:,.0f} KiB | {fmt(row['cap_uncompressed_p50_ms'], 1)} "
            f"({fmt(row['ratio_uncompressed'], 3)}×) |"
        )
    lines += ["", "permessage-deflate as websockets negotiates it by default (window 2^12, memLevel 5), "
              "on the results above:", "",
              "| result | size | deflated | compress | inflate | CAP's server | its cost |", "|---|---|---|---|---|---|---|"]
    for name, cost in clicks_["compression"].items():
        lines.append(f"| {name.replace('_', ', ')} | {cost['bytes'] / 1024:,.0f} KiB | {cost['deflated_bytes'] / 1024:,.0f} KiB "
                     f"| {fmt(cost['compress_ms'], 1)} ms | {fmt(cost['inflate_ms'], 1)} ms | "
                     f"{'deflates it' if cost['cap_compresses'] else 'sends it as it is'} | {fmt(cost['cap_encode_ms'], 1)} ms |")
    first, drag = clicks_["prepare_then_click"], clicks_["superseding"]
    lines += ["", f"Row 12's request: decoder {fmt(memory['timings']['decode_ms'], 0)} ms, upsample + RLE "
              f"{fmt(memory['timings']['rle_ms'], 0)} ms, result {memory['result_bytes'] / 2**20:.1f} MiB; its client "
              "ran in a process of its own. Row 13: "
              f"first clicks {', '.join(fmt(ms, 1) for ms in first['first_ms'])} ms on {first['images']} images, "
              f"{first['later_clicks_per_image']} later clicks each. Row 14's answers in order: "
              f"{', '.join(drag['answers'])}.", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["quick", "full"], default="quick")
    parser.add_argument("--only", choices=["families", "clicks"], help="run only these rows and print them; no results file")
    args = parser.parse_args()
    if args.only == "clicks":
        sitting = Sitting(args.mode, runs=0)
        try:
            print(json.dumps(clicks(sitting, runs=30), indent=2))
        finally:
            sitting.images.stop()
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
