"""Real `python -m server` processes, for tests and benchmarks that need whole servers.

Each replica runs the production entry point with the tiny model (see
tiny_model_site/sitecustomize.py; `tiny_model=False` leaves the model as
production builds it, for a benchmark that passes a real checkpoint), its own
port and image folder, and the settings the test passes (a shared Cosmos DB database, for instance). Its
environment is `processes.server_env`: none of the user's settings, no
`.env`. Use it as a context manager, or through the `start_replica` fixture
in conftest.py: either way it is stopped, process group and all, when the
test ends, failed or not.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from harness import processes
from harness.ports import free_port

REPO = processes.REPO
SITE = Path(__file__).resolve().parent / "tiny_model_site"


class Replica:
    def __init__(self, folder: Path, tiny_model: bool = True, **settings):
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = folder / "server.log"
        env = processes.server_env(
            HOST="127.0.0.1", PORT=self.port, IMAGE_DIR=folder / "images", SQLITE_PATH=folder / "cap.sqlite3",
            ALLOW_PRIVATE_URLS="true", SAM_MODEL_TYPE="vit_b", SAM_DEVICE="cpu", **settings,
        )
        env["PYTHONPATH"] = f"{SITE}{os.pathsep}{REPO}" if tiny_model else str(REPO)
        self._stack = contextlib.ExitStack()
        with open(self.log_path, "w") as log:
            self.process = self._stack.enter_context(
                processes.running([sys.executable, "-m", "server"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            )

    def __enter__(self) -> "Replica":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

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
        """SIGTERM (SIGKILL after 60 s) to its process group; the exit status."""
        self._stack.close()
        return self.process.wait()
