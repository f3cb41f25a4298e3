"""Real `python -m server` processes for multi-replica tests.

Each replica runs the production entry point with the tiny model (see
tiny_model_site/sitecustomize.py), its own port and image folder, and the
settings the test passes (a shared Cosmos DB database, for instance).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SITE = Path(__file__).resolve().parent / "tiny_model_site"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Replica:
    def __init__(self, folder: Path, **settings):
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = folder / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SAM_", "COSMOS_", "CAP_", "OMP_"))}
        env.update(
            PYTHONPATH=f"{SITE}{os.pathsep}{REPO}", HOST="127.0.0.1", PORT=str(self.port),
            IMAGE_DIR=str(folder / "images"), SQLITE_PATH=str(folder / "cap.sqlite3"), ALLOW_PRIVATE_URLS="true",
            SAM_MODEL_TYPE="vit_b", SAM_DEVICE="cpu",
            **{k.upper(): str(v) for k, v in settings.items()},
        )
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "server"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    @property
    def server_id(self) -> str:
        match = re.search(r"server id (cap-[0-9a-f]+)", self.log)
        assert match, f"no server id in the log:\n{self.log}"
        return match.group(1)

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"replica exited:\n{self.log}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:  # not listening yet, or slow while the model loads
                pass
            time.sleep(0.2)
        raise AssertionError(f"replica on port {self.port} never became healthy:\n{self.log}")

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()
