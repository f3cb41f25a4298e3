"""Settings: environment variables, with a `.env` file read when present.

Every setting the code reads is a field of `Settings`; the names and defaults
are documented in docs/settings.md and `.env.example`. The environment
wins over `.env`. `CAP_ENV_FILE` names another dotenv file to read instead of
`.env` (empty: none), which is how tests keep a user's `.env` out of the
servers they start. A malformed value is a `SettingsError` naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from dotenv import dotenv_values

from server import working_in_clone
from server.models.registry import MODEL_TYPES, checkpoint_name

PRECISIONS = ("auto", "fp32", "bf16")


def default_checkpoint(model_type: str) -> Path:
    """SAM_CHECKPOINT when unset: the official file name, in server/ in a clone (where the README puts it),
    else in checkpoints/ of the working folder (an installed `cap` runs from any folder)."""
    return Path("server" if working_in_clone() else "checkpoints") / checkpoint_name(model_type)


# The variable that names the dotenv file to read; unset means `.env` in the
# working directory, empty means none.
ENV_FILE_VARIABLE = "CAP_ENV_FILE"
_FROM_ENVIRONMENT = Path("<CAP_ENV_FILE, else .env>")


class SettingsError(ValueError):
    """A setting has a value the server cannot use."""


def env_file(environ: Mapping[str, str]) -> Path | None:
    """The dotenv file to read: the one CAP_ENV_FILE names (empty: none), else `.env`."""
    name = environ.get(ENV_FILE_VARIABLE)
    if name is None:
        return Path(".env")
    if name and not Path(name).is_file():
        raise SettingsError(f"{ENV_FILE_VARIABLE}={name!r} names no file: point it at a dotenv file, or set it empty to read none.")
    return Path(name) if name else None


# What a malformed value should have been, by the field's type.
_EXPECTED = {bool: "true or false", int: "a whole number", float: "a number"}


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8080
    cvat_port: int = 0  # 0: CVAT's routes are off
    cosmos_endpoint: str | None = None
    cosmos_key: str | None = dataclasses.field(default=None, repr=False)
    cosmos_database: str = "cap"
    cosmos_queue_container: str = "Queue"
    cosmos_output_container: str = "SAMOutput"
    cosmos_verify_tls: bool = True
    cosmos_timeout: float = 10.0
    sqlite_path: Path = Path("data/cap.sqlite3")
    sam_model_type: str = "vit_h"
    sam_checkpoint: Path = Path("server/sam_vit_h_4b8939.pth")
    sam_device: str = "auto"
    precision: str = "auto"
    image_dir: Path = Path("data/images")
    image_retention_hours: float = 168.0
    min_free_disk_mb: int = 512
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    download_timeout: float = 15.0
    max_redirects: int = 3
    allow_private_urls: bool = False
    max_boxes: int = 64
    max_message_bytes: int = 64 * 1024
    max_queue: int = 256
    max_connections: int = 1024
    max_connections_per_client: int = 64
    request_timeout: float = 10.0
    job_timeout: float = 600.0
    poll_interval: float = 1.0
    max_attempts: int = 3
    lease_seconds: float = 120.0
    waiter_lease_seconds: float = 30.0
    embedding_cache_size: int = 8
    batch_size: int = 0
    torch_threads: int = 0
    drain_seconds: float = 30.0
    send_timeout: float = 30.0
    max_points: int = 32
    mask_cache_size: int = 64
    session_idle_seconds: float = 300.0
    pixel_budget_mb: int = 2048
    max_mask_pixels: int = 200_000_000
    max_result_bytes: int = 16 * 1024 * 1024
    max_polygon_vertices: int = 1_000_000
    api_token: str | None = dataclasses.field(default=None, repr=False)
    label_studio_url: str | None = None
    # Never in a repr, a log or an error (docs/label-studio.md).
    label_studio_api_key: str | None = dataclasses.field(default=None, repr=False)
    log_level: str = "INFO"
    log_format: str = "text"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, dotenv: Path | None = _FROM_ENVIRONMENT
    ) -> "Settings":
        """Build settings from a dotenv file (if it exists) overlaid by `environ`.

        The file is `dotenv` when given (None: no file), else the one
        `env_file` picks from `environ`.
        """
        environ = os.environ if environ is None else environ
        if dotenv is _FROM_ENVIRONMENT:
            dotenv = env_file(environ)
        values: dict[str, str] = {}
        if dotenv is not None and dotenv.is_file():
            values.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
        values.update(environ)

        fields = {}
        for field in dataclasses.fields(cls):
            name = field.name.upper()
            if name not in values:
                continue
            raw = values[name]
            kind = type(field.default) if field.default is not None else str
            try:
                if kind is bool:
                    fields[field.name] = _bool(raw)
                elif kind is str:
                    fields[field.name] = raw if raw != "" or field.default is not None else None
                else:
                    fields[field.name] = kind(raw)
            except ValueError as exc:
                raise SettingsError(f"{name}={raw!r} is not valid: set it to {_EXPECTED.get(kind, kind.__name__)}.") from None
        model_type = fields.get("sam_model_type", cls.sam_model_type)
        if "SAM_CHECKPOINT" not in values and model_type in MODEL_TYPES:
            fields["sam_checkpoint"] = default_checkpoint(model_type)
        settings = cls(**fields)
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse values that are well-formed but make no sense."""
        if self.sam_model_type not in MODEL_TYPES:
            raise SettingsError(
                f"SAM_MODEL_TYPE={self.sam_model_type!r} is not a model type: set it to one of "
                f"{', '.join(MODEL_TYPES)}."
            )
        for model_type in MODEL_TYPES:
            if self.sam_checkpoint.name == checkpoint_name(model_type) and model_type != self.sam_model_type:
                mine = checkpoint_name(self.sam_model_type)
                raise SettingsError(
                    f"SAM_CHECKPOINT={str(self.sam_checkpoint)!r} is the {model_type} checkpoint but "
                    f"SAM_MODEL_TYPE={self.sam_model_type}: set SAM_CHECKPOINT={self.sam_checkpoint.parent / mine} "
                    f"as well, or SAM_MODEL_TYPE={model_type}."
                )
        if self.precision not in PRECISIONS:
            raise SettingsError(f"PRECISION={self.precision!r} is not a precision: set it to auto, fp32 or bf16.")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise SettingsError(f"LOG_LEVEL={self.log_level!r} must be DEBUG, INFO, WARNING or ERROR.")
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"LOG_FORMAT={self.log_format!r} must be text or json.")
        positive = (
            "max_image_bytes", "max_image_pixels", "download_timeout", "max_boxes",
            "max_message_bytes", "max_queue", "max_connections", "request_timeout",
            "job_timeout", "poll_interval", "max_attempts", "lease_seconds", "cosmos_timeout",
            "send_timeout", "pixel_budget_mb", "max_points", "session_idle_seconds", "waiter_lease_seconds",
            "max_mask_pixels", "max_result_bytes", "max_polygon_vertices",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name.upper()} must be greater than 0.")
        at_least_zero = (
            "embedding_cache_size", "batch_size", "torch_threads", "mask_cache_size", "max_connections_per_client",
            "min_free_disk_mb",
        )
        for name in at_least_zero:
            if getattr(self, name) < 0:
                raise SettingsError(f"{name.upper()} must be 0 or more.")
        if self.label_studio_url is not None:
            parts = urlsplit(self.label_studio_url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                raise SettingsError(
                    f"LABEL_STUDIO_URL={self.label_studio_url!r} is not Label Studio's address: set it to its "
                    "http(s) URL, for example http://label-studio:8080."
                )
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"PORT={self.port} is not a TCP port: set it to a number from 0 to 65535.")
        if not 0 <= self.cvat_port <= 65535 or (self.cvat_port and self.cvat_port == self.port):
            raise SettingsError(
                f"CVAT_PORT={self.cvat_port} must be a TCP port other than PORT (or 0, unset, for no CVAT routes)."
            )
