"""permessage-deflate decided per message (server/compression.py): small messages deflated, large ones sent as they are."""

from __future__ import annotations

import json
import os
import zlib

from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory, PerMessageDeflate
from websockets.frames import CTRL_OPCODES, Frame, Opcode
from websockets.sync.client import connect

from harness import image_files
from server.compression import COMPRESS_AT_MOST, SizeAwareDeflate, SizeAwareDeflateFactory
from tests.conftest import ws_url

SETTINGS = (False, False, 12, 12, {"memLevel": 5})  # what websockets' server and client agree on by default


def test_a_stock_peer_inflates_what_is_deflated_and_takes_the_rest_as_it_is():
    sender, peer = SizeAwareDeflate(*SETTINGS, compress_at_most=1000), PerMessageDeflate(*SETTINGS)
    small, large = b'{"type": "queued"}' * 10, os.urandom(800).hex().encode()
    frames = [
        Frame(Opcode.TEXT, small),
        Frame(Opcode.TEXT, large),
        Frame(Opcode.TEXT, small),  # deflated after a skipped one: both contexts must still agree
        Frame(Opcode.TEXT, large, fin=False),  # a fragmented large message: its continuation stays plain too
        Frame(Opcode.CONT, small),
        Frame(Opcode.TEXT, small),
    ]
    sent = [sender.encode(frame) for frame in frames]
    assert [frame.rsv1 for frame in sent] == [True, False, True, False, False, True]
    assert [peer.decode(frame, max_size=None).data for frame in sent] == [frame.data for frame in frames]


class RecordingDeflate(PerMessageDeflate):
    """The client's inflater, noting for each data frame whether it arrived compressed (RSV1)."""

    def __init__(self, *args, seen: list[bool], **kwargs):
        super().__init__(*args, **kwargs)
        self.seen = seen

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        if frame.opcode not in CTRL_OPCODES:
            self.seen.append(frame.rsv1)
        return super().decode(frame, max_size=max_size)


class RecordingFactory(ClientPerMessageDeflateFactory):
    def __init__(self, seen: list[bool]):
        super().__init__(client_max_window_bits=True, compress_settings={"memLevel": 5})  # websockets' client default
        self.seen = seen

    def process_response_params(self, params, accepted_extensions):
        agreed = super().process_response_params(params, accepted_extensions)
        return RecordingDeflate(
            agreed.remote_no_context_takeover, agreed.local_no_context_takeover, agreed.remote_max_window_bits,
            agreed.local_max_window_bits, agreed.compress_settings, seen=self.seen,
        )


def answers(ws, request: dict) -> list[str]:
    """Send one session request; the texts of its messages up to its result or error."""
    ws.send(json.dumps({"keep_open": True, **request}))
    texts = [ws.recv(timeout=60)]
    while json.loads(texts[-1])["type"] not in ("result", "error"):
        texts.append(ws.recv(timeout=60))
    return texts


def test_a_client_with_deflate_gets_small_messages_deflated_and_a_large_result_uncompressed(start_app, image_server):
    app = start_app()
    image_server.add("/noise.png", image_files.noise_png(1200, 900), content_type="image/png")
    boxes = [{"box": {"x": 40 * i, "y": 30 * i, "width": 700, "height": 500}} for i in range(8)]
    seen: list[bool] = []
    with connect(ws_url(app), compression=None, extensions=[RecordingFactory(seen)], max_size=None) as ws:
        assert isinstance(ws.protocol.extensions[0], RecordingDeflate)  # negotiated
        texts = answers(ws, {"image_url": image_server.url("/noise.png"), "prompts": boxes, "multimask": True})
        sha256 = json.loads(texts[-1])["image"]["sha256"]
        texts += answers(ws, {"image_sha256": sha256, "prompts": []})  # a small result, deflated again
    messages = [json.loads(text) for text in texts]
    assert [m["type"] for m in messages] == ["queued", "status", "result"] * 2, messages[-1]
    assert len(texts[2].encode()) > COMPRESS_AT_MOST  # the large result this test is about
    assert len(messages[2]["masks"]) == 8 and messages[5]["masks"] == []
    assert seen == [True, True, False, True, True, True]


def test_the_server_deflates_at_zlib_level_1_what_a_stock_peer_inflates():
    """The negotiated extension compresses as zlib's level 1 does (a third of the default's time on RLE text)."""
    offer = ClientPerMessageDeflateFactory(client_max_window_bits=True).get_request_params()
    _, server_side = SizeAwareDeflateFactory().process_request_params(offer, [])
    text = json.dumps({"counts": "".join(chr(48 + (i * i) % 61) for i in range(20000))}).encode()
    sent = server_side.encode(Frame(Opcode.TEXT, text))
    level_1 = zlib.compressobj(1, zlib.DEFLATED, -12, 5)
    assert sent.rsv1 and sent.data == (level_1.compress(text) + level_1.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert PerMessageDeflate(*SETTINGS).decode(sent, max_size=None).data == text
