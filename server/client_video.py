"""`python -m server.client … --video`: track one object through a clip with a SAM 2.1 server (docs/protocol.md, "Video").

Opens the clip on a session, prompts object 1 on `--frame` with the points
and box given, propagates forward to the clip's end and backward to its
start, prints one line per frame, and writes the masks, when asked, as
COCO-style JSON: one image per frame, one annotation (RLE) for each.
"""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path
from typing import Any

from server.client_session import EXIT_LOCAL, EXIT_OK, Failure, ask, session

MEDIA_TYPES = {".mp4": "video/mp4", ".webm": "video/webm"}


def video_to_send(source: str) -> str:
    """The video's URL, or a local mp4 or webm file as a data: URL."""
    if source.startswith(("http://", "https://")):
        return source
    media = MEDIA_TYPES.get(Path(source).suffix.lower())
    if media is None:
        raise Failure(EXIT_LOCAL, f"{source}: give an http(s) URL, or an .mp4 or .webm file")
    try:
        return f"data:{media};base64,{base64.b64encode(Path(source).read_bytes()).decode()}"
    except OSError as exc:
        raise Failure(EXIT_LOCAL, f"cannot read {source}: {exc.strerror}") from None


def object_prompt(
    boxes: list[dict[str, float]], positive: list[tuple[float, float]], negative: list[tuple[float, float]]
) -> dict[str, Any]:
    """The one object's prompt: its points and at most one box."""
    if not boxes and not positive and not negative:
        raise Failure(EXIT_LOCAL, "give at least one --box, --point or --negative")
    if len(boxes) > 1:
        raise Failure(EXIT_LOCAL, "with --video, the points and at most one --box make one object")
    points = [{"x": x, "y": y, "label": 1} for x, y in positive] + [{"x": x, "y": y, "label": 0} for x, y in negative]
    return ({"points": points} if points else {}) | ({"box": boxes[0]} if boxes else {})


def coco(clip: dict[str, Any], masks: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The tracked object's masks, COCO-style: an image per frame, an annotation per mask."""
    return {
        "video": clip,
        "images": [{"id": frame, "frame": frame, "width": clip["width"], "height": clip["height"]} for frame in sorted(masks)],
        "annotations": [
            {"id": frame + 1, "image_id": frame, "category_id": 1, "track_id": 1, "iscrowd": 0,
             "segmentation": mask["segmentation"], "area": mask["area"], "bbox": mask["bbox"]}
            for frame, mask in sorted(masks.items())
        ],
        "categories": [{"id": 1, "name": "object"}],
    }


def track(args: argparse.Namespace, prompt: dict[str, Any]) -> int:
    """Open, prompt, propagate both ways; print a line per frame; write --json."""
    masks: dict[int, dict[str, Any]] = {}

    def keep(message: dict[str, Any]) -> None:
        [mask] = message["masks"]
        masks[message["frame"]] = mask
        print(f"frame {message['frame']}: area {mask['area']}, bbox {mask['bbox']}", flush=True)

    with session(args.server, args.token) as ws:
        clip = ask(ws, {"video_url": video_to_send(args.video), "keep_open": True})["video"]
        print(f"video: {clip['frames']} frames of {clip['width']}x{clip['height']} at {clip['fps']} fps", flush=True)
        on = {"video_sha256": clip["sha256"], "keep_open": True}
        ask(ws, {**on, "frame": args.frame, "prompts": [{"object": 1, **prompt}]})
        for direction in ("forward", "backward"):
            ask(ws, {**on, "propagate": {"from": args.frame, "direction": direction}}, keep)
    if args.json is not None:
        try:
            args.json.write_text(json.dumps(coco(clip, masks)))
        except OSError as exc:
            raise Failure(EXIT_LOCAL, f"cannot write {args.json}: {exc.strerror}") from None
        print(f"wrote {args.json}")
    return EXIT_OK
