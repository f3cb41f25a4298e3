"""SAM 1's image encoder with its global attention computed one head at a time.

The ViT's global-attention blocks (4 of `vit_b`'s 12) attend over all
64 × 64 tokens at once: `segment_anything`'s `Attention` makes a
heads × 4096 × 4096 float32 map (805 MB for `vit_b`'s 12 heads, more for
`vit_l` and `vit_h`), and its relative-position terms and softmax each add
one more, about 2.4 GB alive at once in every encoder pass, which is most
of a request's peak memory on the CPU. Heads are independent, so here each
global block computes one head's map at a time, with the same operations
on the same numbers: the encoder's output is equal (the tests compare it
exactly), and the pass holds one head's maps (about 0.2 GB) instead.
Windowed blocks are left as they are (their maps are small).
"""

from __future__ import annotations

import torch
from segment_anything.modeling import Sam
from segment_anything.modeling.image_encoder import Attention, add_decomposed_rel_pos


class HeadByHeadAttention(Attention):
    """`Attention` whose forward computes one head's attention map at a time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, _ = x.shape
        qkv = self.qkv(x).reshape(batch, height * width, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, batch * self.num_heads, height * width, -1).unbind(0)
        out = torch.empty_like(q)
        for head in range(batch * self.num_heads):
            one = slice(head, head + 1)
            attn = (q[one] * self.scale) @ k[one].transpose(-2, -1)
            if self.use_rel_pos:
                attn = add_decomposed_rel_pos(attn, q[one], self.rel_pos_h, self.rel_pos_w, (height, width), (height, width))
            out[one] = attn.softmax(dim=-1) @ v[one]
            del attn
        x = out.view(batch, self.num_heads, height, width, -1).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
        return self.proj(x)


def attend_head_by_head(sam: Sam) -> Sam:
    """Make `sam`'s global-attention blocks compute one head at a time (in place); returns `sam`."""
    for block in sam.image_encoder.blocks:
        if block.window_size == 0 and type(block.attn) is Attention:
            block.attn.__class__ = HeadByHeadAttention
    return sam
