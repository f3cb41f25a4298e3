"""JobEvents: a result handed over in memory reaches only a connection that waits for it, once."""

from __future__ import annotations

from server.wakeups import Bell, JobEvents


class CountingBell(Bell):
    def __init__(self) -> None:
        super().__init__()
        self.rings = 0

    def ring(self) -> None:
        self.rings += 1
        super().ring()


def test_a_delivered_output_is_kept_for_its_waiting_connection_and_taken_once():
    events, bell, output = JobEvents(), CountingBell(), {"id": "a", "masks": []}
    events.subscribe("a", bell)
    events.deliver("a", output)
    assert bell.rings == 1
    assert events.take_output("a") is output
    assert events.take_output("a") is None  # taken once; a second read goes to the store


def test_an_output_nobody_here_waits_for_is_not_kept():
    """A record whose waiter is on another replica, or gone: nothing is held in memory for it."""
    events = JobEvents()
    events.deliver("a", {"id": "a", "masks": []})
    assert events.take_output("a") is None


def test_a_connection_that_stops_waiting_drops_the_output_it_did_not_take():
    events, bell = JobEvents(), CountingBell()
    events.subscribe("a", bell)
    events.deliver("a", {"id": "a", "masks": [[1, 2]]})
    events.unsubscribe("a")
    assert events.take_output("a") is None
    events.deliver("a", {"id": "a", "masks": []})  # after it left: neither kept nor rung
    assert events.take_output("a") is None and bell.rings == 1
