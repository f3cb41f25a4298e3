"""The Queue record and its lifecycle (docs/records.md). Pure: no store, no clock.

A record moves createdAt -> processing -> processed -> finished, or stops
early, terminal, `interrupted` or `failed`. Each transition returns a new
record, or raises `TransitionRefused` (a claim that lost a race, say); the
store writes it only if the old one is unchanged (ETag), else decides again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

Record = dict[str, Any]

QUEUED, PROCESSING, PROCESSED = "queued", "processing", "processed"
FINISHED, INTERRUPTED, FAILED = "finished", "interrupted", "failed"
TERMINAL = frozenset({FINISHED, INTERRUPTED, FAILED})
# Forward stages in order: each status is named after the timestamp it sets.
STAGES = ("createdAt", PROCESSING, PROCESSED, FINISHED)
TIMESTAMP_FIELDS = STAGES + (INTERRUPTED, FAILED)


class TransitionRefused(Exception):
    """The record's current state does not allow this transition."""


def format_time(moment: dt.datetime) -> str:
    """ISO-8601 UTC with fixed width, so that the strings sort like the times."""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _stamp(now: dt.datetime, after: str) -> str:
    """`now`, but never earlier than the stage before it.

    Replicas on different hosts may disagree about the time; clamping keeps
    each record's timestamps in order whatever their clocks say.
    """
    return format_time(max(now, parse_time(after)))


def new_record(
    job_id: str,
    *,
    now: dt.datetime,
    image_url: str,
    image_sha256: str,
    width: int,
    height: int,
    boxes: list[dict[str, float]],
    multimask: bool,
    prompts: list[dict[str, Any]] | None = None,
    output: list[str] | None = None,
    preferred_server: str | None = None,
    scope: str | None = None,
    waiter_lease_seconds: float | None = None,
    progress_total: int | None = None,
    everything: dict[str, Any] | None = None,
    mask_scale: float | None = None,
    client: str = "websocket",
) -> Record:
    """A queued record; every field is in docs/records.md. Protocol 1 keeps its boxes in `boxes` and no
    `prompts`; 1.1 keeps its prompts whole, and in `boxes` those prompts' boxes. `preferredServer`: the
    replica whose embedding cache holds the image. `scope`: the API token's (server/tokens.py).
    `waiterLeaseUntil`: the waiter's lease (`renew_waiter`; None: none). `client`: the door it came in
    by (server/adapters/calls.py). `progress_total`: a long job's steps (`note_progress`). `everything`
    (1.2): the generator's parameters as sent. `mask_scale` (1.2): None for masks at the image's size."""
    waiter_lease = None if waiter_lease_seconds is None else now + dt.timedelta(seconds=waiter_lease_seconds)
    return {
        "id": job_id,
        "uuid": job_id,
        "status": QUEUED,
        "createdAt": format_time(now),
        PROCESSING: None,
        PROCESSED: None,
        FINISHED: None,
        INTERRUPTED: None,
        FAILED: None,
        "error": None,
        "boxes": boxes,
        "prompts": prompts,
        "output": output or ["rle"],
        "multimask": multimask,
        "maskScale": mask_scale,
        "imageUrl": image_url,
        "imageSha256": image_sha256,
        "width": width,
        "height": height,
        "attempts": 0,
        "leaseUntil": None,
        "serverId": None,
        "preferredServer": preferred_server,
        "scope": scope,
        "resultBytes": None,
        "waiterLeaseUntil": None if waiter_lease is None else format_time(waiter_lease),
        "progress": None if progress_total is None else {"done": 0, "total": progress_total},
        "video": None,  # a video request's kind and parameters (server/video_requests.py)
        "everything": everything,
        "client": client,
    }


