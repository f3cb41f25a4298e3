"""SAM 1's mask decoder for a batch of prompts on one image, without a copy of the image per prompt.

`MaskDecoder.predict_masks` repeats the image embedding and its positional
encoding once per prompt (`repeat_interleave`) before its transformer. When
no prompt has a mask input, the dense prompt embedding is one learned
vector for all of them, so the first block's image side is the same for
every prompt. `segment_anything`'s `TwoWayTransformer` and its attention
broadcast over the batch, so here the image goes in once (batch 1): the
first block computes its keys, values and image queries once, and the
image tokens become per-prompt only where the prompts make them differ
(the first block's image-to-token attention). The arithmetic of each
element is the same as the stock path's, so the outputs are equal (the
tests compare them exactly); on the CPU a decoder call is about a quarter
faster, which is most of the time of a segment-everything request.
"""

from __future__ import annotations

import torch
from segment_anything.modeling.mask_decoder import MaskDecoder


def decode_shared_image(
    decoder: MaskDecoder,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embedding: torch.Tensor,
    multimask_output: bool,
    score_floor: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What `decoder(...)` returns for these prompts, given one image (1 × C × H × W) and the dense prompt
    embedding all of them share (1 × C × H × W).

    With `score_floor`, the masks of a prompt whose every returned score is at
    or below it are not made (zeros): the scores come from the transformer's
    output alone, before the upscaling and the hypernetworks, which take
    about a fifth of a decoder call on the CPU."""
    tokens = torch.cat((decoder.iou_token.weight, decoder.mask_tokens.weight), dim=0)
    tokens = tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
    tokens = torch.cat((tokens, sparse_prompt_embeddings), dim=1)
    _, channels, height, width = image_embeddings.shape
    hs, src = decoder.transformer(image_embeddings + dense_prompt_embedding, image_pe, tokens)
    batch = tokens.shape[0]
    chosen = slice(1, None) if multimask_output else slice(0, 1)
    iou_pred = decoder.iou_prediction_head(hs[:, 0, :])[:, chosen]
    wanted = slice(None) if score_floor is None else torch.nonzero((iou_pred > score_floor).any(1)).flatten()
    mask_tokens_out = hs[wanted, 1 : 1 + decoder.num_mask_tokens, :]
    upscaled = decoder.output_upscaling(src[wanted].transpose(1, 2).view(-1, channels, height, width))
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    made, channels, height, width = upscaled.shape
    masks = hyper_in @ upscaled.view(made, channels, height * width)
    masks = masks.view(made, decoder.num_mask_tokens, height, width)[:, chosen]
    if score_floor is None:
        return masks, iou_pred
    every = masks.new_zeros((batch, *masks.shape[1:]))
    every[wanted] = masks
    return every, iou_pred
