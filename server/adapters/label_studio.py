"""CAP as a Label Studio ML backend, at `/label-studio/` (docs/label-studio.md).

The routes label-studio-ml-backend's `label_studio_ml/api.py` serves, with
its answers: `GET /label-studio/` and `health`, `POST setup`, `predict` and
`webhook`. A predict with a context (an annotator's click with a smart tool)
is one CAP request, through the `Segmenter`, answered as one prediction; a
predict without one answers no prediction at once and prepares the task's
image, so that the first click is decoder-only. With `API_TOKEN` set, every
route needs basic auth whose password is one of its tokens (any user name).
Errors are JSON, `{"status", "detail", "code"}`, with a sentence a person can
act on, and an HTTP status that fits the error's code.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
from typing import Any

from server.adapters.bodies import json_object, tool_model_name
from server.adapters.calls import LABEL_STUDIO, Ask, HttpRequest, HttpResponse, Segmenter
from server.adapters.label_studio_config import BRUSH, Target, read_label_config
from server.adapters.label_studio_images import task_image
from server.adapters.label_studio_regions import click_of, prediction_of
from server.config import Settings
from server.errors import ClientError, invalid
from server.front import json_response
from server.tokens import Tokens

log = logging.getLogger(__name__)

PREFIX = "/label-studio/"
MODEL_CLASS = "CAP"
# The webhook events label-studio-ml-backend answers 201 (it would train on them); the rest get 200.
TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED", "START_TRAINING")

# The HTTP status of each CAP error code (docs/protocol.md, "Errors"), as Label Studio hears it.
HTTP_STATUS = {
    "invalid_json": 400, "invalid_request": 400, "message_too_large": 413, "image_too_large": 413,
    "result_too_large": 413, "image_url_forbidden": 422, "unsupported_image": 422, "image_unknown": 422,
    "mask_unknown": 422, "image_download_failed": 502, "queue_full": 503, "store_unavailable": 503,
    "shutting_down": 503, "job_timeout": 504, "processing_failed": 500, "internal_error": 500, "superseded": 409,
}
_ROUTES = {"": "GET", "health": "GET", "metrics": "GET", "setup": "POST", "predict": "POST", "webhook": "POST"}


class LabelStudioAdapter:
    def __init__(self, settings: Settings, segmenter: Segmenter):
        self._settings = settings
        self._segmenter = segmenter
        self._tokens = Tokens(settings.api_token)
        self.model_version = tool_model_name(settings.sam_model_type)

    def handle(self, request: HttpRequest) -> HttpResponse:
        """The answer to any request whose path starts with /label-studio/."""
        authorized, scope = self._tokens.offered(basic_auth_passwords(request.headers.get("authorization", "")))
        if not authorized:
            return error_response(
                401, "unauthorized", "Label Studio's basic auth must carry CAP's API_TOKEN as the password, "
                "with any user name: set both in the model's Authentication fields.",
                (("WWW-Authenticate", 'Basic realm="CAP"'),),
            )
        route = request.path[len(PREFIX):] if request.path.startswith(PREFIX) else None
        if route not in _ROUTES:
            return error_response(404, "not_found", f"{request.path} is not a route of CAP's Label Studio backend: "
                                  f"paste {PREFIX} as the model's URL.")
        if request.method != _ROUTES[route]:
            return error_response(405, "method_not_allowed", f"{request.path} answers {_ROUTES[route]} only.",
                                  (("Allow", _ROUTES[route]),))
        try:
            if request.method == "GET":
                return json_response(200, {} if route == "metrics" else {"status": "UP", "model_class": MODEL_CLASS})
            body = json_object(request.body)
            if route == "setup":
                return json_response(200, {"model_version": self.model_version})
            if route == "webhook":
                return webhook_response(body)
            return json_response(200, {"results": self._predict(body, scope)})
        except ClientError as error:
            return error_response(HTTP_STATUS[error.code], error.code, error.message)

    def _predict(self, body: dict[str, Any], scope: str | None) -> list[dict[str, Any]]:
        """The predictions for a predict call: one for a click, none (the image prepared) without one."""
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise invalid("The request has no tasks: Label Studio sends the task to predict in a tasks list.")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise invalid("params must be an object, as Label Studio sends it.")
        target = read_label_config(body.get("label_config"))
        click = click_of(params.get("context"))
        if click is None:
            self._prepare(tasks[0], target, scope)
            return []
        ask = self._ask(tasks[0], target, {"prompts": [click.prompt], "multimask": False,
                                           "output": ["rle"] if target.region_type == BRUSH else ["polygons"]})
        result = self._segmenter.segment(ask, scope)
        return [prediction_of(result, target, click.label, self.model_version)]

    def _prepare(self, task: object, target: Target, scope: str | None) -> None:
        """Start the encoder on the task's image in the background; a task CAP cannot read is only logged."""
        try:
            self._segmenter.prepare(self._ask(task, target, {"prompts": []}), scope)
        except ClientError as error:
            log.warning("Label Studio task image not prepared: %s", error.message)

    def _ask(self, task: object, target: Target, body: dict[str, Any]) -> Ask:
        settings = self._settings
        image, fetch = task_image(task, target, settings.label_studio_url, settings.label_studio_api_key)
        return Ask({**image, **body}, LABEL_STUDIO, fetch=fetch)


def webhook_response(body: dict[str, Any]) -> HttpResponse:
    """201 for the events label-studio-ml-backend trains on (CAP does not train), 200 for the others."""
    event = body.get("action")
    if not isinstance(event, str):
        raise invalid("The webhook has no action: Label Studio names the event in an action field.")
    if event in TRAIN_EVENTS:
        return json_response(201, {"result": None, "status": "ok"})
    return json_response(200, {"status": "Unknown event"})


def basic_auth_passwords(header: str) -> list[str]:
    """The password of a `Basic` Authorization header, as a list (empty when there is none)."""
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "basic":
        return []
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return []
    user, colon, password = decoded.partition(":")
    return [password] if colon else []


def error_response(status: int, code: str, detail: str, headers: tuple[tuple[str, str], ...] = ()) -> HttpResponse:
    """label-studio-ml-backend's error shape (`status`, `detail`), with CAP's error code. The sentence is the
    reason phrase too: Label Studio shows an annotator only the status line (requests' HTTPError)."""
    response = json_response(status, {"status": status, "detail": detail, "code": code}, headers)
    return dataclasses.replace(response, reason=detail)
