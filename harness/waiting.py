"""Waiting on a condition instead of sleeping a guessed time."""

from __future__ import annotations

import time
from typing import Callable


def wait_for(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """Poll `condition` until it is true; whether it was within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True