@dataclasses.dataclass(frozen=True)
class Work:
    """What a record asks of the model, typed once: the processor reads this, not the record's camelCase.

    `prompts` is None for a protocol 1 request, whose prompts are its `boxes`
    and whose masks echo `box`; a 1.1 request's masks echo `prompt`.
    """

    id: str
    image_sha256: str
    image_url: str
    multimask: bool
    boxes: tuple[dict[str, float], ...]
    prompts: tuple[dict[str, Any], ...] | None
    output: tuple[str, ...]
    scope: str | None = None
    everything: dict[str, Any] | None = None  # (1.2) the generator's parameters as sent
    mask_scale: float | None = None

    @classmethod
    def of(cls, record: Record) -> "Work":
        prompts = record.get("prompts")
        return cls(
            id=record["id"],
            image_sha256=record["imageSha256"],
            image_url=record["imageUrl"],
            multimask=record["multimask"],
            boxes=tuple(record["boxes"]),
            prompts=None if prompts is None else tuple(prompts),
            output=tuple(record.get("output") or ("rle",)),
            scope=record.get("scope"),
            everything=record.get("everything"),
            mask_scale=record.get("maskScale"),
        )

    def echoes(self) -> list[dict[str, Any]]:
        """What each prompt's masks carry to say what they answer."""
        if self.prompts is None:
            return [{"box": box} for box in self.boxes]
        return [{"prompt": prompt} for prompt in self.prompts]


def is_terminal(record: Record) -> bool:
    return record["status"] in TERMINAL


def lease_expired(record: Record, now: dt.datetime) -> bool:
    return record["status"] == PROCESSING and record["leaseUntil"] is not None and parse_time(record["leaseUntil"]) <= now


def waiter_gone(record: Record, now: dt.datetime) -> bool:
    """Whether the connection waiting for this record stopped renewing its lease: no one waits any more."""
    until = record.get("waiterLeaseUntil")
    return until is not None and parse_time(until) <= now


def renew_waiter(record: Record, *, now: dt.datetime, lease_seconds: float) -> Record:
    """The waiting connection is still there: its lease runs `lease_seconds` from now."""
    if record["status"] not in (QUEUED, PROCESSING):
        raise TransitionRefused(f"record is {record['status']}: no lease to renew")
    return {**record, "waiterLeaseUntil": format_time(now + dt.timedelta(seconds=lease_seconds))}


def claim(
    record: Record,
    *,
    now: dt.datetime,
    server_id: str,
    lease_seconds: float,
    max_attempts: int,
) -> Record:
    """Claim a queued record, or reclaim one whose processor's lease expired.

    A record whose waiter's lease lapsed returns `interrupted` instead: no
    one would read its result. A reclaim past `max_attempts` returns it `failed`.
    """
    if record["status"] != QUEUED and not lease_expired(record, now):
        raise TransitionRefused(f"record is {record['status']}, not claimable")
    if waiter_gone(record, now):
        return interrupt(record, now=now, reason=WAITER_GONE)
    if record["attempts"] >= max_attempts:
        message = f"Processing was attempted {record['attempts']} times without finishing."
        return fail(record, now=now, code="processing_failed", message=message)
    return {
        **record,
        "status": PROCESSING,
        PROCESSING: _stamp(now, record["createdAt"]),
        "attempts": record["attempts"] + 1,
        "leaseUntil": format_time(now + dt.timedelta(seconds=lease_seconds)),
        "serverId": server_id,
    }


def note_progress(
    record: Record, *, now: dt.datetime, done: int, total: int, server_id: str, lease_seconds: float
) -> Record:
    """The processor holding the record has done `done` of `total` steps; its lease runs on from now.

    Refused once the record is no longer this processor's to work on
    (interrupted, or reclaimed by another): the work stops there.
    """
    if record["status"] != PROCESSING or record.get("serverId") != server_id:
        raise TransitionRefused(f"record is {record['status']} on {record.get('serverId')}, not this processor's")
    return {
        **record,
        "progress": {"done": done, "total": total},
        "leaseUntil": format_time(now + dt.timedelta(seconds=lease_seconds)),
    }


def mark_processed(record: Record, *, now: dt.datetime, result_bytes: int = 0) -> Record:
    """The result, of `result_bytes` bytes of masks JSON, is stored in SAMOutput."""
    if record["status"] != PROCESSING:
        raise TransitionRefused(f"record is {record['status']}, not processing")
    return {
        **record, "status": PROCESSED, PROCESSED: _stamp(now, record[PROCESSING]), "leaseUntil": None,
        "resultBytes": result_bytes,
    }


def mark_finished(record: Record, *, now: dt.datetime) -> Record:
    """The result was sent to the client."""
    if record["status"] != PROCESSED:
        raise TransitionRefused(f"record is {record['status']}, not processed")
    return {**record, "status": FINISHED, FINISHED: _stamp(now, record[PROCESSED])}


