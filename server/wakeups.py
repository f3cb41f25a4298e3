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

from server.budget import Reservation


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

    What was just written travels with the ring, so that the connection need
    not read it back: the record as inserted (`offer`), as the ringer stored
    it (`notify` with a record), and a result's SAMOutput item (`deliver`).
    Each is taken once. A ring without a record drops one not yet taken, so
    that the connection reads the store, never an older state than the
    ringer left there. A connection whose record another replica's processor
    took, or one that finds nothing here, reads the store. A result's memory
    reservation travels with it, so that a result held here is always
    counted in the budget: given back if nobody here waits, or when its
    connection stops waiting without taking it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bells: dict[str, Bell] = {}
        self._records: dict[str, dict[str, Any]] = {}  # job id -> the record as last written and rung, until taken
        # job id -> its stored SAMOutput item and the memory reservation that counts it, until taken
        self._outputs: dict[str, tuple[dict[str, Any], Reservation | None]] = {}

    def subscribe(self, job_id: str, bell: Bell) -> None:
        with self._lock:
            self._bells[job_id] = bell

    def unsubscribe(self, job_id: str) -> None:
        with self._lock:
            self._bells.pop(job_id, None)
            self._records.pop(job_id, None)
            _, memory = self._outputs.pop(job_id, (None, None))
        if memory is not None:
            memory.release()

    def watched(self, job_id: str) -> bool:
        """Whether a connection of this process waits on the record (it stops waiting before it interrupts it)."""
        with self._lock:
            return job_id in self._bells

    def notify(self, job_id: str, record: dict[str, Any] | None = None) -> None:
        """Ring the bell of the connection waiting on the record, with the record as just stored, if given."""
        with self._lock:
            bell = self._bells.get(job_id)
            if bell is not None:
                if record is None:
                    self._records.pop(job_id, None)
                else:
                    self._records[job_id] = record
        if bell is not None:
            bell.ring()

    def deliver(self, job_id: str, record: dict[str, Any], output: dict[str, Any], memory: Reservation | None) -> None:
        """The record was marked processed and its result stored as `output`, whose memory `memory` counts:
        hand all three to its connection, and ring; with nobody here waiting, the memory is given back."""
        with self._lock:
            waited = job_id in self._bells
            if waited:
                self._outputs[job_id] = (output, memory)
        if not waited and memory is not None:
            memory.release()
        self.notify(job_id, record)

    def offer(self, job_id: str, record: dict[str, Any]) -> None:
        """The record as its connection just inserted it: its state until a ring brings a newer one.
        A ring that came first (a claim between the insert and this) is kept; nothing rings."""
        with self._lock:
            if job_id in self._bells:
                self._records.setdefault(job_id, record)

    def take_record(self, job_id: str) -> dict[str, Any] | None:
        """The record as the last ring left it, once; None if that ring brought none (or it was taken)."""
        with self._lock:
            return self._records.pop(job_id, None)

    def take_output(self, job_id: str) -> tuple[dict[str, Any], Reservation | None] | None:
        """The SAMOutput item `deliver` kept for this record and its memory, now the taker's to release, once;
        None if there is none."""
        with self._lock:
            return self._outputs.pop(job_id, None)
