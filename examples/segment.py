"""Send one image and one box to CAP; print every message it sends back."""
import json, sys
from websockets.sync.client import connect

server, image_url = sys.argv[1], sys.argv[2]
request = {"image_url": image_url, "boxes": [{"x": 10, "y": 20, "width": 200, "height": 150}]}
with connect(server) as ws:
    ws.send(json.dumps(request))
    while True:
        message = json.loads(ws.recv())
        if message["type"] == "result":
            for mask in message["masks"]:  # decode with pycocotools.mask.decode(mask["segmentation"])
                mask["segmentation"]["counts"] = mask["segmentation"]["counts"][:16] + "..."
        print(json.dumps(message))
        if message["type"] in ("result", "error"):
            break
sys.exit(1 if message["type"] == "error" else 0)
