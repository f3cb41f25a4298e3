"""Where an image's file is in IMAGE_DIR, by its hash, and how full IMAGE_DIR's disk is (docs/records.md).

`<first 2 hex digits>/<sha256>` holds an image the model has run on;
`pending/<sha256>` one whose requests are not processed yet. Finding an
image by its hash is one `stat` (or `open`) when it is kept, two or three
otherwise: never a listing. Earlier versions kept one file per request,
`<uuid>.<ext>` at the top of IMAGE_DIR (`OLD_NAME`). A pass of the sweep
walks the folders in a fixed order, each with its `rank`.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path

PENDING = "pending"  # files of requests not processed yet; kept files are in 00 … ff
ROOT_RANK, PENDING_RANK = 0, 1  # IMAGE_DIR itself (files of earlier versions), then pending/


def folder_rank(name: str) -> int:
    """The place of a folder of IMAGE_DIR in a pass: "" (IMAGE_DIR itself), "pending", then "00" to "ff"."""
    if name == "":
        return ROOT_RANK
    if name == PENDING:
        return PENDING_RANK
    return 2 + int(name, 16)


def shard_rank(sha256: str) -> int:
    return folder_rank(sha256[:2])


def pass_folders() -> list[str]:
    """The folders of a pass, in the order of their ranks: IMAGE_DIR itself, pending, then 00 … ff."""
    return ["", PENDING, *(f"{index:02x}" for index in range(256))]


HASH = re.compile(r"[0-9a-f]{64}")
# An image file of an earlier version: IMAGE_DIR/<the request's uuid>.<ext>.
OLD_NAME = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.[A-Za-z0-9]+")


def kept_path(image_dir: Path, sha256: str) -> Path:
    return Path(image_dir) / sha256[:2] / _checked(sha256)


def pending_path(image_dir: Path, sha256: str) -> Path:
    return Path(image_dir) / PENDING / _checked(sha256)


def _checked(sha256: str) -> str:
    if not HASH.fullmatch(sha256):
        raise ValueError(f"not a SHA-256 in hex: {sha256[:80]!r}")
    return sha256


def _places(image_dir: Path, sha256: str) -> tuple[Path, Path, Path]:
    """Where an image's file may be: kept, else pending, else kept again (moved there meanwhile)."""
    kept = kept_path(image_dir, sha256)
    return kept, pending_path(image_dir, sha256), kept


def find(image_dir: Path, sha256: str) -> Path | None:
    """The file of the image with this hash, kept or pending, or None: one `stat` when it is kept."""
    for path in _places(image_dir, sha256):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if stat.S_ISREG(os.stat(path).st_mode):
                return path
    return None


def read(image_dir: Path, sha256: str) -> bytes | None:
    """The bytes of the image with this hash, or None when this server has no file of it."""
    for path in _places(image_dir, sha256):
        with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return path.read_bytes()
    return None


def free_bytes(directory: Path) -> int | None:
    """Bytes free for this user on the file system of `directory`, or None if it cannot be asked."""
    try:
        info = os.statvfs(directory)
    except OSError:
        return None
    return info.f_bavail * info.f_frsize


def floor_problem(directory: Path, min_free_mb: int, incoming: int = 0) -> str | None:
    """Why a file of `incoming` bytes may not be written now (MIN_FREE_DISK_MB), or None."""
    free = free_bytes(directory)
    if free is None or free - incoming >= min_free_mb * 2**20:
        return None
    return f"{free // 2**20} MB free on IMAGE_DIR's disk, under MIN_FREE_DISK_MB ({min_free_mb})"
