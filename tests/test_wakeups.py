"""JobEvents: what a ring hands over in memory (the record as written, a result's SAMOutput item) reaches only
a connection that waits for it, once, and never an older state than the store's."""

from __future__ import annotations

from server.budget import PixelBudget
from server.wakeups import Bell, JobEvents


class CountingBell(Bell):
    def __init__(self) -> None:
        super().__init__()
        self.rings = 0

    def ring(self) -> None:
        self.rings += 1
        super().ring()


def test_a_delivered_result_is_kept_for_its_waiting_connection_and_taken_once_with_its_memory():
    events, bell, budget = JobEvents(), CountingBell(), PixelBudget(10**6)
    record, output, memory = {"id": "a", "status": "processed"}, {"id": "a", "masks": []}, budget.reserve(1200)
    events.subscribe("a", bell)
    events.deliver("a", record, output, memory)
    assert bell.rings == 1
    assert events.take_record("a") is record and events.take_output("a") == (output, memory)
    assert events.take_record("a") is None and events.take_output("a") is None  # taken once; then the store
    assert budget.used == 1200  # the taker's to release


def test_the_newest_record_rung_replaces_one_not_taken():
    """A claim and a result before the connection wakes: it sees the result's record."""
    events = JobEvents()
    events.subscribe("a", Bell())
    events.notify("a", {"id": "a", "status": "processing"})
    events.notify("a", {"id": "a", "status": "processed"})
    assert events.take_record("a") == {"id": "a", "status": "processed"}


def test_a_ring_without_a_record_drops_the_one_not_taken():
    """The sweeper interrupts a record after the processor's claim was rung: the connection must read the
    store (interrupted), not the claim's older state."""
    events, bell = JobEvents(), CountingBell()
    events.subscribe("a", bell)
    events.notify("a", {"id": "a", "status": "processing"})
    events.notify("a")
    assert events.take_record("a") is None and bell.rings == 2


def test_an_output_nobody_here_waits_for_is_not_kept():
    """A record whose waiter is on another replica, or gone: nothing is held in memory for it."""
    events, budget = JobEvents(), PixelBudget(10**6)
    events.deliver("a", {"id": "a", "status": "processed"}, {"id": "a", "masks": []}, budget.reserve(1200))
    events.notify("a", {"id": "a", "status": "processed"})
    assert events.take_output("a") is None and events.take_record("a") is None
    assert budget.used == 0  # its memory given back at once


def test_a_connection_that_stops_waiting_drops_the_output_it_did_not_take():
    events, bell, budget = JobEvents(), CountingBell(), PixelBudget(10**6)
    events.subscribe("a", bell)
    events.deliver("a", {"id": "a", "status": "processed"}, {"id": "a", "masks": [[1, 2]]}, budget.reserve(1200))
    assert budget.used == 1200
    events.unsubscribe("a")
    assert events.take_output("a") is None and events.take_record("a") is None
    assert budget.used == 0
    events.deliver("a", {"id": "a", "status": "processed"}, {"id": "a", "masks": []}, None)  # after it left
    assert events.take_output("a") is None and events.take_record("a") is None and bell.rings == 1


def test_the_inserted_record_stands_until_a_ring_brings_a_newer_one():
    """The connection's first look needs no read; a claim that beat the offer is not overwritten by it."""
    events, bell = JobEvents(), CountingBell()
    events.subscribe("a", bell)
    events.offer("a", {"id": "a", "status": "queued"})
    assert events.take_record("a") == {"id": "a", "status": "queued"} and bell.rings == 0
    events.notify("a", {"id": "a", "status": "processing"})
    events.offer("a", {"id": "a", "status": "queued"})
    assert events.take_record("a") == {"id": "a", "status": "processing"}
    events.offer("b", {"id": "b", "status": "queued"})  # nobody waits on it
    assert events.take_record("b") is None
