"""Shared fixtures: a real image server, a tiny real SAM, real running servers."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Callable

import pytest

from server.config import Settings
from server.main import App
from server.sam_model import SamModel
from server.store.sqlite import SQLiteStore
from tests.support import image_files
from tests.support.http_server import ImageHTTPServer
from tests.support.tiny_sam import build_tiny_sam


@pytest.fixture(scope="session")
def tiny_sam():
    return build_tiny_sam()


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
    """Wraps the real model; `segment` waits until the test opens the gate.

    It lets a test act while a request is provably mid-processing (for
    example, disconnect) without timing guesses. The masks are the real model's.
    """

    def __init__(self, model: SamModel, opened: bool = False):
        self.model = model
        self.model_type = model.model_type
        self.entered = threading.Event()
        self.opened = threading.Event()
        if opened:
            self.opened.set()
        self.calls = 0
        self.pixels_seen = []

    @property
    def device(self):
        return self.model.device

    def segment(self, pixels, *args, **kwargs):
        self.calls += 1
        self.pixels_seen.append(pixels)
        self.entered.set()
        assert self.opened.wait(60), "the test never opened the model gate"
        return self.model.segment(pixels, *args, **kwargs)


@pytest.fixture
def gate(tiny_sam) -> ModelGate:
    return ModelGate(SamModel(tiny_sam, "tiny"))


@pytest.fixture
def start_app(tmp_path, tiny_sam) -> Callable[..., App]:
    """Start a real server on an ephemeral port: `start_app(model=..., **settings)`."""
    apps: list[App] = []

    def start(model=None, load_model=None, wait_ready=True, **overrides) -> App:
        settings = make_settings(tmp_path, **overrides)
        if load_model is None:
            chosen = model if model is not None else SamModel(tiny_sam, "tiny")
            load_model = lambda: chosen  # noqa: E731
        app = App(settings, SQLiteStore(settings.sqlite_path), load_model)
        app.start()
        apps.append(app)
        if wait_ready:
            assert app.processor.ready.wait(60), "the model never loaded"
        return app

    yield start
    for app in apps:
        app.stop()


def ws_url(app: App) -> str:
    return f"ws://127.0.0.1:{app.port}/"
