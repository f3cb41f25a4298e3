"""Open a session on one image, then click on it: each click is answered at the mask decoder's speed.

    python examples/clicks.py ws://localhost:8080/ https://example.com/cat.jpg 120,80 300,200:0

Each x,y is a click on the object (x,y:0 is a click off it). The image is sent
once; each click names it by its hash and refines the previous click's mask.
"""
import json, sys
from websockets.sync.client import connect

server, image_url, clicks = sys.argv[1], sys.argv[2], sys.argv[3:]


def ask(ws, request):
    ws.send(json.dumps({**request, "keep_open": True}))
    while True:
        message = json.loads(ws.recv())
        if message["type"] in ("result", "error"):
            return message


with connect(server) as ws:
    opened = ask(ws, {"image_url": image_url, "prompts": []})  # the encoder runs now, once
    if opened["type"] == "error":
        sys.exit(f"{opened['code']}: {opened['message']}")
    sha256, points, previous = opened["image"]["sha256"], [], None
    print(f"opened {opened['image']['width']}x{opened['image']['height']}, encoder {opened['timings']['encode_ms']:.0f} ms")
    for click in clicks:
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
        print(f"{len(points)} points: score {mask['score']:.3f}, area {mask['area']} px, "
              f"{len(mask['polygons'])} polygon rings, {answer['timings']['total_ms']:.0f} ms")
        previous = answer["id"]
