"""server.deadlines: a socket is shut down at its deadline, whatever order the deadlines were armed in."""

import socket
import time

import pytest

from server.deadlines import socket_deadline


@pytest.fixture
def socket_pairs():
    pairs = []

    def make():
        pair = socket.socketpair()
        pairs.append(pair)
        return pair

    yield make
    for pair in pairs:
        for sock in pair:
            sock.close()


def seconds_until_shut(sock: socket.socket) -> float:
    """Block reading `sock` (its peer never writes) until the deadline shuts it down; the wait."""
    started = time.monotonic()
    assert sock.recv(1) == b""  # shut down: end of file
    return time.monotonic() - started


def test_an_earlier_deadline_armed_after_a_later_one_fires_first(socket_pairs):
    (late, _), (early, _) = socket_pairs(), socket_pairs()
    with socket_deadline(late, 30) as late_deadline:
        with socket_deadline(early, 0.3) as early_deadline:
            assert seconds_until_shut(early) < 5  # the timer, asleep until the 30 s one, was woken for it
            assert early_deadline.expired
        assert not late_deadline.expired


def test_a_later_deadline_armed_after_an_earlier_one_fires_at_its_own_time(socket_pairs):
    (first, _), (second, _) = socket_pairs(), socket_pairs()
    started = time.monotonic()
    with socket_deadline(first, 0.2), socket_deadline(second, 0.5) as deadline:
        seconds_until_shut(first)
        seconds_until_shut(second)
        assert 0.5 <= time.monotonic() - started < 5 and deadline.expired


def test_a_cancelled_deadline_leaves_its_socket_open(socket_pairs):
    sock, peer = socket_pairs()
    with socket_deadline(sock, 0.2) as deadline:
        pass
    time.sleep(0.4)
    peer.sendall(b"x")
    assert sock.recv(1) == b"x" and not deadline.expired
