"""Where a Label Studio task's image comes from: Label Studio itself (with its key), or a URL.

Pure. Images uploaded to Label Studio or served from its local storage have
task URLs such as `/data/upload/1/cat.png`: CAP reads them from
`LABEL_STUDIO_URL`, with `LABEL_STUDIO_API_KEY` sent as label-studio-sdk
sends it (`Bearer` for a JWT, a personal access token; `Token` for a legacy
token), to that host only; that host may be private. An absolute URL on
that same host is read the same way. Any other http(s) URL is read as a
WebSocket request's `image_url` is, through the SSRF guard, with no key.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import urlsplit

from server.adapters.calls import ImageFetch
from server.adapters.label_studio_config import Target
from server.errors import invalid

LABEL_STUDIO_FILES = "/data/"


def task_image(task: object, target: Target, label_studio_url: str | None, api_key: str | None) -> tuple[dict[str, Any], ImageFetch | None]:
    """(what the request body gets, what to fetch instead) for the task's image."""
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise invalid("tasks[0] must be a task object with its data, as Label Studio sends it.")
    url = task["data"].get(target.data_key)
    if not isinstance(url, str) or not url:
        raise invalid(
            f"The task's data has no image under {target.data_key!r}, the key the Image tag "
            f"{target.to_name!r} names: import the task with its image there."
        )
    if url.startswith(LABEL_STUDIO_FILES) or (label_studio_url and _same_host(url, label_studio_url)):
        return {}, label_studio_fetch(url, label_studio_url, api_key)
    if urlsplit(url).scheme.lower() in ("http", "https"):
        return {"image_url": url}, None
    raise invalid(
        f"The task's image URL has the scheme {urlsplit(url).scheme or 'none'!r}, which CAP cannot read: "
        "use images uploaded to Label Studio, served from its local storage, or at an http(s) URL."
    )


def label_studio_fetch(url: str, label_studio_url: str | None, api_key: str | None) -> ImageFetch:
    """The download of a file Label Studio serves, with its API key; refused when CAP has no URL or key for it."""
    if not label_studio_url or not api_key:
        raise invalid(
            "The task's image is a file in Label Studio: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY on CAP "
            "so that it can read it."
        )
    if ".." in urlsplit(url).path.split("/"):
        raise invalid("The task's image path climbs out of Label Studio's /data/ folder with '..': import it again by its own path.")
    absolute = url if not url.startswith("/") else label_studio_url.rstrip("/") + url
    return ImageFetch(absolute, headers=(("Authorization", f"{auth_scheme(api_key)} {api_key}"),))


def auth_scheme(api_key: str) -> str:
    """`Bearer` for a well-formed JWT (Label Studio's personal access tokens), else `Token` (its legacy tokens)."""
    parts = api_key.split(".")
    if len(parts) != 3:
        return "Token"
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (binascii.Error, ValueError):
        return "Token"
    return "Bearer" if isinstance(header, dict) else "Token"


def _same_host(url: str, label_studio_url: str) -> bool:
    """Whether an absolute URL is on Label Studio's scheme, host and port."""
    mine, theirs = urlsplit(url), urlsplit(label_studio_url)
    return (mine.scheme.lower(), mine.netloc.lower()) == (theirs.scheme.lower(), theirs.netloc.lower())
