"""`python -m server` runs the service; `python -m server audit` checks the records."""

from __future__ import annotations

import argparse
import sys

from server.config import Settings, SettingsError


def audit(settings: Settings) -> int:
    """Print every record whose timestamps break the order invariant; 1 if any."""
    from server import jobs
    from server.store import open_store

    store = open_store(settings)
    total = broken = 0
    for record in store.records():
        total += 1
        problems = jobs.order_violations(record)
        if problems:
            broken += 1
            print(f"{record['id']} status={record.get('status')}: {'; '.join(problems)}")
    store.close()
    print(f"audited {total} records: {broken} break the order invariant")
    return 1 if broken else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["serve", "audit"], default="serve")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"cap: {exc}", file=sys.stderr)
        return 2
    if args.command == "audit":
        return audit(settings)

    from server.main import configure_logging, serve_forever

    configure_logging(settings)
    return serve_forever(settings)


if __name__ == "__main__":
    sys.exit(main())
