"""What a server of one event loop would save on row 2's handshake: websockets' threaded server against its
asyncio server, alternated connection by connection, both bare (the handler reads one message), against CAP's.

The same sync client (the one `bench.request_path` uses) connects to each and
times connect ▸ open; the p50 and the least of each are printed.
websockets' threaded server (CAP's) starts a thread per connection and a
reader thread, and hands the request from one to the other; its asyncio
server does neither.

    .venv/bin/python -m bench.handshake [--runs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import threading
import time
from typing import Iterator

from websockets.asyncio.server import serve as serve_asyncio
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve as serve_threaded

from bench.rig import Sitting


@contextlib.contextmanager
def threaded_server() -> Iterator[int]:
    def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(Exception):
            ws.recv()

    server = serve_threaded(handler, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.socket.getsockname()[1]
    finally:
        server.shutdown()
        thread.join(10)


@contextlib.contextmanager
def asyncio_server() -> Iterator[int]:
    loop = asyncio.new_event_loop()
    started, stop = threading.Event(), asyncio.Event()
    port: list[int] = []

    async def handler(ws) -> None:
        with contextlib.suppress(Exception):
            await ws.recv()

    async def run() -> None:
        async with serve_asyncio(handler, "127.0.0.1", 0) as server:
            port.append(server.sockets[0].getsockname()[1])
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield port[0]
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def handshake_ms(port: int) -> float:
    started = time.perf_counter()
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=10, max_size=None) as ws:
        opened = time.perf_counter()
        ws.send("{}")
    return (opened - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    sitting = Sitting("quick", args.runs)
    app = sitting.start_app()
    try:
        with threaded_server() as threaded, asyncio_server() as single_loop:
            ports = {"websockets threaded (bare)": threaded, "websockets asyncio (bare)": single_loop, "CAP": app.port}
            times: dict[str, list[float]] = {name: [] for name in ports}
            for run in range(args.runs + 1):  # run 0 warms every side and is not counted
                for name, port in ports.items():
                    taken = handshake_ms(port)
                    if run:
                        times[name].append(taken)
    finally:
        app.stop()
        sitting.images.stop()
    for name, found in times.items():
        print(f"{name:28s} handshake p50 {statistics.median(found):6.2f} ms   min {min(found):6.2f} ms")


if __name__ == "__main__":
    main()
