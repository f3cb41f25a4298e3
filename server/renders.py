"""`render` prompts: earlier masks again, from the mask cache's kept logits, without the decoder.

A `render` prompt names a mask of an earlier result (`{"id", "index",
"candidate"}`, as `mask_input` does). Its low-resolution logits, its score
and the way they map onto the image were kept (server/mask_cache.py), so the
mask can be made again at any `mask_scale`: a page draws clicks at screen
size, and asks full size only for the masks a person accepts. `splice` puts
each render's kept logits at its place among the decoder's, so that the
result is made like any other (server/results.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from server.mask_cache import MaskCache
from server.models.seam import Segmentation


def is_render(prompt: dict[str, Any]) -> bool:
    return "render" in prompt


def renders_only(prompts: Sequence[dict[str, Any]] | None) -> bool:
    """Whether a record's prompts are all renders: no model, no pixels needed."""
    return bool(prompts) and all(is_render(prompt) for prompt in prompts)  # type: ignore[union-attr]


def splice(
    decoded: Segmentation | None,
    prompts: Sequence[dict[str, Any]] | None,
    mask_cache: MaskCache,
    image_sha256: str,
    scope: str | None,
) -> Segmentation:
    """The decoder's result (for the prompts that are not renders) with the renders' kept masks at their places.

    A render is never multimask (`server.protocol` refuses that), so every
    row has one candidate. `decoded` is None when every prompt is a render.
    Raises `ClientError` (`mask_unknown`) for a mask no longer kept.
    """
    kept = {
        index: mask_cache.mask(f"prompts[{index}]", prompt["render"], image_sha256, scope=scope, field="render")
        for index, prompt in enumerate(prompts or ())
        if is_render(prompt)
    }
    if not kept:
        assert decoded is not None
        return decoded
    first = next(iter(kept.values()))
    count = len(prompts or ())
    low_res = torch.empty((count, 1, *first.logits.shape[1:]), dtype=torch.float32)
    scores = torch.empty((count, 1), dtype=torch.float32)
    rows = iter(range(0 if decoded is None else decoded.low_res.shape[0]))
    for index in range(count):
        if index in kept:
            low_res[index, 0] = torch.from_numpy(kept[index].logits[0])
            scores[index, 0] = kept[index].score
        else:
            row = next(rows)
            low_res[index] = decoded.low_res[row]  # type: ignore[union-attr]
            scores[index] = decoded.scores[row]  # type: ignore[union-attr]
    if decoded is None:  # nothing decoded, nothing encoded
        return Segmentation(low_res, scores, first.postprocess, 0.0, 0.0, cached_embedding=True)
    return Segmentation(
        low_res, scores, decoded.postprocess, decoded.encode_ms, decoded.decode_ms, decoded.cached_embedding
    )