# Why a processor interrupted a record instead of processing it (kept in `error`).
WAITER_GONE = {
    "code": "waiter_gone",
    "message": "No connection renewed its wait for this request within WAITER_LEASE_SECONDS, "
    "so it was not processed; send it again.",
}


def interrupt(record: Record, *, now: dt.datetime, reason: dict[str, str] | None = None) -> Record:
    """The client went away, or the server gave up on the record.

    `reason` (`{code, message}`, kept in `error`) says why when no client
    was there to be told: a server restarted on the record's orphans, or a
    processor found its waiter's lease lapsed (WAITER_GONE).
    """
    if is_terminal(record):
        raise TransitionRefused(f"record is already {record['status']}")
    stopped = {**record, "status": INTERRUPTED, INTERRUPTED: _stamp(now, _latest(record)), "leaseUntil": None}
    return stopped if reason is None else {**stopped, "error": reason}


def _latest(record: Record) -> str:
    """The latest forward stage's timestamp."""
    return max(record[name] for name in STAGES if record.get(name) is not None)


def fail(record: Record, *, now: dt.datetime, code: str, message: str) -> Record:
    """Processing failed for good."""
    if is_terminal(record):
        raise TransitionRefused(f"record is already {record['status']}")
    return {
        **record,
        "status": FAILED,
        FAILED: _stamp(now, _latest(record)),
        "error": {"code": code, "message": message},
        "leaseUntil": None,
    }


def fail_unclaimed(record: Record, *, now: dt.datetime, code: str, message: str) -> Record:
    """Fail a record that no processor holds (queued, or its lease expired), and no other."""
    if record["status"] != QUEUED and not lease_expired(record, now):
        raise TransitionRefused(f"record is {record['status']}, held by a processor")
    return fail(record, now=now, code=code, message=message)


def overdue(record: Record, *, now: dt.datetime, horizon_seconds: float) -> str | None:
    """Why a record is past its time: not terminal `horizon_seconds` after its `createdAt`; else None.

    A long job that reports progress (a propagation, `everything`) renews its
    lease with each report: while that lease holds, it is working, not stuck,
    so the horizon bounds a stall rather than the length of the work.
    """
    if is_terminal(record):
        return None
    if record.get("progress") is not None and record.get("leaseUntil") and parse_time(record["leaseUntil"]) > now:
        return None
    try:
        age = (now - parse_time(record["createdAt"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None  # order_violations says what is wrong with createdAt
    if age <= horizon_seconds:
        return None
    return f"still {record.get('status')} {age:.0f} s after createdAt, past the {horizon_seconds:.0f} s a request may take"


def order_violations(record: Record) -> list[str]:
    """What is wrong with this record's timestamps; empty when it is sound.

    The forward stages must be set in order with no gaps and non-decreasing
    times; at most one terminal stop; `status` names the latest timestamp set.
    """
    problems = []
    times = {}
    for name in TIMESTAMP_FIELDS:
        value = record.get(name)
        if value is None:
            continue
        try:
            times[name] = parse_time(value)
        except (TypeError, ValueError):
            problems.append(f"{name} is not an ISO-8601 time: {value!r}")
    if "createdAt" not in times:
        problems.append("createdAt is missing")
        return problems

    forward = [name for name in STAGES if name in times]
    expected = list(STAGES[: len(forward)])
    if forward != expected:
        problems.append(f"stages {forward} skip one of {expected}")
    for earlier, later in zip(forward, forward[1:]):
        if times[later] < times[earlier]:
            problems.append(f"{later} ({record[later]}) is before {earlier} ({record[earlier]})")

    stops = [name for name in (INTERRUPTED, FAILED) if name in times]
    if len(stops) > 1:
        problems.append("both interrupted and failed are set")
    if FINISHED in times and stops:
        problems.append(f"finished and {stops[0]} are both set")
    for stop in stops:
        if times[stop] < times["createdAt"]:
            problems.append(f"{stop} ({record[stop]}) is before createdAt ({record['createdAt']})")

    latest = stops[0] if stops else (forward[-1] if forward[-1] != "createdAt" else QUEUED)
    if record.get("status") != latest:
        problems.append(f"status is {record.get('status')!r} but the latest timestamp says {latest!r}")
    return problems
