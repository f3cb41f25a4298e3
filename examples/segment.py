"""Send one image and one box to CAP; print every message it sends back.

    python examples/segment.py ws://localhost:8080/ IMAGE [--token TOKEN]

IMAGE is an http(s) URL the server downloads, or a file sent inline as a data: URL.
A server with API_TOKEN set wants its token: --token, else the API_TOKEN variable.
"""
import argparse, base64, json, mimetypes, os, sys
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

parser = argparse.ArgumentParser(description="Send one image and one box to CAP; print what it sends back.")
parser.add_argument("server", help="ws://host:port/")
parser.add_argument("image", help="an http(s) URL, or an image file")
parser.add_argument("--token", default=os.environ.get("API_TOKEN", "").split(",")[0], help="default: $API_TOKEN")
args = parser.parse_args()
try:
    image_url = args.image
    if not image_url.startswith(("http://", "https://")):
        with open(args.image, "rb") as file:
            image_url = f"data:{mimetypes.guess_type(args.image)[0]};base64,{base64.b64encode(file.read()).decode()}"
    request = {"image_url": image_url, "boxes": [{"x": 10, "y": 20, "width": 200, "height": 150}]}
    ws = connect(args.server, additional_headers={"Authorization": f"Bearer {args.token}"} if args.token else {})
except InvalidStatus as refused:  # 401: no token, or a wrong one
    code = refused.response.status_code
    hint = "check the token" if args.token else "it needs a token: pass --token or set API_TOKEN"
    sys.exit(f"The server refused the connection (HTTP {code}): {hint if code == 401 else 'is it a CAP server?'}.")
except OSError as error:  # the file, or the server
    sys.exit(f"Cannot read {error.filename}: {error.strerror}." if error.filename else f"Cannot reach {args.server}: {error}.")
with ws:
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
