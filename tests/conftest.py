"""Shared fixtures: a real image server, a tiny real SAM, real running servers."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Callable

import pytest
import torch
from segment_anything import sam_model_registry

from harness import image_files
from harness.cosmos_emulator import KEY, CosmosEmulator, new_database_name
from harness.http_server import ImageHTTPServer
from harness.memory import release_free_memory
from harness.replicas import Replica
from harness.tiny_sam import build_tiny_sam, write_tiny_checkpoint
from server.config import ENV_FILE_VARIABLE, Settings
from server.main import App
from server.models.sam1 import SamModel
from server.models.seam import SegmentationModel
from server.store.cosmos import CosmosStore
from server.store.sqlite import SQLiteStore

# The quick subset, `./scripts/test -m "not slow"`, leaves out the tests that stand on something slow to
# start or to run: those marked `slow` by hand (the model references, a few long ones) and every test that
# uses one of these fixtures. pyproject.toml registers the marker.
SLOW_FIXTURES = {"cosmos_emulator", "browser", "vit_b_checkpoint", "hiera_t_checkpoint", "start_replica", "label_studio"}


# The file whose full-size fp32 vit_b encoder pass is the run's peak (2.4 GB above the model) runs
# first, while this process holds least: after it, the rest of the run stays well below it.
RUN_FIRST = "test_sam_reference.py"


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.path.name != RUN_FIRST)  # stable: the order stays within each part


# Tests never read the user's `.env`: not here, and not in any process started
# from here, which inherits this (harness/processes.server_env sets it too).
os.environ[ENV_FILE_VARIABLE] = ""


@pytest.fixture(scope="module", autouse=True)
def memory_back_after_each_file():
    """After each test file, its freed memory goes back to the system. tcmalloc (preloaded by
    scripts/test) keeps freed pages otherwise: after a full-size model's 2 GB of attention maps, the
    test run would hold them to the end, beside the server processes and the browser later tests start.
    Once more as the next file begins: pytest lets go of the last test's arguments (a module's model)
    only after its teardown, so what they held is freed between two files."""
    gc.collect()
    release_free_memory()
    yield
    gc.collect()
    release_free_memory()


@pytest.fixture(scope="session")
def tiny_sam():
    return build_tiny_sam()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The tiny SAM's weights as a checkpoint file, for real `python -m server` processes."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "sam_tiny.pth")


@pytest.fixture
def start_replica():
    """`start_replica(folder, **settings)`: a real `python -m server` (see harness/replicas.py),
    stopped with its process group when the test ends, whether it passed or not."""
    with contextlib.ExitStack() as started:
        yield lambda folder, **settings: started.enter_context(Replica(folder, **settings))


@pytest.fixture(scope="session")
def vit_b_checkpoint(tmp_path_factory) -> Path:
    """A full-size vit_b checkpoint file with random weights (~375 MB), in the official layout, once per session."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoints") / "sam_vit_b_random.pth"
    torch.save(sam_model_registry["vit_b"]().state_dict(), path)
    release_free_memory()  # the model just built (375 MB) is not kept for the rest of the run
    return path


@pytest.fixture(scope="session")
def hiera_t_checkpoint(tmp_path_factory) -> Path:
    """A full-size SAM 2.1 hiera_t checkpoint with random weights (~156 MB), in the official layout
    (the state dict under "model"), once per session."""
    from server.models.sam2 import build  # imports sam2, which initialises Hydra: only for the tests that need it

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoints") / "sam2.1_hiera_t_random.pt"
    torch.save({"model": build("sam2.1_hiera_t").state_dict()}, path)
    release_free_memory()
    return path


@pytest.fixture(scope="session")
def cosmos_emulator():
    """The Cosmos DB emulator, one process for the session, stopped by PID at the end."""
    logging.getLogger("azure").setLevel(logging.ERROR)
    emulator = CosmosEmulator().start()
    yield emulator
    emulator.stop()


def cosmos_store(emulator: CosmosEmulator, database: str | None = None) -> CosmosStore:
    """A Cosmos DB store client; on a fresh database of its own unless one is named."""
    return CosmosStore(
        emulator.endpoint, KEY, database=database or new_database_name(), queue_container="Queue",
        output_container="SAMOutput", verify_tls=False, timeout=5,
    )


