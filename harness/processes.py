"""Processes that tests start: a clean environment, and a stop that always happens.

Every process a test starts goes through `running()` (a `Replica`, and the
`start_replica` fixture in tests/conftest.py, use it): it starts in a session of its own, and
on the way out, failed test or not, its whole process group gets SIGTERM, then
SIGKILL if it lingers. So no `python -m server` (nor a child of
`./scripts/run`) outlives the test that started it. Should the test run itself
be killed (SIGKILL: no teardown runs), the kernel sends the process SIGTERM as
its parent dies (Linux's parent-death signal), so it stops then too.

`server_env()` is the environment for a server the tests start: none of the
user's CAP settings (from the environment or from a `.env` file: CAP_ENV_FILE
is set empty, so no dotenv file is read), plus the settings the test gives.
"""

from __future__ import annotations

import contextlib
import ctypes
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


def is_running(pid: int) -> bool:
    """Whether the process `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass  # the group is gone


PR_SET_PDEATHSIG = 1  # prctl(2)


def _terminate_with_parent() -> None:
    """In the child, before exec: SIGTERM when the thread that started it dies (kept across exec)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@contextlib.contextmanager
def running(args: list[str], grace: float = 60, **popen: object) -> Iterator[subprocess.Popen]:
    """`subprocess.Popen(args, **popen)` in a session of its own, stopped (see `stop`) on exit,
    and sent SIGTERM by the kernel should this process die first."""
    process = subprocess.Popen(  # type: ignore[call-overload]
        args, start_new_session=True, preexec_fn=_terminate_with_parent, **popen
    )
    try:
        yield process
    finally:
        stop(process, grace)
