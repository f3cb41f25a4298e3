"""Run many clients at once: the burst both benchmarks measure."""

from __future__ import annotations

import threading
import time
from typing import Callable


def burst(client: Callable[[int], None], count: int) -> float:
    """Start `client(0)` … `client(count - 1)` in threads together; seconds until the last ends."""
    threads = [threading.Thread(target=client, args=(index,)) for index in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started
