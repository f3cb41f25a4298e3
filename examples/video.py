"""Track an object through a clip with CAP (SAM 2.1): open it, click the object on a frame, propagate.

    python examples/video.py ws://localhost:8080/ VIDEO --frame 0 --point 120,80 [--out DIR] [--token TOKEN]

VIDEO is an http(s) URL the server downloads, or an mp4/webm file sent inline
as a data: URL (small files only). The object clicked is tracked forward
from that frame to the clip's end, then backward to its start. DIR receives
`masks.json` (COCO-style: one annotation per frame, RLE) and, when VIDEO is a
local file, `overlay_<frame>.png` for each frame (the mask in red over it).
"""
import argparse, base64, json, os, sys
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from websockets.sync.client import connect

parser = argparse.ArgumentParser(description="Track one object through a clip with CAP.")
parser.add_argument("server", help="ws://host:port/")
parser.add_argument("video", help="an http(s) URL, or an mp4/webm file")
parser.add_argument("--frame", type=int, default=0, help="the frame to click on")
parser.add_argument("--point", required=True, help="x,y of the click, in the frame's pixels")
parser.add_argument("--out", type=Path, default=Path("video_out"))
parser.add_argument("--token", default=os.environ.get("API_TOKEN", "").split(",")[0], help="default: $API_TOKEN")
args = parser.parse_args()
x, y = (float(v) for v in args.point.split(","))
local = not args.video.startswith(("http://", "https://"))
if local:
    media = "video/webm" if args.video.endswith(".webm") else "video/mp4"
    video_url = f"data:{media};base64,{base64.b64encode(Path(args.video).read_bytes()).decode()}"
else:
    video_url = args.video


def ask(ws, request: dict, on_frame=lambda message: None) -> dict:
    """Send one session request; pass each frame message on; the result (or exit on an error)."""
    ws.send(json.dumps({**request, "keep_open": True}))
    while True:
        message = json.loads(ws.recv())
        if message["type"] == "frame":
            on_frame(message)
        elif message["type"] == "progress":
            print(f"  {message['done']}/{message['total']}", file=sys.stderr)
        elif message["type"] == "error":
            sys.exit(f"error {message['code']}: {message['message']}")
        elif message["type"] == "result":
            return message


masks: dict[int, dict] = {}  # frame -> the object's RLE
headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
with connect(args.server, additional_headers=headers, max_size=None) as ws:
    clip = ask(ws, {"video_url": video_url})["video"]
    print(f"opened: {clip['frames']} frames of {clip['width']}x{clip['height']} at {clip['fps']} fps", file=sys.stderr)
    point = {"x": x, "y": y, "label": 1}
    ask(ws, {"video_sha256": clip["sha256"], "frame": args.frame, "prompts": [{"object": 1, "points": [point]}]})
    keep = lambda message: masks.__setitem__(message["frame"], message["masks"][0])  # noqa: E731
    for direction in ("forward", "backward"):
        done = ask(ws, {"video_sha256": clip["sha256"], "propagate": {"from": args.frame, "direction": direction}}, keep)
        print(f"{direction}: {done['frames']} frames", file=sys.stderr)

args.out.mkdir(parents=True, exist_ok=True)
coco = {
    "images": [{"id": i, "frame": i, "width": clip["width"], "height": clip["height"]} for i in sorted(masks)],
    "annotations": [
        {"id": i + 1, "image_id": i, "category_id": 1, "track_id": 1, "segmentation": m["segmentation"],
         "area": m["area"], "bbox": m["bbox"], "iscrowd": 0}
        for i, m in sorted(masks.items())
    ],
    "categories": [{"id": 1, "name": "object"}],
}
(args.out / "masks.json").write_text(json.dumps(coco))
if local:
    capture = cv2.VideoCapture(args.video)
    index = 0
    while (frame := capture.read())[0]:
        if index in masks:
            segmentation = masks[index]["segmentation"]
            mask = mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()}).astype(bool)
            image = frame[1]
            image[mask] = (0.5 * image[mask] + 0.5 * np.array([0, 0, 255])).astype(np.uint8)
            cv2.imwrite(str(args.out / f"overlay_{index:05d}.png"), image)
        index += 1
print(f"{len(masks)} frames written to {args.out}", file=sys.stderr)
