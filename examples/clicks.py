"""Open a session on one image, then click on it: each click is answered at the mask decoder's speed.

    python examples/clicks.py ws://localhost:8080/ https://example.com/cat.jpg 120,80 300,200:0 [--token TOKEN]

Each x,y is a click on the object (x,y:0 is a click off it). The image, an
http(s) URL or a file (sent inline as a data: URL), is sent once; each click
names it by its hash and refines the previous click's mask. A server with
API_TOKEN set wants its token: --token, else the API_TOKEN variable.
"""
import argparse, base64, json, mimetypes, os, sys
from pathlib import Path
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

parser = argparse.ArgumentParser(description="Open a session on one image, then click on it.")
parser.add_argument("server", help="ws://host:port/")
parser.add_argument("image", help="an http(s) URL, or an image file")
parser.add_argument("clicks", nargs="*", help="x,y on the object, x,y:0 off it")
parser.add_argument("--token", default=os.environ.get("API_TOKEN", "").split(",")[0], help="default: $API_TOKEN")
args = parser.parse_args()


def image_url_of(image: str) -> str:
    if image.startswith(("http://", "https://")):
        return image
    data = base64.b64encode(Path(image).read_bytes()).decode()
    return f"data:{mimetypes.guess_type(image)[0]};base64,{data}"


def ask(ws, request):
    ws.send(json.dumps({**request, "keep_open": True}))
    while True:
        message = json.loads(ws.recv())
        if message["type"] in ("result", "error"):
            return message


try:
    image_url = image_url_of(args.image)
    ws = connect(args.server, additional_headers={"Authorization": f"Bearer {args.token}"} if args.token else {})
except InvalidStatus as refused:  # 401: no token, or a wrong one
    code = refused.response.status_code
    hint = "check the token" if args.token else "it needs a token: pass --token or set API_TOKEN"
    sys.exit(f"The server refused the connection (HTTP {code}): {hint if code == 401 else 'is it a CAP server?'}.")
except OSError as error:
    sys.exit(f"Cannot read {error.filename}: {error.strerror}." if error.filename else f"Cannot reach {args.server}: {error}.")
with ws:
    opened = ask(ws, {"image_url": image_url, "prompts": []})  # the encoder runs now, once
    if opened["type"] == "error":
        sys.exit(f"{opened['code']}: {opened['message']}")
    sha256, points, previous = opened["image"]["sha256"], [], None
    print(f"opened {opened['image']['width']}x{opened['image']['height']}, encoder {opened['timings']['encode_ms']:.0f} ms")
    for click in args.clicks:
        where, _, label = click.partition(":")
        x, y = (float(v) for v in where.split(","))
        points.append({"x": x, "y": y, "label": int(label or 1)})
        prompt = {"points": points}
        if previous is not None:
            prompt["mask_input"] = {"id": previous, "index": 0}
        answer = ask(ws, {"image_sha256": sha256, "prompts": [prompt], "output": ["polygons"]})
        if answer["type"] == "error":
            sys.exit(f"{answer['code']}: {answer['message']}")
        mask = answer["masks"][0]
        # Polygons past the server's MAX_POLYGON_VERTICES are left out, and the mask says so.
        rings = "polygons omitted" if mask.get("polygons_omitted") else f"{len(mask['polygons'])} polygon rings"
        print(f"{len(points)} points: score {mask['score']:.3f}, area {mask['area']} px, "
              f"{rings}, {answer['timings']['total_ms']:.0f} ms")
        previous = answer["id"]
