"""The low-resolution logits of recent results, kept for `mask_input` (refinement).

A client refines a mask by naming it (`{"id", "index", "candidate"}`); SAM
then takes that mask's low-resolution logits as its mask prompt, as
segment-anything's demo does. The processor puts each result's logits here;
a connection checks a reference when its request arrives (so that a bad one
is refused at once), and the processor reads the logits when it runs the
request. Kept: the last MASK_CACHE_SIZE results, and at most
3 × MASK_CACHE_SIZE masks in all (each is 256 KB), so that a few requests
with many boxes cannot fill the memory; a result with more masks than its
scope's share of those is not kept.

A result belongs to the scope of the API token that asked for it
(server/tokens.py): another token's requests cannot refine it, and hear the
same `mask_unknown` as for an id that never existed, so that nothing tells
them it does. Each scope may hold its share of the cache (MASK_CACHE_SIZE
÷ the scopes holding results, and 3 × that many masks; server/scoped_lru.py),
so that one token's many small requests cannot evict everyone's.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from server.errors import ClientError, invalid
from server.scoped_lru import ScopedLru

if TYPE_CHECKING:  # the connection side imports this module, and must not import torch
    from server.masks import Postprocess

MASKS_PER_RESULT = 3  # the mask budget is MASK_CACHE_SIZE × this


@dataclasses.dataclass(frozen=True)
class KeptResult:
    scope: str | None
    image_sha256: str
    multimask: bool
    logits: np.ndarray  # float32, prompts × candidates × s × s
    scores: np.ndarray  # float32, prompts × candidates: the model's predicted IoU, for `render`
    postprocess: Postprocess  # how the logits map onto the image, for `render`


@dataclasses.dataclass(frozen=True)
class KeptMask:
    """One kept mask, as `render` gives it again: 1 × s × s logits, its score, how they map onto the image."""

    logits: np.ndarray
    score: float
    postprocess: Postprocess


class MaskCache:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._results: ScopedLru[KeptResult] = ScopedLru(capacity, capacity * MASKS_PER_RESULT)
        self._lock = threading.Lock()

    def put(
        self,
        job_id: str,
        image_sha256: str,
        multimask: bool,
        logits: np.ndarray,
        scores: np.ndarray,
        postprocess: Postprocess,
        *,
        scope: str | None,
    ) -> None:
        masks = logits.shape[0] * logits.shape[1]
        if not masks:
            return
        kept = KeptResult(scope, image_sha256, multimask, logits, scores, postprocess)
        with self._lock:
            self._results.put(job_id, kept, scope=scope, weight=masks)

    def check(
        self, where: str, ref: dict[str, Any], image_sha256: str, *, scope: str | None, field: str = "mask_input"
    ) -> None:
        """Refuse a reference `{id, index, candidate?}` (in `mask_input` or `render`) that cannot be used on
        this image in this scope: `mask_unknown` or `invalid_request`."""
        self.mask(where, ref, image_sha256, scope=scope, field=field)

    def logits(self, where: str, ref: dict[str, Any], image_sha256: str, *, scope: str | None) -> np.ndarray:
        """The named mask's low-res logits, 1 × s × s, for the prompt encoder."""
        return self.mask(where, ref, image_sha256, scope=scope).logits

    def mask(
        self, where: str, ref: dict[str, Any], image_sha256: str, *, scope: str | None, field: str = "mask_input"
    ) -> KeptMask:
        """The named mask, as kept; `where`.`field` names the reference in the errors."""
        name = f"{where}.{field}"
        with self._lock:
            kept = self._results.peek(ref["id"])
        if kept is None or kept.scope != scope:  # one answer, whether another token's or none at all
            raise ClientError(
                "mask_unknown",
                f"{name} names result {ref['id']}, which this server no longer keeps or never had "
                f"(it keeps recent results only); send the prompt without {field}.",
            )
        index, candidate = ref["index"], ref.get("candidate")
        if kept.image_sha256 != image_sha256:
            raise invalid(f"{name} names a result for another image.")
        if index >= kept.logits.shape[0]:
            raise invalid(f"{name}.index is {index}, but that result has {kept.logits.shape[0]} masks.")
        if kept.multimask and candidate is None:
            raise invalid(f"{name} needs a candidate (0, 1 or 2): that result was multimask.")
        if not kept.multimask and candidate is not None:
            raise invalid(f"{name} has a candidate, but that result was not multimask.")
        candidate = candidate or 0
        if candidate >= kept.logits.shape[1]:
            raise invalid(f"{name}.candidate is {candidate}; a multimask result has 3 candidates.")
        logits = kept.logits[index, candidate][None, :, :]
        return KeptMask(logits, float(kept.scores[index, candidate]), kept.postprocess)
