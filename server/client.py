"""`python -m server.client` (or `cap-client`, once installed): segment an image with a CAP
server from the command line.

    python -m server.client ws://host:8080 --image URL_OR_PATH --box x,y,w,h [--box ...]
        [--multimask] [--mask-scale S] [--token T] [--out overlay.png] [--json result.json]
    python -m server.client ws://host:8080 --image URL_OR_PATH --everything ['{"points_per_side": 16}']

A plain WebSocket client of the public protocol (README, "The protocol"). A
local file is sent as a data: URL. It prints the progress and the timings, and
writes files only where asked: the masks over the image as a PNG (--out) and
the result message as JSON (--json). The exit status says how it went: see
the EXIT_ constants.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image, ImageDraw, ImageOps
from pycocotools import mask as mask_utils

from server import program_name
from server.client_session import EXIT_CONNECTION, EXIT_LOCAL, EXIT_OK, EXIT_SERVER_ERROR, Failure, ask, session
from server.client_video import object_prompt, track


# The page's colours (server/page.html), one per box, and how much they cover the image.
COLOURS = [
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40),
]
OPACITY = 0.5
DOWNLOAD_TIMEOUT = 30

# Magic bytes of the formats a data: URL may carry.
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}


# --- pure helpers -------------------------------------------------------------------


def parse_box(text: str) -> dict[str, float]:
    """`x,y,w,h` in image pixels, as the protocol's box object."""
    parts = text.split(",")
    try:
        x, y, width, height = (float(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not x,y,w,h (four numbers)") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: width and height must be greater than 0")
    return {"x": x, "y": y, "width": width, "height": height}


def parse_point(text: str) -> tuple[float, float]:
    """`x,y` in image pixels."""
    try:
        x, y = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not x,y (two numbers)") from None
    return x, y


def build_request(
    image_url: str,
    boxes: list[dict[str, float]],
    positive: list[tuple[float, float]],
    negative: list[tuple[float, float]],
    multimask: bool,
    polygons: bool,
    everything: dict[str, Any] | None = None,
    mask_scale: float | None = None,
) -> dict[str, Any]:
    """Boxes alone: one prompt each (protocol 1's boxes). With points: one prompt of all the points and the box.
    `everything` (the generator's parameters): every mask of the image, and no prompts."""
    if everything is not None and (boxes or positive or negative or multimask):
        raise Failure(EXIT_LOCAL, "--everything takes no --box, --point, --negative or --multimask")
    if everything is None and not boxes and not positive and not negative:
        raise Failure(EXIT_LOCAL, "give at least one --box, --point or --negative, or --everything")
    request: dict[str, Any] = {"image_url": image_url}
    request.update({"everything": everything} if everything is not None else {"multimask": multimask})
    if polygons:
        request["output"] = ["rle", "polygons"]
    if everything is not None:
        return request
    if mask_scale is not None:
        request["mask_scale"] = mask_scale
    if not positive and not negative:
        return {**request, "boxes": boxes}
    if len(boxes) > 1:
        raise Failure(EXIT_LOCAL, "points make one prompt, which takes at most one --box")
    points = [{"x": x, "y": y, "label": 1} for x, y in positive] + [{"x": x, "y": y, "label": 0} for x, y in negative]
    prompt: dict[str, Any] = {"points": points}
    if boxes:
        prompt["box"] = boxes[0]
    return {**request, "prompts": [prompt]}


def parse_everything(text: str) -> dict[str, Any]:
    """The generator's parameters, a JSON object (`{}`: the server's defaults)."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object of parameters, e.g. '{{\"points_per_side\": 16}}'")
    return value


def is_url(text: str) -> bool:
    return text.lower().startswith(("http://", "https://"))


def media_type(data: bytes) -> str | None:
    """image/png, image/jpeg or image/webp from the file's first bytes; None for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in _SIGNATURES.items() if data.startswith(magic)), None)


def data_url(data: bytes) -> str:
    kind = media_type(data)
    if kind is None:
        raise ValueError("only PNG, JPEG and WebP files can be sent")
    return f"data:{kind};base64," + base64.b64encode(data).decode("ascii")


def best_mask(answer: dict | list[dict]) -> dict:
    """The mask to draw for one box: with --multimask, the best-scoring candidate."""
    return max(answer, key=lambda mask: mask["score"]) if isinstance(answer, list) else answer


def decode_mask(segmentation: dict[str, Any]) -> np.ndarray:
    """The H×W bool mask of one wire segmentation (COCO RLE)."""
    rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def overlay(pixels: np.ndarray, result: dict[str, Any]) -> Image.Image:
    """The image with each box's mask blended in its colour, and the box outlined."""
    height, width = pixels.shape[:2]
    if (result["image"]["width"], result["image"]["height"]) != (width, height):
        raise ValueError(
            f"the server saw a {result['image']['width']}x{result['image']['height']} image, "
            f"this command a {width}x{height} one"
        )
    blended = pixels.astype(np.float32)
    for index, answer in enumerate(result["masks"]):
        mask = decode_mask(best_mask(answer)["segmentation"])
        if mask.shape != (height, width):  # asked at a --mask-scale: stretched to the image, pixel by nearest pixel
            mask = np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))
        blended[mask] = (1 - OPACITY) * blended[mask] + OPACITY * np.array(COLOURS[index % len(COLOURS)])
    image = Image.fromarray(np.round(blended).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for index, answer in enumerate(result["masks"]):
        colour = COLOURS[index % len(COLOURS)]
        prompt = echoed_prompt(best_mask(answer))
        if "box" in prompt:
            box = prompt["box"]
            draw.rectangle([box["x"], box["y"], box["x"] + box["width"] - 1, box["y"] + box["height"] - 1], outline=colour, width=2)
        for point in prompt.get("points", []):
            x, y = point["x"], point["y"]
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour if point["label"] else None, outline=colour, width=2)
    return image


