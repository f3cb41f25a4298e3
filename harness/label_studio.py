"""The real Label Studio, for tests: started on loopback, with a known user and API token, always stopped.

It runs from .venv-label-studio/ (requirements/label-studio.txt; `./scripts/test`
installs it, see scripts/common.sh `install_label_studio`), with its SQLite
database and uploads in a folder of the test's, and none of the user's
settings (`processes.server_env`). Label Studio 1.23.2 makes its first user
from `label-studio start --username --password --user-token`, and the token
works as a legacy `Token` header with `--enable-legacy-api-token`. It reports
nothing to Sentry (SENTRY_DSN empty) and may call an ML backend on loopback
(ML_BLOCK_LOCAL_IP and SSRF_PROTECTION_ENABLED false: by default it refuses private
addresses, and the webhook it makes for an ML backend refuses them too).

Use it as a context manager: the process group is stopped on the way out,
and the kernel stops it should the test run die first (harness/processes.py).
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from harness import processes
from harness.ports import free_port

VENV = processes.REPO / ".venv-label-studio"
EMAIL = "cap@example.com"


class LabelStudio:
    def __init__(self, folder: Path):
        if not (VENV / "bin" / "label-studio").exists():
            raise AssertionError(
                f"Label Studio is not installed in {VENV}: run ./scripts/test once, or "
                "`source scripts/common.sh; install_label_studio`."
            )
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(20)
        self.log_path = folder / "label-studio.log"
        data = folder / "label-studio-data"
        env = processes.server_env(
            LABEL_STUDIO_BASE_DATA_DIR=data, SENTRY_DSN="", FRONTEND_SENTRY_DSN="", COLLECT_ANALYTICS="false",
            ML_BLOCK_LOCAL_IP="false", SSRF_PROTECTION_ENABLED="false",
        )
        args = [
            str(VENV / "bin" / "label-studio"), "start", "--no-browser", "--internal-host", "127.0.0.1",
            "--port", str(self.port), "--data-dir", str(data), "--username", EMAIL,
            "--password", secrets.token_hex(12), "--user-token", self.token, "--enable-legacy-api-token",
        ]
        self._stack = contextlib.ExitStack()
        with open(self.log_path, "w") as log:
            self.process = self._stack.enter_context(
                processes.running(args, grace=10, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
            )

    def __enter__(self) -> "LabelStudio":
        try:
            self.wait_ready()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._stack.close()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 180) -> None:
        """Until its API answers with the token (its migrations run first: about 30 s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"Label Studio exited:\n{self.log[-5000:]}"
            try:
                if requests.get(f"{self.url}/api/projects", headers=self.headers, timeout=5).status_code == 200:
                    return
            except requests.RequestException:  # not listening yet
                pass
            time.sleep(0.5)
        raise AssertionError(f"Label Studio on port {self.port} never answered:\n{self.log[-5000:]}")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

    def api(self, method: str, path: str, expected: int = 200, **kwargs: Any) -> Any:
        """One call of its REST API as this user; its JSON answer, asserted to have the `expected` status."""
        response = requests.request(method, f"{self.url}{path}", headers=self.headers, timeout=120, **kwargs)
        assert response.status_code == expected, f"{method} {path}: {response.status_code} {response.text[:2000]}"
        return response.json()
