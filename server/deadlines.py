"""Deadlines enforced on sockets: at the deadline the socket is shut down.

A per-read socket timeout does not bound a peer that drips one byte at a
time, and websockets' blocking `send` has no timeout at all. So a deadline
here is absolute: one shared timer thread shuts the socket down when it
passes, and whatever blocks on that socket (a read, `sendall`) returns or
raises at once. The caller then sees `Deadline.expired` and reports a
timeout rather than a broken connection.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from typing import Iterator


class Deadline:
    """One armed deadline; `expired` is True once it fired."""

    def __init__(self, at: float, sock: socket.socket):
        self.at = at
        self.sock = sock
        self.expired = False
        self.cancelled = False

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())


class _Timer:
    """One daemon thread that fires every armed deadline in order."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, deadline: Deadline) -> None:
        with self._cond:
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
                self._thread.start()
            # The thread sleeps until the earliest deadline: only a new earliest one needs it awake (every send
            # arms one, almost always later than one already waiting, and a wake-up costs the sender's CPU).
            if self._heap[0][2] is deadline:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _, deadline = self._heap[0]
                delay = at - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                heapq.heappop(self._heap)
                if deadline.cancelled:
                    continue
                deadline.expired = True
            with contextlib.suppress(OSError):
                deadline.sock.shutdown(socket.SHUT_RDWR)


_TIMER = _Timer()


@contextlib.contextmanager
def socket_deadline(sock: socket.socket, seconds: float) -> Iterator[Deadline]:
    """Shut `sock` down if the block has not finished within `seconds`."""
    deadline = Deadline(time.monotonic() + seconds, sock)
    _TIMER.arm(deadline)
    try:
        yield deadline
    finally:
        deadline.cancelled = True
