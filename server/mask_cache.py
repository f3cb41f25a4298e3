"""The low-resolution logits of recent results, kept for `mask_input` (refinement).

A client refines a mask by naming it (`{"id", "index", "candidate"}`); SAM
then takes that mask's low-resolution logits as its mask prompt, as
segment-anything's demo does. The processor puts each result's logits here;
a connection checks a reference when its request arrives (so that a bad one
is refused at once), and the processor reads the logits when it runs the
request. Kept: the last MASK_CACHE_SIZE results, and at most
3 × MASK_CACHE_SIZE masks in all (each is 256 KB), so that a few requests
with many boxes cannot fill the memory; a result with more masks than that
is not kept.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Any

import numpy as np

from server.errors import ClientError, invalid

MASKS_PER_RESULT = 3  # the mask budget is MASK_CACHE_SIZE × this


@dataclasses.dataclass(frozen=True)
class KeptResult:
    image_sha256: str
    multimask: bool
    logits: np.ndarray  # float32, prompts × candidates × s × s


class MaskCache:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._results: collections.OrderedDict[str, KeptResult] = collections.OrderedDict()
        self._masks = 0
        self._lock = threading.Lock()

    def put(self, job_id: str, image_sha256: str, multimask: bool, logits: np.ndarray) -> None:
        masks = logits.shape[0] * logits.shape[1]
        if not masks or masks > self.capacity * MASKS_PER_RESULT:
            return
        with self._lock:
            self._results[job_id] = KeptResult(image_sha256, multimask, logits)
            self._masks += masks
            while len(self._results) > self.capacity or self._masks > self.capacity * MASKS_PER_RESULT:
                _, dropped = self._results.popitem(last=False)
                self._masks -= dropped.logits.shape[0] * dropped.logits.shape[1]

    def check(self, where: str, ref: dict[str, Any], image_sha256: str) -> None:
        """Refuse a reference `{id, index, candidate?}` that cannot be used on this image:
        `mask_unknown` or `invalid_request`."""
        self._resolve(where, ref, image_sha256)

    def logits(self, where: str, ref: dict[str, Any], image_sha256: str) -> np.ndarray:
        """The named mask's low-res logits, 1 × s × s, for the prompt encoder."""
        kept, index, candidate = self._resolve(where, ref, image_sha256)
        return kept.logits[index, candidate][None, :, :]

    def _resolve(self, where: str, ref: dict[str, Any], image_sha256: str) -> tuple[KeptResult, int, int]:
        with self._lock:
            kept = self._results.get(ref["id"])
        if kept is None:
            raise ClientError(
                "mask_unknown",
                f"{where}.mask_input names result {ref['id']}, which this server no longer keeps (it keeps the last "
                f"{self.capacity}); send the prompt without mask_input.",
            )
        index, candidate = ref["index"], ref.get("candidate")
        if kept.image_sha256 != image_sha256:
            raise invalid(f"{where}.mask_input names a result for another image.")
        if index >= kept.logits.shape[0]:
            raise invalid(f"{where}.mask_input.index is {index}, but that result has {kept.logits.shape[0]} masks.")
        if kept.multimask and candidate is None:
            raise invalid(f"{where}.mask_input needs a candidate (0, 1 or 2): that result was multimask.")
        if not kept.multimask and candidate is not None:
            raise invalid(f"{where}.mask_input has a candidate, but that result was not multimask.")
        candidate = candidate or 0
        if candidate >= kept.logits.shape[1]:
            raise invalid(f"{where}.mask_input.candidate is {candidate}; a multimask result has 3 candidates.")
        return kept, index, candidate
