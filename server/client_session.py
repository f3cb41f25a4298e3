"""The command-line client's connection (server/client.py, server/client_video.py): one request at a time on it,
its progress printed, and every way it fails as a `Failure` with the exit status it means."""

from __future__ import annotations

import contextlib
import json
from typing import Any, Callable, Iterator

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection, connect

EXIT_OK = 0
EXIT_SERVER_ERROR = 1  # the server answered with an error message
EXIT_LOCAL = 2  # bad arguments, or an image or output file this command cannot read or write
EXIT_CONNECTION = 3  # no connection, or it closed before an answer
OPEN_TIMEOUT = 10


class Failure(Exception):
    """Stop with this message and exit status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def ask(ws: ClientConnection, request: dict[str, Any], on_frame: Callable[[dict], None] = lambda message: None) -> dict[str, Any]:
    """Send one request on the connection, print its progress, pass each `frame` message on; its result."""
    ws.send(json.dumps(request))
    while True:
        message = json.loads(ws.recv())
        kind = message["type"]
        if kind == "queued":
            print(f"queued: position {message['position']} (id {message['id']})", flush=True)
        elif kind == "status":
            print(message["status"], flush=True)
        elif kind == "progress":
            print(f"progress: {message['done']} of {message['total']}", flush=True)
        elif kind == "frame":
            on_frame(message)
        elif kind == "result":
            return message
        elif kind == "error":
            raise Failure(EXIT_SERVER_ERROR, f"error {message['code']}: {message['message']}")


@contextlib.contextmanager
def session(server: str, token: str | None) -> Iterator[ClientConnection]:
    """A connection to the server; every way it can fail is a `Failure` with its exit status."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        with connect(server, additional_headers=headers, max_size=None, open_timeout=OPEN_TIMEOUT) as ws:
            yield ws
    except InvalidURI as exc:
        raise Failure(EXIT_LOCAL, f"{server} is not a ws:// or wss:// URL: {exc}") from None
    except InvalidStatus as exc:
        status = exc.response.status_code
        hint = " (give the server's token with --token)" if status == 401 else ""
        raise Failure(EXIT_CONNECTION, f"{server} refused the connection: HTTP {status}{hint}") from None
    except ConnectionClosed:
        raise Failure(EXIT_CONNECTION, f"{server} closed the connection before answering") from None
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise Failure(EXIT_CONNECTION, f"cannot connect to {server}: {exc}") from None
