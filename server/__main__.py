"""`python -m server` (or `cap`, once installed) runs the service; `audit` checks the records;
`download-checkpoint` fetches SAM's weights."""

from __future__ import annotations

import argparse
import sys

from server import program_name
from server.config import Settings, SettingsError
from server.models.checkpoint_file import download_command
from server.models.registry import MODEL_TYPES, checkpoint_name, model_type as row_of

# How long past JOB_TIMEOUT the audit gives the sweep, which looks every 30 s at most.
AUDIT_GRACE_SECONDS = 60.0


def audit(settings: Settings) -> int:
    """Print every record whose timestamps break the order invariant, or that is past its time; 1 if any.

    A record not terminal JOB_TIMEOUT + AUDIT_GRACE_SECONDS after its
    `createdAt` is one no server's sweep ended (none runs on the store, or
    its sweep is stuck): a server started alone on the store interrupts it.
    """
    from server import jobs
    from server.clock import utcnow
    from server.store import open_store

    store = open_store(settings)
    now = utcnow()
    horizon = settings.job_timeout + AUDIT_GRACE_SECONDS
    total = broken = late = 0
    for record in store.records():
        total += 1
        problems = jobs.order_violations(record)
        broken += bool(problems)
        past_time = jobs.overdue(record, now=now, horizon_seconds=horizon)
        if past_time:
            late += 1
            problems.append(f"{past_time} (JOB_TIMEOUT={settings.job_timeout:.0f} s): no server ended it")
        if problems:
            print(f"{record['id']} status={record.get('status')}: {'; '.join(problems)}")
    store.close()
    print(f"audited {total} records: {broken} break the order invariant, {late} are not terminal past their time")
    return 1 if broken or late else 0


def download_checkpoint(settings: Settings, model_type: str | None, url: str | None) -> int:
    """Download the official checkpoint of SAM_MODEL_TYPE to SAM_CHECKPOINT; 1 if that fails."""
    from server.checkpoints import DownloadError, Unreachable, download_checkpoint

    model_type = model_type or settings.sam_model_type
    if model_type != settings.sam_model_type:
        target = settings.sam_checkpoint.parent / checkpoint_name(model_type)
        print(
            f"cap: SAM_MODEL_TYPE is {settings.sam_model_type}, so the server would not load a {model_type} "
            f"checkpoint: set SAM_MODEL_TYPE={model_type} and SAM_CHECKPOINT={target} "
            "(in .env, the environment, or Docker's --env-file), then run this again.",
            file=sys.stderr,
        )
        return 2
    row = row_of(model_type)
    url = url or row.url
    print(f"Downloading {url} to {settings.sam_checkpoint}", file=sys.stderr)
    try:
        # SAM 1's file names carry a hash prefix; SAM 2.1's do not, so those files are verified by loading them.
        verify = None if row.sha256_prefix else (lambda path: _loads_as(model_type, path))
        download_checkpoint(url, settings.sam_checkpoint, verify=verify)
    except Unreachable as exc:
        print(
            f"cap: {exc}, so nothing was written: download {row.url} where there is internet access and copy it to "
            f"{settings.sam_checkpoint.resolve()}, or run `{download_command()} --url URL` with a mirror's copy of "
            f"{row.checkpoint_name}.",
            file=sys.stderr,
        )
        return 1
    except DownloadError as exc:
        print(f"cap: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(
            f"cap: cannot write {settings.sam_checkpoint} ({exc.strerror}): make its folder writable by this user "
            "(in Docker, a volume on /checkpoints owned by uid 10001), or set SAM_CHECKPOINT to a path that is.",
            file=sys.stderr,
        )
        return 1
    return 0


def _loads_as(model_type: str, path) -> None:
    """Raise unless `path` loads strictly as `model_type` (SAM 2.1's files carry no hash to check)."""
    from server.models.checkpoint_file import CheckpointError
    from server.models.loading import load_model

    try:
        load_model(model_type, path, "cpu", "fp32")
    except CheckpointError:
        raise ValueError(f"it does not load as a {model_type} model") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=program_name("server"), description="Run CAP, check its records, or fetch SAM's weights."
    )
    commands = parser.add_subparsers(dest="command", title="commands (default: serve)")
    commands.add_parser("serve", help="run the service")
    commands.add_parser(
        "audit", help="list records that break the order invariant or are not terminal past their time; exit 1 if any"
    )
    download = commands.add_parser(
        "download-checkpoint", help="download the official SAM checkpoint to SAM_CHECKPOINT, verified"
    )
    download.add_argument("model_type", nargs="?", choices=list(MODEL_TYPES), help="default: SAM_MODEL_TYPE")
    download.add_argument(
        "--url", help="download from this mirror instead; a SAM 1 file name must carry the SHA-256 prefix"
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"cap: {exc}", file=sys.stderr)
        return 2
    if args.command == "audit":
        return audit(settings)
    if args.command == "download-checkpoint":
        return download_checkpoint(settings, args.model_type, args.url)

    from server.main import configure_logging, serve_forever

    configure_logging(settings)
    return serve_forever(settings)


if __name__ == "__main__":
    sys.exit(main())
