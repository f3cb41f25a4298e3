"""Loading a model by its type: the registry's row names the family module, imported only now.

Importing a family can be costly (`import sam2` initialises Hydra for the
whole process), so a server imports only the family of its SAM_MODEL_TYPE.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Callable, cast

import torch

from server.config import Settings
from server.models.checkpoint_file import check_checkpoint
from server.models.device import resolve_device, resolve_precision, set_torch_threads
from server.models.registry import model_type as row_of
from server.models.seam import Family, SegmentationModel

log = logging.getLogger(__name__)


def load_model(
    model_type: str, checkpoint: Path, device: str = "auto", precision: str = "auto", cache_size: int = 0
) -> SegmentationModel:
    """Build `model_type`, load its weights from `checkpoint` onto `device` (a CheckpointError if they do not fit)."""
    row = row_of(model_type)
    check_checkpoint(model_type, checkpoint)
    resolved = torch.device(resolve_device(device))
    chosen = resolve_precision(precision, resolved)
    family = cast(Family, importlib.import_module(row.family))
    return family.load(row, checkpoint, resolved, chosen, cache_size)


def production_model_loader(settings: Settings) -> Callable[[], SegmentationModel]:
    """What the processor thread calls to load SAM_MODEL_TYPE as the settings say, logging what it holds."""

    def load() -> SegmentationModel:
        threads = set_torch_threads(settings.torch_threads)
        log.info("torch uses %d CPU threads", threads)
        row = row_of(settings.sam_model_type)
        model = load_model(
            settings.sam_model_type, settings.sam_checkpoint, settings.sam_device,
            settings.precision, settings.embedding_cache_size,
        )
        memory = model.memory()
        log.info(
            "%s (%s) in %s: %s; weights %.0f MB, %.1f MB per cached image (EMBEDDING_CACHE_SIZE=%d: up to %.0f MB)",
            model.model_type, row.family, model.precision.name, model.precision.reason, memory.weights_bytes / 1e6,
            memory.embedding_bytes / 1e6, settings.embedding_cache_size,
            memory.embedding_bytes * settings.embedding_cache_size / 1e6,
        )
        return model

    return load
