"""What wakes a waiting conversation: one `Bell` per connection, rung by whoever has news for it.

A conversation blocks on its bell, never polls: 250 sessions waiting behind
one encode cost no CPU. The bell rings when
- its connection reads a frame or closes (`RingingConnection`, rung from
  websockets' own reading thread): a newer request, or a client that left;
- the processor moves the record it waits for (`JobEvents.notify`);
- the server starts draining or stopping (the App rings every connection).
A timeout remains only for what has a time of its own: the idle timer,
POLL_INTERVAL (a record another replica processes) and the waiter's lease.

A waiter clears the bell as it wakes and then looks at every source (socket,
record, stop flags); each ringer changes its state before it rings, so a ring
that comes in between leaves the bell set for the next wait: none is lost.
"""

from __future__ import annotations

import threading
from typing import Any

from websockets.sync.server import ServerConnection


class Bell:
    def __init__(self) -> None:
        self._rung = threading.Event()

    def ring(self) -> None:
        self._rung.set()

    def wait(self, timeout: float) -> None:
        """Block until rung (or already rung since the last wait or clear), or `timeout` seconds; then clear."""
        self._rung.wait(max(0.0, timeout))
        self._rung.clear()

    def clear(self) -> None:
        """Forget the rings so far: the caller is about to look at everything they could have announced."""
        self._rung.clear()


class RingingConnection(ServerConnection):
    """A WebSocket connection that rings its `bell` for every event it reads, and when its socket closes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.bell = Bell()  # before the base class starts its reading thread
        super().__init__(*args, **kwargs)

    def process_event(self, event: Any) -> None:
        super().process_event(event)
        self.bell.ring()

    def close_socket(self) -> None:
        super().close_socket()
        self.bell.ring()


class JobEvents:
    """Per-record wake-ups from the processor to the bell of the connection waiting on it.

    `deliver` also hands a result's SAMOutput item to that connection in
    memory, so that it need not read back (and parse) what the processor has
    just stored; a connection of another replica, or one that finds nothing
    here, reads the store.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bells: dict[str, Bell] = {}
        self._outputs: dict[str, dict[str, Any]] = {}  # job id -> its stored SAMOutput item, until taken

    def subscribe(self, job_id: str, bell: Bell) -> None:
        with self._lock:
            self._bells[job_id] = bell

    def unsubscribe(self, job_id: str) -> None:
        with self._lock:
            self._bells.pop(job_id, None)
            self._outputs.pop(job_id, None)

    def watched(self, job_id: str) -> bool:
        """Whether a connection of this process waits on the record (it stops waiting before it interrupts it)."""
        with self._lock:
            return job_id in self._bells

    def notify(self, job_id: str) -> None:
        with self._lock:
            bell = self._bells.get(job_id)
        if bell is not None:
            bell.ring()

    def deliver(self, job_id: str, output: dict[str, Any]) -> None:
        """The record's result was stored as `output`: keep it for its waiting connection, if any, and ring."""
        with self._lock:
            bell = self._bells.get(job_id)
            if bell is not None:
                self._outputs[job_id] = output
        if bell is not None:
            bell.ring()

    def take_output(self, job_id: str) -> dict[str, Any] | None:
        """The SAMOutput item `deliver` kept for this record, once; None if there is none."""
        with self._lock:
            return self._outputs.pop(job_id, None)