def echoed_prompt(mask: dict[str, Any]) -> dict[str, Any]:
    """What a mask answers: protocol 1 echoes its `box`, 1.1 its `prompt`, an everything mask its grid `point`."""
    if "point" in mask:
        return {"points": [{**mask["point"], "label": 1}]}
    return mask["prompt"] if "prompt" in mask else {"box": mask["box"]}


def describe_prompt(prompt: dict[str, Any]) -> str:
    parts = []
    if "box" in prompt:
        box = prompt["box"]
        parts.append(f"box x={box['x']:g} y={box['y']:g} w={box['width']:g} h={box['height']:g}")
    points = prompt.get("points", [])
    if points:
        positive = sum(point["label"] for point in points)
        parts.append(f"{positive} positive and {len(points) - positive} negative points")
    return ", ".join(parts)


def describe_result(result: dict[str, Any]) -> list[str]:
    """The lines printed for a result: one per box, then the timings."""
    image = result["image"]
    count = len(result["masks"])
    lines = [f"result: {count} mask{'' if count == 1 else 's'} for the {image['width']}x{image['height']} image"]
    if "mask_scale" in result:
        lines[0] += f", at mask scale {result['mask_scale']:g} (areas in those pixels)"
    for index, answer in enumerate(result["masks"]):
        candidates = answer if isinstance(answer, list) else [answer]
        scores = ", ".join(f"{mask['score']:.3f} (area {mask['area']} px)" for mask in candidates)
        rings = sum(len(mask.get("polygons", [])) for mask in candidates)
        omitted = sum(bool(mask.get("polygons_omitted")) for mask in candidates)  # past MAX_POLYGON_VERTICES
        asked = omitted or any("polygons" in mask for mask in candidates)
        polygons = f", {rings} polygon ring{'' if rings == 1 else 's'}" if asked else ""
        polygons += f" ({omitted} mask{'' if omitted == 1 else 's'} without: too many vertices)" if omitted else ""
        if "point" in candidates[0]:  # everything: the grid point that made the mask
            what = f"mask {index + 1} from x={candidates[0]['point']['x']:g} y={candidates[0]['point']['y']:g}"
        else:
            name = "box" if "prompt" not in candidates[0] else "prompt"
            what = f"{name} {index + 1} {describe_prompt(echoed_prompt(candidates[0])).removeprefix('box ')}"
        lines.append(f"  {what}: score {scores}{polygons}")
    timings = ", ".join(f"{name.removesuffix('_ms')} {ms:.1f} ms" for name, ms in result["timings"].items())
    lines.append(f"timings: {timings}")
    return lines


# --- I/O ----------------------------------------------------------------------------


