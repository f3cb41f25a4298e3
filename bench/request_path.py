"""Row 2's request, step by step: where a new image's request spends the time the model does not.

Each run opens a new connection, sends a new 640×480 JPEG with one box (as
row 2 does) and notes when each message arrives; the p50 of each stretch
is printed, with the result's own `timings`:

    handshake        connecting until the WebSocket is open
    to_queued        the request sent until `queued` (the download, decode, the image's file, the record's insert)
    to_status        `queued` until `status` (the processor's claim)
    to_result        `status` until the result, less the encoder and decoder (the mask, the stores, the result)
    to_close         the result until the server's close
    in_request       connecting until the result, less the encoder and decoder: row 2's "in-request" figure

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 .venv/bin/python -m bench.request_path --mode full

`--store cosmos` runs the server on the Cosmos DB emulator instead of SQLite (row 2's second line).
The server runs in this process, as row 2's does. `--server both` alternates it, request by
request, with `python -m server` in a process of its own on the same weights (SQLite only), and
prints both: what this process's client and image server cost a server that shares their
interpreter.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

from bench.rig import Sitting, one_box_exchange
from bench.rows_latency import cosmos_app


def one_request(port: int, url: str) -> dict[str, float]:
    started = time.perf_counter()
    outcome = one_box_exchange(port, url)
    at = dict(zip(outcome.types, outcome.arrived))
    timings = outcome.last["timings"]
    model = timings["encode_ms"] + timings["decode_ms"]

    def ms(start: float, end: float) -> float:
        return (end - start) * 1000

    return {
        "handshake": ms(started, outcome.opened_at),
        "to_queued": ms(outcome.opened_at, at["queued"]),
        "to_status": ms(at["queued"], at["status"]),
        "to_result": ms(at["status"], at["result"]) - model,
        "to_close": ms(at["result"], outcome.closed_at),
        "in_request": ms(started, at["result"]) - model,
        **timings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["quick", "full"], default="quick")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--store", choices=["sqlite", "cosmos"], default="sqlite")
    parser.add_argument("--server", choices=["this-process", "both"], default="this-process",
                        help="both: alternate with `python -m server` in its own process (SQLite only)")
    args = parser.parse_args()
    if args.server == "both" and args.store == "cosmos":
        parser.error("--server both runs on SQLite only")
    sitting = Sitting(args.mode, args.runs)
    with contextlib.ExitStack() as stack:
        stack.callback(sitting.images.stop)
        if args.store == "cosmos":
            app = stack.enter_context(cosmos_app(sitting))
            if app is None:
                raise SystemExit("the Cosmos DB emulator did not start: run ./scripts/test once to install it")
        else:
            app = sitting.start_app()
            stack.callback(app.stop)
        ports = {"this process": app.port}
        if args.server == "both":
            ports["its own process"] = stack.enter_context(sitting.start_server()).port
        rows: dict[str, list[dict[str, float]]] = {name: [] for name in ports}
        for run in range(args.runs + 1):  # run 0 warms every side and is not counted
            for name, port in ports.items():
                url, _ = sitting.new_image()
                row = one_request(port, url)
                if run:
                    rows[name].append(row)
    for side, found in rows.items():
        print(f"server in {side}:")
        for name in found[0]:
            values = [row[name] for row in found]
            print(f"  {name:12s} p50 {statistics.median(values):9.2f} ms   min {min(values):9.2f} ms")


if __name__ == "__main__":
    main()