@pytest.fixture(scope="session")
def image_server():
    """A real HTTP server on 127.0.0.1 with a few standard images."""
    with ImageHTTPServer() as server:
        server.add("/rgb.png", image_files.png_rgb(64, 48))
        server.add("/photo.jpg", image_files.jpeg_rgb(320, 240), content_type="image/jpeg")
        yield server


def make_settings(tmp_path: Path, **overrides) -> Settings:
    settings = Settings(
        host="127.0.0.1",
        port=0,
        sqlite_path=tmp_path / "cap.sqlite3",
        image_dir=tmp_path / "images",
        allow_private_urls=True,
        sam_model_type="vit_b",
        poll_interval=0.5,
        download_timeout=5,
        request_timeout=5,
    )
    return dataclasses.replace(settings, **overrides)


class ModelGate:
    """Wraps the real model; `segment_batch` waits until the test opens the gate.

    It lets a test act while a request is provably mid-processing (for
    example, disconnect) without timing guesses. The masks are the real model's.
    """

    def __init__(self, model: SamModel, opened: bool = False):
        self.model = model
        self.model_type = model.model_type
        self.precision = model.precision
        self.entered = threading.Event()
        self.opened = threading.Event()
        if opened:
            self.opened.set()
        self.calls = 0
        self.batch_sizes = []
        self.pixels_seen = []

    @property
    def device(self):
        return self.model.device

    @property
    def cache(self):
        return self.model.cache

    @property
    def preferred_batch_size(self):
        return self.model.preferred_batch_size

    def memory(self):
        return self.model.memory()

    def embed(self, images):
        return self.model.embed(images)

    def decode(self, embedding, prompts, multimask, per_call=None, score_floor=None):
        return self.model.decode(embedding, prompts, multimask, per_call, score_floor)

    def warm_up(self):
        return self.model.warm_up()

    def has_embedding(self, image_key, scope=None):
        return self.model.has_embedding(image_key, scope)

    def segment_batch(self, jobs):
        self.calls += 1
        self.batch_sizes.append(len(jobs))
        self.pixels_seen.extend(job.pixels for job in jobs)
        self.entered.set()
        assert self.opened.wait(60), "the test never opened the model gate"
        return self.model.segment_batch(jobs)


@pytest.fixture
def gate(tiny_sam) -> ModelGate:
    return ModelGate(SamModel(tiny_sam, "tiny"))


@pytest.fixture
def start_app(tmp_path, tiny_sam) -> Callable[..., App]:
    """Start a real server on an ephemeral port: `start_app(model=..., store=..., **settings)`."""
    apps: list[App] = []

    def start(model=None, load_model=None, store=None, wait_ready=True, **overrides) -> App:
        settings = make_settings(tmp_path, **overrides)
        if load_model is None:
            chosen = model if model is not None else SamModel(tiny_sam, "tiny", settings.embedding_cache_size)
            assert isinstance(chosen, SegmentationModel), f"{type(chosen).__name__} lacks the declared model interface"
            load_model = lambda: chosen  # noqa: E731
        app = App(settings, store or SQLiteStore(settings.sqlite_path), load_model)
        app.start()
        apps.append(app)
        if wait_ready:
            assert app.processor.ready.wait(300), "the model never loaded"
        return app

    yield start
    for app in apps:
        app.stop()


def processor_is_waiting(app: App) -> bool:
    """Whether the processor thread is asleep in its poll wait (nothing to claim), from its live stack."""
    frame = sys._current_frames().get(app.processor._thread.ident)
    names = []
    while frame is not None:
        names.append(frame.f_code.co_name)
        frame = frame.f_back
    return names[:3] == ["wait", "wait", "_run"]  # Condition.wait, in Event.wait, in the processor's loop


def ws_url(app: App) -> str:
    return f"ws://127.0.0.1:{app.port}/"


@pytest.fixture
def resolver(monkeypatch):
    """Map host names to addresses (socket.getaddrinfo, patched); other names resolve as usual.

    A name mapped to None does not resolve (socket.gaierror, as offline);
    `resolver.lookups` lists every name asked for.
    """

    class Resolver(dict):
        pass

    names = Resolver()
    names.lookups = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        names.lookups.append(host)
        if host in names and names[host] is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if host in names:
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port or 80))
                for a in names[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names
