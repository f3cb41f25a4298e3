"""What every row of a sitting stands on: the model, the image server, the CAP servers it starts.

A `Sitting` holds the model under test (the tiny SAM in quick mode, vit_b
with random weights in full mode, loaded by the production loader), the
stock `SamPredictor` on the same weights for the raw figures, and a real
HTTP server for images; `start_app` starts a real CAP server in this
process (real sockets, a real SQLite file), and `start_server` one as users
run it, `python -m server` in a process of its own on the same checkpoint
(for `bench.request_path --server both`). `fmt` and `verdict` write the
figures in the results table.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from segment_anything import SamPredictor, sam_model_registry

from harness import image_files
from harness.client import Exchange, exchange
from harness.http_server import ImageHTTPServer
from harness.replicas import Replica
from harness.tiny_sam import build_tiny_sam
from server import images
from server.config import Settings
from server.main import App
from server.models.loading import production_model_loader
from server.models.sam1 import SamModel, load_sam
from server.store.sqlite import SQLiteStore

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

    def __init__(self, mode: str, runs: int, model_type: str = "vit_b", precision: str = "fp32"):
        """Full mode builds `model_type` (a SAM 1 type) with random weights; the server's encoder runs in
        `precision` (the decoder always runs in fp32), the stock predictor in fp32."""
        self.mode, self.runs, self.precision = mode, runs, precision
        self.work = Path(tempfile.mkdtemp(prefix="cap-bench-"))
        self.images = ImageHTTPServer().start()
        self._image_count = 0
        self.checkpoint = self.work / f"sam_{model_type}_random.pth"  # written in full mode, and by start_server
        if mode == "quick":
            self.model_type = "tiny"
            self.raw_sam = build_tiny_sam()
            self.load_model = tiny_model_loader
        else:
            self.model_type = model_type
            torch.manual_seed(0)
            torch.save(sam_model_registry[model_type]().state_dict(), self.checkpoint)
            self.raw_sam = load_sam(model_type, self.checkpoint, "cuda" if torch.cuda.is_available() else "cpu")
            self.load_model = production_model_loader
        self.raw = SamPredictor(self.raw_sam)

    def settings(self, **overrides) -> Settings:
        base = dict(
            host="127.0.0.1", port=0, sqlite_path=self.work / f"cap-{time.monotonic_ns()}.sqlite3",
            image_dir=self.work / "images", allow_private_urls=True,
            sam_model_type="vit_b" if self.model_type == "tiny" else self.model_type,
            sam_checkpoint=self.checkpoint, log_level="WARNING", precision=self.precision,
        )
        return Settings(**{**base, **overrides})

    def start_app(self, store=None, load_model=None, **overrides) -> App:
        settings = self.settings(**overrides)
        app = App(settings, store or SQLiteStore(settings.sqlite_path), (load_model or self.load_model)(settings))
        app.start()
        assert app.processor.ready.wait(600), "the model never loaded"
        return app

    def start_server(self) -> Replica:
        """`python -m server` in its own process, on SQLite and this sitting's weights, healthy; stop it (or
        use it as a context manager) when done."""
        if self.mode == "quick":  # the tiny SAM: the raw model's weights, which the replica's tiny vit_b loads
            torch.save(self.raw_sam.state_dict(), self.checkpoint)
        model = {"sam_device": "auto", "sam_model_type": self.model_type} if self.mode == "full" else {}
        server = Replica(
            self.work / "server", tiny_model=self.mode == "quick",
            sam_checkpoint=self.checkpoint, precision=self.precision, log_level="WARNING", **model,
        )
        try:
            server.wait_healthy(timeout=600)
        except BaseException:
            server.stop()
            raise
        return server

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


def one_box_exchange(port: int, url: str, box: dict = BOX, timeout: float = 600) -> Exchange:
    """One box on the image at `url`, on a new connection: `queued`, `status` and the result, with when each arrived."""
    outcome = exchange(f"ws://127.0.0.1:{port}/", {"image_url": url, "boxes": [box]}, timeout=timeout)
    assert outcome.types == ["queued", "status", "result"], outcome.messages
    return outcome


def request(app: App, url: str, box: dict = BOX, timeout: float = 600) -> tuple[float, dict]:
    """One request on a new connection: ms from connecting to the result's arrival (the server's close
    handshake after it is not counted), and the result."""
    started = time.perf_counter()
    outcome = one_box_exchange(app.port, url, box, timeout)
    return (outcome.arrived[-1] - started) * 1000, outcome.last


def timed_ms(run) -> float:
    started = time.perf_counter()
    run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - started) * 1000


CPU_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16")  # what decides the CPU's speed at SAM's work, and bf16's


def cpu_flags() -> dict[str, bool]:
    """Whether this machine's CPU has each of CPU_FLAGS (from /proc/cpuinfo; all False where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return {flag: flag in flags for flag in CPU_FLAGS}


def flags_text(flags: dict[str, bool]) -> str:
    """`cpu_flags()` as the tables print them: "avx512f yes, avx512_bf16 no, ..."."""
    return ", ".join(f"{flag} {'yes' if present else 'no'}" for flag, present in flags.items())


def fmt(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"
