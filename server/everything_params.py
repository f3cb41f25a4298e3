"""The `everything` request's parameters (protocol 1.2): read, checked, and completed with the family's defaults.

Pure: no model, no torch. The keys and defaults are those of the reference
generators, `SamAutomaticMaskGenerator` (SAM 1) and
`SAM2AutomaticMaskGenerator` (SAM 2.1); `points_per_batch` is the server's
choice, never the client's. `parse` checks what any family accepts, when the
request is read; `for_family` refuses the SAM 2.1 keys on SAM 1 and fills in
the defaults, when the request is admitted (the model is known there).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from server.errors import invalid as _invalid
from server.models import registry

SAM1, SAM2 = "sam1", "sam2"
# name -> (kind, low, high); kind "int", "number" or "bool"; None: unbounded that way.
RANGES: dict[str, tuple[str, float | None, float | None]] = {
    "points_per_side": ("int", 1, 64),
    "pred_iou_thresh": ("number", 0, 1),
    "stability_score_thresh": ("number", 0, 1),
    "stability_score_offset": ("number", 0, None),
    "box_nms_thresh": ("number", 0, 1),
    "crop_n_layers": ("int", 0, 2),
    "crop_nms_thresh": ("number", 0, 1),
    "crop_overlap_ratio": ("number", 0, 1),
    "crop_n_points_downscale_factor": ("int", 1, 4),
    "min_mask_region_area": ("int", 0, None),
    "mask_threshold": ("number", None, None),
    "multimask_output": ("bool", None, None),
    "use_m2m": ("bool", None, None),
}
SAM2_ONLY = ("mask_threshold", "multimask_output", "use_m2m")


@dataclasses.dataclass(frozen=True)
class EverythingParams:
    """Every parameter of one `everything` request, the family's defaults filled in."""

    points_per_side: int = 32
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    mask_threshold: float = 0.0
    multimask_output: bool = True
    use_m2m: bool = False

    def total_points(self) -> int:
        """Grid points over every crop, as the reference generator visits them: the `total` of progress."""
        total = 0
        for layer in range(self.crop_n_layers + 1):
            side = int(self.points_per_side / (self.crop_n_points_downscale_factor**layer))
            total += side * side * (1 if layer == 0 else (2**layer) ** 2)
        return total


DEFAULTS = {SAM1: EverythingParams(), SAM2: EverythingParams(pred_iou_thresh=0.8)}


def parse(value: Any) -> dict[str, Any]:
    """The `everything` object as sent, checked key by key; `invalid_request` naming the field that is wrong."""
    if not isinstance(value, dict):
        raise _invalid('everything must be an object of generator parameters; {} takes the defaults.')
    unknown = sorted(set(value) - set(RANGES))
    if unknown:
        raise _invalid(
            f"everything.{unknown[0]} is not a parameter; allowed: {', '.join(RANGES)} "
            "(points_per_batch is the server's choice)."
        )
    for name, given in value.items():
        _check(name, given)
    return dict(value)


def _check(name: str, value: Any) -> None:
    kind, low, high = RANGES[name]
    where = f"everything.{name}"
    if kind == "bool":
        if not isinstance(value, bool):
            raise _invalid(f"{where} must be true or false.")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _invalid(f"{where} must be a finite number.")
    if kind == "int" and value != int(value):
        raise _invalid(f"{where} must be a whole number.")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"from {low:g} to {high:g}" if high is not None else f"{low:g} or more"
        raise _invalid(f"{where} must be {bounds}, not {value:g}.")


def for_model(sent: dict[str, Any] | None, model_type: str) -> EverythingParams | None:
    """The parameters for the `SAM_MODEL_TYPE` served (None for a request without `everything`)."""
    if sent is None:
        return None
    return for_family(sent, family_of(model_type), model_type)


def family_of(model_type: str) -> str:
    """SAM2 for a SAM 2.1 model type of the registry, else SAM1."""
    row = registry.MODEL_TYPES.get(model_type)
    return SAM2 if row is not None and row.family == registry.SAM2 else SAM1


def for_family(sent: dict[str, Any], family: str, model_type: str) -> EverythingParams:
    """The parameters for this family: SAM 2.1's own keys refused on SAM 1, the rest from the family's defaults."""
    if family == SAM1:
        for name in SAM2_ONLY:
            if name in sent:
                raise _invalid(f"everything.{name} is a SAM 2.1 parameter; this server runs {model_type} (SAM 1).")
    typed = {name: int(v) if RANGES[name][0] == "int" else v for name, v in sent.items()}
    return dataclasses.replace(DEFAULTS[family], **typed)
