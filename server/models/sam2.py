"""SAM 2.1 (`sam2.1_hiera_t`, `_s`, `_b+`, `_l`) behind the model seam, through Meta's sam2 package.

For each prompt, `Sam2Model` gives what `SAM2ImagePredictor.set_image` +
`predict` give for that prompt alone, with the same arithmetic:
- the image is resized to the 1024 × 1024 input (not keeping its aspect
  ratio) and normalised by `SAM2Transforms`' own modules, bit for bit, but a
  channel at a time: its ToTensor makes the whole image float32 first, which
  for a 40 Mpx image peaks at 1 GB; this way at 0.35 GB;
- the encoder gives three feature maps (64², 128² and 256² for a 1024
  input), all three kept per image: about 17 MB in float32, against 4 MB for
  SAM 1, which is what EMBEDDING_CACHE_SIZE multiplies;
- a box is two corner points (labels 2 and 3) ahead of the prompt's points;
- the low-res logits are resized straight to the image, bilinearly, and
  thresholded at 0: `Postprocess` with the low-res side as the encoder's
  (so its first resize is the identity). The predictor's hole filling and
  sprinkle removal are off by default and not done here;
- the predictor hands its low-res logits back clamped to ±32, so that is
  what a later `mask_input` fed from them holds: a `mask_input` is clamped
  on the way in, and the masks come from the unclamped logits, as there.

Facts about the sam2 package that matter here: importing it initialises
Hydra for the process (this module is imported only when a SAM 2.1 type is
chosen); `build_sam2` puts the model on CUDA unless told otherwise; the
checkpoint holds its state dict under "model". The model is built as
`SAM2VideoPredictor` (a `SAM2Base` with the video methods), so that one copy
of the weights serves images and video (server/models/sam2_video.py); the
video modules (memory attention and memory encoder, 7.3 M parameters in every
size) are unused for images. Its hole filling needs sam2's compiled
extension, which CAP does not build, so it is off (`fill_hole_area` 0), as for
images. Casting the whole model to bfloat16 breaks it; autocast does not.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from sam2.build_sam import build_sam2_video_predictor
from sam2.sam2_video_predictor import SAM2VideoPredictor
from sam2.utils.transforms import SAM2Transforms

from server.masks import Postprocess
from server.prompts import Prompt, decoder_calls
from server.models.caching_model import CachingModel
from server.models.checkpoint_file import weights_error
from server.models.device import Precision
from server.models.embedding_cache import Embedding
from server.models.sam2_video import VideoTracker
from server.models.registry import ModelType, model_type as row_of
from server.models.seam import ModelMemory

BOX_LABELS = (2, 3)  # a box's top-left and bottom-right corners, as SAM 2 encodes them
MASK_INPUT_LIMIT = 32.0  # SAM2ImagePredictor clamps the low-res logits it returns to ±this


def build(model_type: str) -> SAM2VideoPredictor:
    """`model_type` with random weights, on the CPU, as the sam2 package builds its video predictor from its row's config."""
    model = build_sam2_video_predictor(row_of(model_type).config, ckpt_path=None, device="cpu")
    model.fill_hole_area = 0  # needs sam2's compiled extension (see above)
    return model


def load_sam2(model_type: str, checkpoint: Path, device: torch.device) -> SAM2VideoPredictor:
    """Build `model_type`, load its weights from `checkpoint` (strictly: every tensor, no other) onto `device`."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a bad file
        raise weights_error(model_type, checkpoint, f"it is not a complete PyTorch checkpoint, {type(exc).__name__}") from None
    if not isinstance(state, dict) or "model" not in state:
        raise weights_error(model_type, checkpoint, 'it holds no "model" entry, as SAM 2.1 checkpoints do')
    model = build(model_type)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise weights_error(model_type, checkpoint, f"its weights do not fit a {model_type} model") from None
    return model.to(device).eval()


def load(model_type: ModelType, checkpoint: Path, device: torch.device, precision: Precision, cache_size: int) -> Sam2Model:
    """The family's `load` (`server.models.seam.Family`)."""
    return Sam2Model(load_sam2(model_type.name, checkpoint, device), model_type.name, cache_size, precision)


