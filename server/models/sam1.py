"""SAM 1 (`vit_h`, `vit_l`, `vit_b`) behind the model seam, through segment-anything.

For each prompt, `SamModel` gives what `SamPredictor.set_image` + `predict`
give for that prompt alone, with the same arithmetic: the image resized so
that its longest side is 1024, normalised and padded to the square input;
SAM's low-res logits mapped back by `Sam.postprocess_masks` (see
`server.masks.Postprocess`). The checkpoint is a plain state dict.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from server.masks import Postprocess
from server.prompts import Prompt, decoder_calls
from server.models.caching_model import CachingModel
from server.models.checkpoint_file import weights_error
from server.models.device import Precision
from server.models.embedding_cache import Embedding
from server.models.registry import ModelType, model_type as row_of
from server.models.sam1_decoder import decode_shared_image
from server.models.sam1_encoder import attend_head_by_head
from server.models.seam import ModelMemory


def load_sam(model_type: str, checkpoint: Path, device: torch.device | str) -> Sam:
    """Build `model_type` (its row's `config`: segment-anything's registry key), load its weights from `checkpoint`
    onto `device`."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        sam = sam_model_registry[row_of(model_type).config]()
        sam.load_state_dict(state)
    except Exception as exc:  # torch raises many kinds for a bad file
        wrong = (
            f"its weights do not fit a {model_type} model" if "state_dict" in str(exc)
            else f"it is not a complete PyTorch checkpoint, {type(exc).__name__}"
        )
        raise weights_error(model_type, checkpoint, wrong) from None
    return sam.to(device).eval()


def load(model_type: ModelType, checkpoint: Path, device: torch.device, precision: Precision, cache_size: int) -> SamModel:
    """The family's `load` (`server.models.seam.Family`): the encoder's global attention one head at a time
    (`server.models.sam1_encoder`)."""
    sam = attend_head_by_head(load_sam(model_type.name, checkpoint, device))
    return SamModel(sam, model_type.name, cache_size, precision)


def default_precision(device: torch.device) -> Precision:
    """What SAM 1 ran in before PRECISION: bfloat16 autocast on a CUDA device that supports it, else float32."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return Precision(torch.bfloat16, "CUDA with bfloat16")
    return Precision(torch.float32, "the default")


class SamModel(CachingModel):
    """One SAM 1 model on one device."""

    def __init__(self, sam: Sam, model_type: str, cache_size: int = 0, precision: Precision | None = None):
        super().__init__(model_type, cache_size, precision or default_precision(sam.device))
        self.sam = sam
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)
        with torch.inference_mode():
            self._dense_pe = sam.prompt_encoder.get_dense_pe()  # constant; SAM recomputes it per call

    @property
    def device(self) -> torch.device:
        return self.sam.device

    def memory(self) -> ModelMemory:
        encoder = self.sam.image_encoder
        side = encoder.img_size // encoder.patch_embed.proj.kernel_size[0]
        channels = self.sam.prompt_encoder.embed_dim
        return ModelMemory(
            weights_bytes=sum(p.numel() * p.element_size() for p in self.sam.parameters()),
            embedding_bytes=channels * side * side * 4,  # one float32 map
        )

    def embed(self, images: list[np.ndarray]) -> list[Embedding]:
        """The encoder, once, on a batch of RGB images (as `SamPredictor.set_image` prepares each)."""
        inputs, sizes = [], []
        for pixels in images:
            resized = torch.as_tensor(self.transform.apply_image(pixels), device=self.device)
            resized = resized.permute(2, 0, 1).contiguous()[None, :, :, :]
            sizes.append(tuple(resized.shape[-2:]))
            inputs.append(self.sam.preprocess(resized))  # normalise, pad to the square input
        with self.precision.autocast(self.device):
            features = self.sam.image_encoder(torch.cat(inputs)).float()
        return [
            # clone: a cached embedding must not keep the whole batch's features alive
            Embedding((features[i : i + 1].clone(),), self._postprocess(sizes[i], pixels.shape[:2]))  # type: ignore[arg-type]
            for i, pixels in enumerate(images)
        ]

    def decode(
        self,
        embedding: Embedding,
        prompts: list[Prompt],
        multimask: bool,
        per_call: int | None = None,
        score_floor: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's low-res logits (N × C × s × s) and scores (N × C) of each prompt, on the model's device.

        Prompt `i` gets what `SamPredictor.predict` gives for it alone. SAM adds
        a "not a point" token to points without a box, so prompts only share a
        decoder call with prompts of the same structure; one call per structure.
        With `score_floor`, a prompt without a mask input whose every score is
        at or below it gets zeros for logits: its masks are not made
        (`decode_shared_image`).
        """
        candidates = 3 if multimask else 1
        side = self.sam.prompt_encoder.mask_input_size
        low_res = torch.empty((len(prompts), candidates, *side), device=self.device)
        scores = torch.empty((len(prompts), candidates), device=self.device)
        [features] = embedding.features
        for indices in decoder_calls(prompts, per_call or self.prompts_per_call):
            group = [prompts[i] for i in indices]
            sparse, dense = self.sam.prompt_encoder(**self._prompt_tensors(group, embedding.postprocess.original_size))
            if group[0].mask_input is None:  # one dense embedding for all: the image goes in once
                group_low_res, group_scores = decode_shared_image(
                    self.sam.mask_decoder, features, self._dense_pe, sparse, dense[:1], multimask, score_floor
                )
            else:
                group_low_res, group_scores = self.sam.mask_decoder(
                    image_embeddings=features,
                    image_pe=self._dense_pe,
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=multimask,
                )
            where = torch.as_tensor(indices, device=self.device)
            low_res[where], scores[where] = group_low_res.float(), group_scores.float()  # float32 even under autocast
        return low_res, scores

    def _prompt_tensors(self, group: list[Prompt], original_size: tuple[int, int]) -> dict:
        """The prompt encoder's `points`, `boxes` and `masks` for prompts of one structure, as `predict` makes them."""
        first = group[0]
        points = boxes = masks = None
        if first.points:
            coords = np.array([[(point.x, point.y) for point in prompt.points] for prompt in group], dtype=float)
            labels = np.array([[point.label for point in prompt.points] for prompt in group])
            points = (
                torch.as_tensor(self.transform.apply_coords(coords, original_size), dtype=torch.float, device=self.device),
                torch.as_tensor(labels, dtype=torch.int, device=self.device),
            )
        if first.box is not None:
            corners = np.array([prompt.box for prompt in group], dtype=float)
            boxes = torch.as_tensor(self.transform.apply_boxes(corners, original_size), dtype=torch.float, device=self.device)
        if first.mask_input is not None:
            stacked = np.stack([prompt.mask_input for prompt in group])  # type: ignore[misc]
            height, width = self.sam.prompt_encoder.mask_input_size
            if stacked.shape[-2:] != (height, width):
                raise ValueError(f"mask_input must be 1 × {height} × {width}, not {stacked.shape[1:]}")
            masks = torch.as_tensor(stacked, dtype=torch.float, device=self.device)
        return {"points": points, "boxes": boxes, "masks": masks}

    def _postprocess(self, input_size: tuple[int, int], original_size: tuple[int, int]) -> Postprocess:
        """How SAM's `postprocess_masks` and threshold map this image's low-res logits onto it."""
        return Postprocess(self.sam.image_encoder.img_size, input_size, original_size, self.sam.mask_threshold)
