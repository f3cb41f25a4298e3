"""`XAnyLabelingAdapter`: X-AnyLabeling's remote server at `/x-anylabeling/` (docs/x-anylabeling.md).

The client sends its API key in the `Token` header (X-AnyLabeling-Server's
`api_key_header`); with `API_TOKEN` set, a call without one of its tokens
gets that server's 401. The JSON is `x_anylabeling_schema.py`'s; this class
routes, checks the token, hands the ask to the segmenter, and answers each
`ClientError` as that server answers its errors.
"""

from __future__ import annotations

from server.adapters.bodies import json_object, tool_model_name
from server.adapters.calls import HttpRequest, HttpResponse, Segmenter
from server.adapters.x_anylabeling_schema import (
    ANSWER_OF_CODE,
    ask_of_predict,
    error_answer,
    image_ask,
    model_info,
    models_answer,
    predict_call,
    shapes_answer,
)
from server.config import Settings
from server.errors import ClientError
from server.front import json_response
from server.tokens import Tokens

PREFIX = "/x-anylabeling"
TOKEN_HEADER = "token"  # X-AnyLabeling sends `Token: <api key>`; header names arrive in lower case


class XAnyLabelingAdapter:
    def __init__(self, settings: Settings, segmenter: Segmenter, model_type: str):
        self._settings = settings
        self._segmenter = segmenter
        self._tokens = Tokens(settings.api_token)
        self._model_type = model_type
        self._model_id = tool_model_name(model_type)

    def handle(self, request: HttpRequest) -> HttpResponse:
        token = request.headers.get(TOKEN_HEADER)
        authorized, scope = self._tokens.offered([token] if token else [])
        if not authorized:
            message = "Invalid or missing API Key: put one of CAP's API_TOKEN tokens in X-AnyLabeling's API Key field."
            return json_response(401, error_answer("UNAUTHORIZED", message))
        path = "/" + request.path.removeprefix(PREFIX).strip("/")  # a server_url ending in "/" gives "//v1/..."
        if request.method == "GET" and path == "/v1/models":
            return json_response(200, models_answer(self._model_type))
        if request.method == "GET" and path.startswith("/v1/models/") and path.endswith("/info"):
            return self._info(path[len("/v1/models/"):-len("/info")])
        if request.method == "POST" and path == "/v1/predict":
            return self._predict(request.body, scope)
        return json_response(404, {"detail": "Not Found"})  # FastAPI's answer to a route it does not have

    def _info(self, model_id: str) -> HttpResponse:
        if model_id != self._model_id:
            return json_response(200, error_answer("MODEL_NOT_FOUND", _not_loaded(model_id)))
        return json_response(200, {"success": True, "data": {"model_id": model_id, **model_info(self._model_type)}})

    def _predict(self, body: bytes, scope: str | None) -> HttpResponse:
        max_bytes = self._settings.max_image_bytes
        try:
            model, image, params = predict_call(json_object(body))
            if model != self._model_id:
                return json_response(200, error_answer("MODEL_NOT_FOUND", _not_loaded(model)))
            ask = ask_of_predict(image, params, max_image_bytes=max_bytes)
            if ask is None:  # no marks: nothing to segment yet, but the image's embedding can be made now
                self._segmenter.prepare(image_ask(image, max_image_bytes=max_bytes), scope)
                return json_response(200, {"success": True, "data": {"shapes": [], "description": ""}})
            return json_response(200, shapes_answer(self._segmenter.segment(ask, scope)))
        except ClientError as error:
            status, code = ANSWER_OF_CODE[error.code]
            return json_response(status, {"detail": error.message} if code is None else error_answer(code, error.message))


def _not_loaded(model_id: str) -> str:
    return f"Model {model_id[:100]!r} not loaded; this CAP serves one model, listed by v1/models."