class Sam2Model(CachingModel):
    """One SAM 2.1 model on one device."""

    does_video = True

    def __init__(self, model: SAM2VideoPredictor, model_type: str, cache_size: int = 0, precision: Precision | None = None):
        super().__init__(model_type, cache_size, precision or Precision(torch.float32, "the default"))
        self.model = model
        with warnings.catch_warnings():  # its resize and normalisation go through torch.jit.script, deprecated but working
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
            self.transforms = SAM2Transforms(resolution=model.image_size, mask_threshold=0.0)
        self.low_res_side = model.sam_prompt_encoder.mask_input_size[0]
        with torch.inference_mode():
            self._dense_pe = model.sam_prompt_encoder.get_dense_pe()  # constant; the predictor recomputes it per call

    @property
    def device(self) -> torch.device:
        return self.model.device

    def memory(self) -> ModelMemory:
        side = self.model.image_size // self.model.backbone_stride
        decoder = self.model.sam_mask_decoder
        values = self.model.hidden_dim * side**2 + decoder.conv_s0.out_channels * (4 * side) ** 2
        values += decoder.conv_s1.out_channels * (2 * side) ** 2
        return ModelMemory(
            weights_bytes=sum(p.numel() * p.element_size() for p in self.model.parameters()),
            embedding_bytes=values * 4,  # three float32 maps
        )

    def open_video(self, frames: list[np.ndarray], width: int, height: int) -> VideoTracker:
        """A clip's tracking state; `frames` are RGB uint8 at the model's `image_size`² (server/video_decode.py)."""
        return VideoTracker(self.model, frames, width, height, self.precision)

    @property
    def image_size(self) -> int:
        return self.model.image_size

    def embed(self, images: list[np.ndarray]) -> list[Embedding]:
        """The encoder, once, on a batch of RGB images (as `SAM2ImagePredictor.set_image` prepares each)."""
        batch = torch.stack([self.prepare(pixels) for pixels in images]).to(self.device)
        with self.precision.autocast(self.device):
            backbone = self.model.forward_image(batch)  # also projects the two finer levels for the decoder
        levels = [level.float() for level in backbone["backbone_fpn"][-self.model.num_feature_levels :]]
        if self.model.directly_add_no_mem_embed:  # as the predictor does for a single image
            levels[-1] = levels[-1] + self.model.no_mem_embed.float().view(1, -1, 1, 1)
        *finer, coarsest = levels  # 256², 128², then 64² for a 1024 input
        return [
            # clone: a cached embedding must not keep the whole batch's features alive
            Embedding(
                tuple(level[i : i + 1].clone() for level in (coarsest, *finer)),
                Postprocess(self.low_res_side, (self.low_res_side, self.low_res_side), pixels.shape[:2], 0.0),
            )
            for i, pixels in enumerate(images)
        ]

    def prepare(self, pixels: np.ndarray) -> torch.Tensor:
        """`SAM2Transforms` of one RGB image (3 × 1024 × 1024, bit for bit), made one channel at a time."""
        resize, normalize = self.transforms.transforms
        planes = [
            # as ToTensor: to float32, then ÷ 255 (in place: the same arithmetic)
            resize(torch.from_numpy(np.ascontiguousarray(pixels[:, :, channel])).to(torch.float32).div_(255)[None])
            for channel in range(3)
        ]
        return normalize(torch.cat(planes))

    def decode(
        self,
        embedding: Embedding,
        prompts: list[Prompt],
        multimask: bool,
        per_call: int | None = None,
        score_floor: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The low-res logits (N × C × s × s) and scores (N × C) of each prompt, on the model's device.

        Prompt `i` gets what `SAM2ImagePredictor.predict` gives for it alone;
        prompts of one structure (points count, box or not, mask or not) share
        a decoder call. Every prompt's logits are made, whatever `score_floor`.
        """
        candidates = 3 if multimask else 1
        low_res = torch.empty((len(prompts), candidates, self.low_res_side, self.low_res_side), device=self.device)
        scores = torch.empty((len(prompts), candidates), device=self.device)
        image_embedding, *high_res = embedding.features
        for indices in decoder_calls(prompts, per_call or self.prompts_per_call):
            group = [prompts[i] for i in indices]
            points, masks = self._prompt_tensors(group, embedding.postprocess.original_size)
            sparse, dense = self.model.sam_prompt_encoder(points=points, boxes=None, masks=masks)
            group_low_res, group_scores, _, _ = self.model.sam_mask_decoder(
                image_embeddings=image_embedding,
                image_pe=self._dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask,
                repeat_image=len(group) > 1,
                high_res_features=high_res,
            )
            where = torch.as_tensor(indices, device=self.device)
            low_res[where], scores[where] = group_low_res.float(), group_scores.float()
        return low_res, scores

    def _prompt_tensors(
        self, group: list[Prompt], original_size: tuple[int, int]
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """The prompt encoder's `points` (box corners first) and `masks` for prompts of one structure, as `predict` makes them."""
        first = group[0]
        coords, labels = [], []
        if first.box is not None:
            corners = torch.as_tensor(np.array([prompt.box for prompt in group], dtype=float), dtype=torch.float, device=self.device)
            coords.append(self.transforms.transform_boxes(corners, normalize=True, orig_hw=original_size))
            labels.append(torch.tensor([BOX_LABELS], dtype=torch.int, device=self.device).repeat(len(group), 1))
        if first.points:
            points = np.array([[(point.x, point.y) for point in prompt.points] for prompt in group], dtype=float)
            coords.append(
                self.transforms.transform_coords(
                    torch.as_tensor(points, dtype=torch.float, device=self.device), normalize=True, orig_hw=original_size
                )
            )
            labels.append(
                torch.as_tensor([[point.label for point in prompt.points] for prompt in group], dtype=torch.int, device=self.device)
            )
        masks = None
        if first.mask_input is not None:
            stacked = np.stack([prompt.mask_input for prompt in group])  # type: ignore[misc]
            if stacked.shape[-2:] != (self.low_res_side, self.low_res_side):
                raise ValueError(f"mask_input must be 1 × {self.low_res_side} × {self.low_res_side}, not {stacked.shape[1:]}")
            masks = torch.as_tensor(stacked, dtype=torch.float, device=self.device)
            masks = masks.clamp(-MASK_INPUT_LIMIT, MASK_INPUT_LIMIT)  # what the predictor's returned logits hold
        return (torch.cat(coords, dim=1), torch.cat(labels, dim=1)), masks
