"""`CvatAdapter`: the nuclio dashboard routes CVAT calls, on `CVAT_PORT` only (docs/cvat.md).

CVAT sends no token, so nothing here checks one: the port is kept private,
on the Docker network beside CVAT. The JSON is `cvat_nuclio.py`'s; this
class routes, hands the ask to the segmenter, and turns a `ClientError` into
the status CVAT shows.
"""

from __future__ import annotations

import dataclasses

from server.adapters.bodies import tool_model_name
from server.adapters.calls import HttpRequest, HttpResponse, Segmenter
from server.adapters.cvat_nuclio import (
    STATUS_OF_CODE,
    ask_of_invocation,
    describe_function,
    mask_answer,
)
from server.config import Settings
from server.errors import ClientError
from server.front import json_response

FUNCTIONS = "/api/functions"
INVOCATIONS = "/api/function_invocations"


class CvatAdapter:
    def __init__(self, settings: Settings, segmenter: Segmenter, model_type: str):
        self._settings = settings
        self._segmenter = segmenter
        self._name = tool_model_name(model_type)
        self._function = describe_function(model_type, settings.cvat_port)

    def handle(self, request: HttpRequest) -> HttpResponse:
        path = request.path.rstrip("/") or "/"
        if request.method == "GET" and path == FUNCTIONS:
            return json_response(200, {self._name: self._function})
        if request.method == "GET" and path.startswith(FUNCTIONS + "/"):
            name = path[len(FUNCTIONS) + 1:]
            return json_response(200, self._function) if name == self._name else _unknown(name)
        if request.method == "POST" and path == INVOCATIONS:
            name = request.headers.get("x-nuclio-function-name", "")
            return self._invoke(request.body) if name == self._name else _unknown(name)
        if request.method == "POST" and path == "/":  # CVAT's "direct" invoke method: POST to the function's port
            return self._invoke(request.body)
        return json_response(404, {"error": f"No route {request.method} {request.path[:100]} here; CVAT calls {FUNCTIONS}."})

    def _invoke(self, body: bytes) -> HttpResponse:
        try:
            ask = ask_of_invocation(body, max_image_bytes=self._settings.max_image_bytes)
            result = self._segmenter.segment(ask, None)
        except ClientError as error:
            # CVAT shows the person only the status line (requests' raise_for_status): the sentence goes there too.
            answer = json_response(STATUS_OF_CODE[error.code], {"error": error.message, "code": error.code})
            return dataclasses.replace(answer, reason=error.message)
        return HttpResponse(200, mask_answer(result))


def _unknown(name: str) -> HttpResponse:
    return json_response(404, {"error": f"No function {name[:100]!r} here; CAP serves one function per model, cap-<model type>."})
