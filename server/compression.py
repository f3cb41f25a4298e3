"""permessage-deflate, decided message by message: small messages compressed, large ones sent as they are.

websockets compresses every message once a client negotiates the extension
(browsers always do). Results are RLE text; deflating one costs about 30 µs
per KiB of the CPU the model runs on: 2 ms for a 640×480 click's 57 KiB,
15 ms for a 4000×3000 click's 384 KiB, 240 ms for 16 masks' 6 MiB (vit_b
with random weights, whose masks are ragged; docs/benchmarks.md). Past a few
tens of KiB that time sits on the click path and buys little on a fast link,
so such a message goes out uncompressed. What is compressed is compressed at
zlib's level 1, not its default 6: on a 640×480 click's 53 KiB result, 0.7
against 2.3 ms, for a result 18% larger (21 against 18 KiB).

RFC 7692 lets the sender leave any message uncompressed, RSV1 clear, with
the extension negotiated; the receiver inflates only messages with RSV1 set,
so skipping one leaves both sides' compression contexts in step. Everything
else (negotiation, window sizes, inflating what clients send) is websockets'
own, with its default parameters.
"""

from __future__ import annotations

from typing import Sequence

from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import PerMessageDeflate, ServerPerMessageDeflateFactory
from websockets.frames import CONT, CTRL_OPCODES, Frame
from websockets.typing import ExtensionParameter

# Messages up to this many bytes are compressed: about 1 ms at most. Larger ones are sent as they are.
COMPRESS_AT_MOST = 64 * 1024
# zlib's fastest level: RLE text deflates nearly as well at it, in a third of the time of the default (6).
COMPRESS_LEVEL = 1


class SizeAwareDeflate(PerMessageDeflate):
    """PerMessageDeflate that sends a message whose first frame exceeds `compress_at_most` bytes uncompressed."""

    def __init__(self, *args, compress_at_most: int = COMPRESS_AT_MOST, **kwargs):
        super().__init__(*args, **kwargs)
        self.compress_at_most = compress_at_most
        self._sending_plain = False  # the message being sent went out uncompressed: so do its continuation frames

    def encode(self, frame: Frame) -> Frame:
        if frame.opcode in CTRL_OPCODES:
            return frame
        if frame.opcode is not CONT:
            self._sending_plain = len(frame.data) > self.compress_at_most
        if self._sending_plain:
            return frame  # RSV1 clear: the peer does not inflate it, and its context is untouched
        return super().encode(frame)


class SizeAwareDeflateFactory(ServerPerMessageDeflateFactory):
    """The server side of the negotiation, with websockets' defaults but the level, handing out `SizeAwareDeflate`."""

    def __init__(self, compress_at_most: int = COMPRESS_AT_MOST):
        # The parameters websockets' serve() uses when compression="deflate", at COMPRESS_LEVEL.
        super().__init__(
            server_max_window_bits=12,
            client_max_window_bits=12,
            compress_settings={"memLevel": 5, "level": COMPRESS_LEVEL},
        )
        self.compress_at_most = compress_at_most

    def process_request_params(
        self, params: Sequence[ExtensionParameter], accepted_extensions: Sequence[Extension]
    ) -> tuple[list[ExtensionParameter], PerMessageDeflate]:
        response, agreed = super().process_request_params(params, accepted_extensions)
        return response, SizeAwareDeflate(
            agreed.remote_no_context_takeover,
            agreed.local_no_context_takeover,
            agreed.remote_max_window_bits,
            agreed.local_max_window_bits,
            agreed.compress_settings,
            compress_at_most=self.compress_at_most,
        )
