"""The one error type for what a client hears: a code, a sentence, a close code.

Every refusal, from parsing to downloading to processing, raises
`ClientError`. The connection turns it into the protocol's `error` message
and, outside a session, closes with the code in `CLOSE_CODES`
(docs/protocol.md lists each code and what it means).
"""

from __future__ import annotations

# Error code -> WebSocket close code sent after the error message.
CLOSE_CODES: dict[str, int | None] = {
    "invalid_json": 1008,
    "invalid_request": 1008,
    "message_too_large": 1009,
    "image_url_forbidden": 1008,
    "image_download_failed": 1008,
    "image_too_large": 1009,
    "unsupported_image": 1008,
    "queue_full": 1013,
    "store_unavailable": 1013,
    "shutting_down": 1001,
    "job_timeout": 1011,
    "processing_failed": 1011,
    "internal_error": 1011,
    "image_unknown": 1008,
    "mask_unknown": 1008,
    "result_too_large": 1009,
    "video_too_large": 1009,
    "unsupported_video": 1008,
    "video_unknown": 1008,
    "superseded": None,  # never closes: only a session's requests are superseded, and the session goes on
}


class ClientError(Exception):
    """A request the server refuses or cannot serve, with the code the client gets."""

    def __init__(self, code: str, message: str):
        assert code in CLOSE_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def close_code(self) -> int | None:
        """None for `superseded`, which never closes the connection."""
        return CLOSE_CODES[self.code]


def invalid(message: str) -> ClientError:
    return ClientError("invalid_request", message)


def image_too_large(max_bytes: int) -> ClientError:
    return ClientError("image_too_large", f"The image is larger than the limit of {max_bytes:,} bytes.")