def image_to_send(source: str) -> tuple[str, bytes | None]:
    """What to send as image_url: the URL itself, or a local file as a data: URL (with its bytes)."""
    if is_url(source):
        return source, None
    if source.lower().startswith("data:"):
        raise Failure(EXIT_LOCAL, "give a URL or a file path; this command makes the data: URL itself")
    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        raise Failure(EXIT_LOCAL, f"cannot read {source}: {exc.strerror}") from None
    try:
        return data_url(data), data
    except ValueError as exc:
        raise Failure(EXIT_LOCAL, f"{source}: {exc}") from None


def download(url: str) -> bytes:
    """The image at `url`, fetched here too, to draw the overlay on."""
    try:
        response = requests.get(url, timeout=DOWNLOAD_TIMEOUT)
        response.raise_for_status()
    except requests.RequestException as exc:
        raise Failure(EXIT_LOCAL, f"cannot download {url} to draw the overlay on: {exc}") from None
    return response.content


def segment(server: str, request: dict[str, Any], token: str | None) -> dict[str, Any]:
    """Send the request, print each progress message, and return the result message."""
    with session(server, token) as ws:
        return ask(ws, request)


def write_json(result: dict[str, Any], path: Path) -> None:
    try:
        path.write_text(json.dumps(result, indent=2))
    except OSError as exc:
        raise Failure(EXIT_LOCAL, f"cannot write {path}: {exc.strerror}") from None
    print(f"wrote {path}")


def write_overlay(result: dict[str, Any], image_bytes: bytes, path: Path) -> None:
    try:
        with Image.open(io.BytesIO(image_bytes)) as image:
            pixels = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))  # as the server saw it
        overlay(pixels, result).save(path, "PNG")
    except (OSError, ValueError) as exc:  # Pillow's errors are OSError or ValueError
        raise Failure(EXIT_LOCAL, f"cannot write the overlay {path}: {exc}") from None
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=program_name("server.client"),
        description="Send an image and boxes or points (or --everything) to a CAP server; print the progress and the result; write files only where asked.",
        epilog="Exit status: 0 a result, 1 the server answered with an error, "
        "2 bad arguments or a file that cannot be read or written, 3 no connection.",
    )
    parser.add_argument("server", help="the server, e.g. ws://localhost:8080")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="an http(s) URL, or a local PNG, JPEG or WebP file")
    source.add_argument("--video", help="an http(s) URL, or a local mp4 or webm file: track the object (SAM 2.1)")
    parser.add_argument("--frame", type=int, default=0, help="with --video: the frame the points and box are on")
    parser.add_argument("--box", action="append", default=[], type=parse_box, metavar="x,y,w,h",
                        help="a box in image pixels; repeat for more boxes (each is one mask)")
    parser.add_argument("--point", action="append", default=[], type=parse_point, metavar="x,y",
                        help="a point on the object; repeat for more (points and at most one box make one mask)")
    parser.add_argument("--negative", action="append", default=[], type=parse_point, metavar="x,y",
                        help="a point that is not on the object; repeat for more")
    parser.add_argument("--multimask", action="store_true", help="three candidate masks per prompt")
    parser.add_argument("--polygons", action="store_true", help="also ask for each mask's outline as polygons")
    parser.add_argument("--everything", nargs="?", const={}, type=parse_everything, metavar="JSON",
                        help="every mask of the image (segment everything), optionally with the generator's "
                        "parameters as a JSON object")
    parser.add_argument("--mask-scale", type=float, metavar="S",
                        help="masks at this fraction of the image's size, 0 < S <= 1 (faster on large images)")
    parser.add_argument("--token", help="the server's API token, if it needs one")
    parser.add_argument("--out", type=Path, help="write the masks over the image here, as a PNG")
    parser.add_argument("--json", type=Path, help="write the result message here, as JSON")
    args = parser.parse_args(argv)
    try:
        if args.video is not None:
            return track(args, object_prompt(args.box, args.point, args.negative))
        image_url, image_bytes = image_to_send(args.image)
        request = build_request(
            image_url, args.box, args.point, args.negative, args.multimask, args.polygons, args.everything,
            args.mask_scale,
        )
        result = segment(args.server, request, args.token)
        print("\n".join(describe_result(result)), flush=True)
        if args.json is not None:
            write_json(result, args.json)
        if args.out is not None:
            write_overlay(result, image_bytes or download(image_url), args.out)
    except Failure as failure:
        print(f"cap client: {failure.message}", file=sys.stderr)
        return failure.status
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
