"""The answers the server sends: queued, status, progress, result and error messages (docs/protocol.md, "The answers").

Pure functions only: each returns the message's JSON text; `client_ref`, when
the request had one, is echoed in every answer to it.
"""

from __future__ import annotations

import json
from typing import Any

from server.errors import CLOSE_CODES


def _dump(message: dict[str, Any], client_ref: str | None = None) -> str:
    if client_ref is not None:
        message["client_ref"] = client_ref
    return json.dumps(message, separators=(",", ":"))


def queued_message(job_id: str, position: int, client_ref: str | None = None) -> str:
    return _dump({"type": "queued", "id": job_id, "position": position}, client_ref)


def status_message(job_id: str, status: str, client_ref: str | None = None) -> str:
    return _dump({"type": "status", "id": job_id, "status": status}, client_ref)


def progress_message(job_id: str, done: int, total: int, client_ref: str | None = None) -> str:
    return _dump({"type": "progress", "id": job_id, "done": done, "total": total}, client_ref)


def frame_message(job_id: str, frame: int, masks: list[Any], client_ref: str | None = None) -> str:
    """One propagated frame: every object's mask on it (docs/protocol.md, "Video")."""
    return _dump({"type": "frame", "id": job_id, "frame": frame, "masks": masks}, client_ref)


def video_result_fields(
    job_id: str, sha256: str, kind: str, output: dict[str, Any], timings: dict[str, float], client_ref: str | None = None
) -> dict[str, Any]:
    """A video request's result: the clip (open), the masks on the frame (prompt), the objects left (remove),
    or how many frames were sent (propagate)."""
    found = output["video"]
    message: dict[str, Any] = {"type": "result", "id": job_id}
    if kind == "open":
        message["video"] = found["video"]
    else:
        message["video_sha256"] = sha256
    if kind == "prompt":
        message |= {"frame": found["frame"], "masks": output["masks"]}
    elif kind == "remove":
        message["objects"] = found["objects"]
    elif kind == "propagate":
        message["frames"] = found["frames"]
    message["timings"] = timings
    return message if client_ref is None else {**message, "client_ref": client_ref}


def result_fields(
    job_id: str,
    *,
    width: int,
    height: int,
    sha256: str | None,
    masks: list[Any],
    timings: dict[str, float],
    cached_embedding: bool,
    client_ref: str | None = None,
    mask_scale: float | None = None,
) -> dict[str, Any]:
    """The result message as a dict: what an adapter translates (server/adapters/), and `result_message` sends.

    With `mask_scale` (1.2), every mask field is at that scale, and the result says so.
    """
    message: dict[str, Any] = {
        "type": "result",
        "id": job_id,
        "image": {"width": width, "height": height} | ({"sha256": sha256} if sha256 else {}),
        "masks": masks,
        "timings": timings,
        "cached_embedding": cached_embedding,
    }
    if mask_scale is not None:
        message["mask_scale"] = mask_scale
    return message if client_ref is None else {**message, "client_ref": client_ref}


def result_message(fields: dict[str, Any]) -> str:
    return _dump(fields)


def error_message(job_id: str | None, code: str, message: str, client_ref: str | None = None) -> str:
    assert code in CLOSE_CODES, code
    return _dump({"type": "error", "id": job_id, "code": code, "message": message}, client_ref)
