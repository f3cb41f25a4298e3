"""The Cosmos DB emulator process for tests and benchmarks: start, restart and stop by PID.

`tests/cosmos_emulator/launcher.js` runs `@vercel/cosmosdb-server` 1.0.1
(installed by scripts/test with `npm ci`) on 127.0.0.1 over HTTPS. It keeps
everything in memory, so a restart is an empty database.

Its standard input is a pipe from this process, which it reads until the end:
when this process ends in any way (kill -9 included), the kernel closes the
pipe and the emulator exits, so it never outlives the test run.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

from harness import processes
from harness.ports import free_port

FOLDER = Path(__file__).resolve().parent.parent / "tests" / "cosmos_emulator"  # its node_modules: npm ci, by scripts/test
# The emulator accepts any key; this is the public key of Microsoft's emulator.
KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="


def new_database_name() -> str:
    """A database name of its own for one test or run, in the one emulator."""
    return f"test-{uuid.uuid4().hex[:12]}"


class CosmosEmulator:
    def __init__(self) -> None:
        if not (FOLDER / "node_modules" / "@vercel" / "cosmosdb-server").is_dir():
            raise RuntimeError(
                f"The Cosmos DB emulator is not installed in {FOLDER}/node_modules: "
                "run ./scripts/test, which installs it with npm ci."
            )
        if shutil.which("node") is None:
            raise RuntimeError("node is not on PATH; the Cosmos DB emulator needs Node.js.")
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}/"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> "CosmosEmulator":
        self.process = subprocess.Popen(
            ["node", str(FOLDER / "launcher.js"), str(self.port)], cwd=FOLDER,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        line = self.process.stdout.readline().strip()
        if line != f"ready {self.port}":
            self.stop()
            raise RuntimeError(f"the Cosmos DB emulator did not start: {line!r}")
        return self

    def stop(self) -> None:
        """Stop the emulator's process group (its PID's), SIGKILL at once: its data is in memory anyway."""
        if self.process is None:
            return
        processes.stop(self.process, grace=0)
        self.process.stdin.close()
        self.process.stdout.close()
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port; the data is gone, as after a reset."""
        self.stop()
        self.start()
