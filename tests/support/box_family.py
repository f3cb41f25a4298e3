"""A model family for tests: a tiny model behind the seam, to show that a family is one module plus one row.

A test registers it as a row of `server.models.registry` (family
"tests.support.box_family") and the server loads it as it loads SAM: through
`load_model`, from a checkpoint file. Its encoder averages the image down to
a 16 × 16 grey map; its decoder paints each prompt's box (or a small square
around each foreground point) as positive logits on a 64 × 64 grid over the
whole image, negative elsewhere, plus a `mask_input` if there is one. So a
box whose corners fall on the grid comes back as that box, but for its four
corner pixels, which the bilinear upsampling of the logits rounds off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from server.masks import Postprocess
from server.models.caching_model import CachingModel
from server.models.checkpoint_file import weights_error
from server.models.device import Precision
from server.models.embedding_cache import Embedding
from server.models.registry import ModelType
from server.models.seam import ModelMemory
from server.prompts import Prompt

FEATURES = 16  # the encoder's map: FEATURES × FEATURES
LOW_RES = 64  # the decoder's logits: LOW_RES × LOW_RES over the whole image
EMBEDDING_BYTES = FEATURES * FEATURES * 4  # one float32 map
POINT_CELLS = 2  # a foreground point paints this many cells each way


def write_checkpoint(path: Path, logit: float = 8.0) -> Path:
    """The family's checkpoint: its one weight, the logit it paints inside a prompt."""
    torch.save({"logit": torch.tensor(logit)}, path)
    return path


def load(model_type: ModelType, checkpoint: Path, device: torch.device, precision: Precision, cache_size: int) -> BoxModel:
    """The family's `load` (`server.models.seam.Family`)."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        logit = state["logit"].to(device)
    except Exception as exc:  # torch raises many kinds for a bad file
        wrong = f"it is no {model_type.name} checkpoint, {type(exc).__name__}"
        raise weights_error(model_type.name, checkpoint, wrong) from None
    return BoxModel(logit, model_type.name, cache_size, precision)


class BoxModel(CachingModel):
    """Boxes in, the same boxes out, through the real cache, batching and processor."""

    def __init__(self, logit: torch.Tensor, model_type: str, cache_size: int, precision: Precision):
        super().__init__(model_type, cache_size, precision)
        self.logit = logit

    @property
    def device(self) -> torch.device:
        return self.logit.device

    def memory(self) -> ModelMemory:
        return ModelMemory(weights_bytes=self.logit.numel() * self.logit.element_size(), embedding_bytes=EMBEDDING_BYTES)

    def embed(self, images: list[np.ndarray]) -> list[Embedding]:
        embeddings = []
        for pixels in images:
            grey = torch.from_numpy(pixels.astype(np.float32)).to(self.device).mean(-1)  # a copy: pixels are read-only
            features = F.adaptive_avg_pool2d(grey[None, None], FEATURES)
            # Straight to the image, as SAM 2.1: encoder and input sizes are the low-res side.
            embeddings.append(Embedding((features,), Postprocess(LOW_RES, (LOW_RES, LOW_RES), pixels.shape[:2], 0.0)))
        return embeddings

    def decode(self, embedding: Embedding, prompts: list[Prompt], multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = embedding.postprocess.original_size
        low_res = torch.full((len(prompts), 1, LOW_RES, LOW_RES), -float(self.logit), device=self.device)
        for index, prompt in enumerate(prompts):
            if prompt.box is not None:
                x0, y0, x1, y1 = prompt.box
                rows, columns = _cells(y0, y1, height), _cells(x0, x1, width)
                low_res[index, 0, rows, columns] = self.logit
            for point in prompt.points:
                if point.label == 1:
                    row, column = int(point.y * LOW_RES / height), int(point.x * LOW_RES / width)
                    low_res[index, 0, _around(row), _around(column)] = self.logit
            if prompt.mask_input is not None:
                low_res[index] += torch.as_tensor(prompt.mask_input, device=self.device)
        candidates = 3 if multimask else 1
        return low_res.expand(-1, candidates, -1, -1).clone(), torch.ones((len(prompts), candidates), device=self.device)


def _cells(start: float, stop: float, length: int) -> slice:
    return slice(round(start * LOW_RES / length), round(stop * LOW_RES / length))


def _around(cell: int) -> slice:
    return slice(max(0, cell - POINT_CELLS), cell + POINT_CELLS + 1)
