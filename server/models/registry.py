"""The model types CAP serves: one row each, naming the family module that loads it.

A row says what `SAM_MODEL_TYPE` names: the family module, what that family
builds (`config`), Meta's checkpoint (its URL, and so its file name and, for
SAM 1, the first hex digits of its SHA-256), and the bytes of one cached
image's embedding, which `EMBEDDING_CACHE_SIZE` multiplies. Settings,
`download-checkpoint`, the start-up log and the docs read this table.

Adding a family is one module plus one row. The module defines
`load(model_type, checkpoint, device, precision, cache_size)` (the `Family`
protocol of `server.models.seam`), usually with a `CachingModel` subclass;
rows name it by module path, and `server.models.loading` imports it only when
one of its types is loaded: importing sam2 initialises Hydra for the whole
process, which a SAM 1 server must not pay for.

This module imports nothing heavy (no torch): the settings read it.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import PurePosixPath
from urllib.parse import urlsplit

SAM1 = "server.models.sam1"  # SAM 1 through segment-anything
SAM2 = "server.models.sam2"  # SAM 2.1 through Meta's sam2 package

# A file name that ends with the first hex digits of its SHA-256 (torch.hub's convention): sam_vit_b_01ec64.pth.
HASH_PREFIX = re.compile(r"_([0-9a-f]{6,64})\.pth$")

# One cached image, float32: SAM 1 keeps one 256 × 64 × 64 map; SAM 2.1 that,
# and its two finer levels (64 × 128², 32 × 256²) for the decoder.
SAM1_EMBEDDING_BYTES = 256 * 64 * 64 * 4  # 4.2 MB
SAM2_EMBEDDING_BYTES = (256 * 64**2 + 64 * 128**2 + 32 * 256**2) * 4  # 16.8 MB


def hash_prefix(file_name: str) -> str | None:
    """The SHA-256 prefix a checkpoint's file name carries (sam_vit_b_01ec64.pth: 01ec64); None if none."""
    match = HASH_PREFIX.search(file_name)
    return match.group(1) if match else None


@dataclasses.dataclass(frozen=True)
class ModelType:
    """One `SAM_MODEL_TYPE`."""

    name: str
    family: str  # the module that loads it, e.g. server.models.sam1
    config: str  # what that family builds: segment-anything's registry key, the sam2 package's config file
    url: str  # Meta's checkpoint
    embedding_bytes: int  # one cached image's embedding (`ModelMemory.embedding_bytes` once loaded)

    @property
    def checkpoint_name(self) -> str:
        """The official checkpoint's file name, e.g. sam_vit_b_01ec64.pth."""
        return PurePosixPath(urlsplit(self.url).path).name

    @property
    def sha256_prefix(self) -> str | None:
        """What the official file is verified against: SAM 1's names carry it; Meta publishes none for SAM 2.1."""
        return hash_prefix(self.checkpoint_name)


_SAM1_FILES = "https://dl.fbaipublicfiles.com/segment_anything"
_SAM2_FILES = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"

# SAM 1 first, then SAM 2.1; the first is the default.
MODEL_TYPES: dict[str, ModelType] = {
    row.name: row
    for row in (
        ModelType("vit_h", SAM1, "vit_h", f"{_SAM1_FILES}/sam_vit_h_4b8939.pth", SAM1_EMBEDDING_BYTES),
        ModelType("vit_l", SAM1, "vit_l", f"{_SAM1_FILES}/sam_vit_l_0b3195.pth", SAM1_EMBEDDING_BYTES),
        ModelType("vit_b", SAM1, "vit_b", f"{_SAM1_FILES}/sam_vit_b_01ec64.pth", SAM1_EMBEDDING_BYTES),
        ModelType("sam2.1_hiera_t", SAM2, "configs/sam2.1/sam2.1_hiera_t.yaml", f"{_SAM2_FILES}/sam2.1_hiera_tiny.pt",
                  SAM2_EMBEDDING_BYTES),
        ModelType("sam2.1_hiera_s", SAM2, "configs/sam2.1/sam2.1_hiera_s.yaml", f"{_SAM2_FILES}/sam2.1_hiera_small.pt",
                  SAM2_EMBEDDING_BYTES),
        ModelType("sam2.1_hiera_b+", SAM2, "configs/sam2.1/sam2.1_hiera_b+.yaml",
                  f"{_SAM2_FILES}/sam2.1_hiera_base_plus.pt", SAM2_EMBEDDING_BYTES),
        ModelType("sam2.1_hiera_l", SAM2, "configs/sam2.1/sam2.1_hiera_l.yaml", f"{_SAM2_FILES}/sam2.1_hiera_large.pt",
                  SAM2_EMBEDDING_BYTES),
    )
}


def model_type(name: str) -> ModelType:
    """The row of `name`; a ValueError naming the choices if there is none."""
    try:
        return MODEL_TYPES[name]
    except KeyError:
        raise ValueError(f"{name!r} is not a model type: one of {', '.join(MODEL_TYPES)}") from None


def checkpoint_name(name: str) -> str:
    """The official checkpoint's file name for the model type `name`."""
    return model_type(name).checkpoint_name
