"""SAM 2.1 behind the real server: `python -m server` with SAM_MODEL_TYPE=sam2.1_hiera_t, end to end.

The reference equality is tests/test_sam_reference.py's; here, the production
path around it: settings, the loader (the official checkpoint layout), the
start-up log, the processor, the embedding cache and the wire format.
"""

from __future__ import annotations

import hashlib
import urllib.request

import torch

from harness.client import exchange, session as open_session
from server import masks
from server.models.device import resolve_precision


def test_a_sam2_server_answers_boxes_clicks_and_refinements_reusing_the_embedding(tmp_path, start_replica, hiera_t_checkpoint, image_server):
    replica = start_replica(tmp_path, sam_model_type="sam2.1_hiera_t", sam_checkpoint=hiera_t_checkpoint)
    replica.wait_healthy()
    precision = resolve_precision("auto", torch.device("cpu"))  # PRECISION's default, on this machine's CPU
    assert f"sam2.1_hiera_t (server.models.sam2) in {precision.name}: {precision.reason}; weights 156 MB, 16.8 MB per cached image" in replica.log  # the video modules included
    assert "model ready: sam2.1_hiera_t on cpu" in replica.log

    request = {"image_url": image_server.url("/photo.jpg"), "boxes": [{"x": 10, "y": 20, "width": 100, "height": 80}]}
    first = exchange(replica.url, {**request, "multimask": True})
    assert first.types[-1] == "result", first.messages
    assert first.last["cached_embedding"] is False
    [candidates] = first.last["masks"]
    assert len(candidates) == 3
    for mask in candidates:
        assert mask["segmentation"]["size"] == [240, 320] and 0 <= mask["score"] <= 1  # SAM 2.1 scores are sigmoids
        assert masks.decode(mask["segmentation"]).shape == (240, 320)

    again = exchange(replica.url, request)
    assert again.types[-1] == "result", again.messages
    assert again.last["cached_embedding"] is True and again.last["timings"]["encode_ms"] == 0
    assert len(again.last["masks"]) == 1 and again.last["masks"][0]["segmentation"]["size"] == [240, 320]

    # Protocol 1.1 on the same image, by hash: a click, then the click refined by its own mask, as polygons.
    with urllib.request.urlopen(request["image_url"]) as response:
        sha256 = hashlib.sha256(response.read()).hexdigest()
    with open_session(replica.url) as session:
        click = session.ask({"image_sha256": sha256, "prompts": [{"points": [{"x": 60, "y": 50, "label": 1}]}]})
        assert click["type"] == "result" and click["cached_embedding"] is True, click
        refined = session.ask({
            "image_sha256": sha256, "output": ["rle", "polygons"],
            "prompts": [{"points": [{"x": 60, "y": 50, "label": 1}, {"x": 200, "y": 20, "label": 0}],
                         "mask_input": {"id": click["id"], "index": 0}}],
        })
        assert refined["type"] == "result", refined
        [mask] = refined["masks"]
        assert mask["segmentation"]["size"] == [240, 320] and isinstance(mask["polygons"], list)
