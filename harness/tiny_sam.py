"""A real SAM with tiny dimensions and random weights, for fast tests.

Same classes as the full models (ViT image encoder, prompt encoder, two-way
transformer mask decoder); only the sizes shrink: a 256-pixel input, one
encoder block of width 32. Masks are meaningless, but shapes, dtypes,
orientation and the code paths around them are exactly those of vit_h.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

IMAGE_SIZE = 256
WIDTH = 32
PATCH = 16


def build_tiny_sam(seed: int = 0) -> Sam:
    torch.manual_seed(seed)
    grid = IMAGE_SIZE // PATCH
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=IMAGE_SIZE, patch_size=PATCH, embed_dim=WIDTH, depth=1, num_heads=1,
            mlp_ratio=2, out_chans=WIDTH, qkv_bias=True, use_rel_pos=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), window_size=4, global_attn_indexes=(0,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=WIDTH, image_embedding_size=(grid, grid),
            input_image_size=(IMAGE_SIZE, IMAGE_SIZE), mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=WIDTH, mlp_dim=64, num_heads=2),
            transformer_dim=WIDTH, iou_head_depth=1, iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def write_tiny_checkpoint(path: Path) -> Path:
    """Save `build_tiny_sam()`'s weights to `path`, as a checkpoint file the production loader reads."""
    torch.save(build_tiny_sam().state_dict(), path)
    return path
