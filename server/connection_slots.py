"""Who holds the WebSocket connections: MAX_CONNECTIONS in all, MAX_CONNECTIONS_PER_CLIENT each.

A place is taken at the handshake, when the request says who the client is
(its API token; its address when API_TOKEN is unset), and given back when the
connection's socket handler ends, whatever happened in between (a handshake
that failed after the place was taken included). A client is a string that
never holds a token itself (server/routes.py makes it).

Plain HTTP (/ping, /health, the page) takes no place here: the listener
(server/listener.py) keeps room for it past MAX_CONNECTIONS.
"""

from __future__ import annotations

import collections
import socket
import threading

# Why a connection was refused, as counted by `/metrics` (cap_connections_refused).
MAX_CONNECTIONS = "max_connections"
PER_CLIENT = "max_connections_per_client"


class ConnectionSlots:
    def __init__(self, total: int, per_client: int):
        self.total = total
        self.per_client = per_client  # 0: no cap per client
        self._lock = threading.Lock()
        self._holders: dict[socket.socket, str] = {}
        self._held_by = collections.Counter[str]()
        self.refused = collections.Counter[str]()

    @property
    def open(self) -> int:
        return len(self._holders)

    def take(self, sock: socket.socket, client: str) -> str | None:
        """Take a place for this connection; None if taken, else why not (MAX_CONNECTIONS or PER_CLIENT)."""
        with self._lock:
            if sock in self._holders:
                return None
            refusal = None
            if len(self._holders) >= self.total:
                refusal = MAX_CONNECTIONS
            elif self.per_client and self._held_by[client] >= self.per_client:
                refusal = PER_CLIENT
            if refusal is not None:
                self.refused[refusal] += 1
                return refusal
            self._holders[sock] = client
            self._held_by[client] += 1
            return None

    def give_back(self, sock: socket.socket) -> None:
        """The connection on this socket ended: its place, if it held one, is free."""
        with self._lock:
            client = self._holders.pop(sock, None)
            if client is None:
                return
            self._held_by[client] -= 1
            if not self._held_by[client]:
                del self._held_by[client]

    def refusal_answer(self, refusal: str) -> tuple[int, str]:
        """The HTTP status and sentence for a refused place: 429 for a client over its share, else 503."""
        if refusal == PER_CLIENT:
            return 429, (
                f"this client already has {self.per_client} connections open "
                "(MAX_CONNECTIONS_PER_CLIENT): close one, or retry later"
            )
        return 503, "too many connections (MAX_CONNECTIONS); retry"
