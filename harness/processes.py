"""Processes that tests start: a clean environment, and a stop that always happens.

Every process a test starts goes through `running()` (a `Replica`, and the
`start_replica` fixture in tests/conftest.py, use it): it starts in a session of its own, and
on the way out, failed test or not, its whole process group gets SIGTERM, then
SIGKILL if it lingers. So no `python -m server` (nor a child of
`./scripts/run`) outlives the test that started it.

`server_env()` is the environment for a server the tests start: none of the
user's CAP settings (from the environment or from a `.env` file: CAP_ENV_FILE
is set empty, so no dotenv file is read), plus the settings the test gives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
from pathlib import Path
from typing import Iterator

from server.config import ENV_FILE_VARIABLE, Settings

REPO = Path(__file__).resolve().parents[1]
SETTING_NAMES = {field.name.upper() for field in dataclasses.fields(Settings)}


def server_env(**settings: object) -> dict[str, str]:
    """This process's environment without any CAP setting or test knob, no dotenv file, plus `settings`."""
    env = {
        name: value for name, value in os.environ.items()
        if name not in SETTING_NAMES and not name.startswith(("CAP_", "OMP_"))
    }
    env[ENV_FILE_VARIABLE] = ""
    env.update({name.upper(): str(value) for name, value in settings.items()})
    return env


def stop(process: subprocess.Popen, grace: float = 60) -> int:
    """SIGTERM to the process's group, SIGKILL after `grace` seconds (0: at once); the exit status."""
    if process.poll() is None and grace > 0:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(process, signal.SIGKILL)  # whatever is left of the group, children included
    return process.wait()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass  # the group is gone


@contextlib.contextmanager
def running(args: list[str], grace: float = 60, **popen: object) -> Iterator[subprocess.Popen]:
    """`subprocess.Popen(args, **popen)` in a session of its own, stopped (see `stop`) on exit."""
    process = subprocess.Popen(args, start_new_session=True, **popen)  # type: ignore[call-overload]
    try:
        yield process
    finally:
        stop(process, grace)
