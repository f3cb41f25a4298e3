"""Test-only: make `python -m server` build the tiny SAM for SAM_MODEL_TYPE=vit_b.

Tests that start real server processes put this folder on PYTHONPATH. The
server then runs exactly as in production (settings, store, processor, the
checkpoint loader with torch.load and load_state_dict), but the vit_b
architecture is swapped for the tiny one, so a checkpoint written from
`build_tiny_sam()` loads and each request takes milliseconds.

CAP_TEST_SEGMENT_DELAY=<seconds> adds a sleep to every segment_batch call, to stand
in for a slow model so that a test can act while jobs are provably running.
CAP_TEST_SEGMENT_TORCH_SECONDS=<seconds> spends that time in torch's native
code instead (matrix products, as a long encoder pass does), for tests about
what the process does while its model thread is inside torch.
"""

import os
import time

from segment_anything import sam_model_registry

from harness.tiny_sam import build_tiny_sam

sam_model_registry["vit_b"] = lambda checkpoint=None: build_tiny_sam()

_delay = float(os.environ.get("CAP_TEST_SEGMENT_DELAY", "0"))
_torch_seconds = float(os.environ.get("CAP_TEST_SEGMENT_TORCH_SECONDS", "0"))


def _busy_in_torch(seconds: float) -> None:
    import torch

    product = torch.rand(400, 400)
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        product = torch.mm(product, product).clamp_(0, 1)


if _delay or _torch_seconds:
    from server.models.caching_model import CachingModel

    _segment_batch = CachingModel.segment_batch

    def _slow_segment_batch(self, jobs):
        if any(job.image_key is not None for job in jobs):  # a request's, not the warm-up's (segment())
            time.sleep(_delay)
            _busy_in_torch(_torch_seconds)
        return _segment_batch(self, jobs)

    CachingModel.segment_batch = _slow_segment_batch
