"""The checkpoint file: is it there, does it load, and what a person does when it is missing or unusable."""

from __future__ import annotations

from pathlib import Path

from server import program_name, working_in_clone
from server.models.registry import model_type as row_of


class CheckpointError(Exception):
    """The checkpoint is missing or unusable; the message is one paragraph for a person."""


def download_command() -> str:
    """`download-checkpoint` as this user most likely runs CAP: `cap` once installed, `./scripts/run` in a
    clone's folder, else `python -m server` (as in the Docker image)."""
    program = program_name("server")
    if program == "python -m server" and working_in_clone() and Path("scripts/run").is_file():
        program = "./scripts/run"
    return f"{program} download-checkpoint"


def _fetch_hint(model_type: str) -> str:
    return f"`{download_command()}` (from {row_of(model_type).url})"


def check_checkpoint(model_type: str, checkpoint: Path) -> None:
    """Fail fast, before anything starts, when the checkpoint file is not there."""
    if not checkpoint.is_file():
        raise CheckpointError(
            f"No SAM checkpoint at {checkpoint.resolve()} (SAM_CHECKPOINT, for SAM_MODEL_TYPE={model_type}): "
            f"download it with {_fetch_hint(model_type)}, or set SAM_CHECKPOINT to where the file is."
        )


def weights_error(model_type: str, checkpoint: Path, wrong: str) -> CheckpointError:
    """The checkpoint exists but is not `model_type`'s weights; `wrong` says how."""
    return CheckpointError(
        f"The SAM checkpoint {checkpoint.resolve()} cannot be loaded ({wrong}): download it again with "
        f"{_fetch_hint(model_type)}, or set SAM_MODEL_TYPE to the model type it was made for."
    )
