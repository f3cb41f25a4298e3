"""IMAGE_DIR, stored by content: one file per SHA-256 (docs/records.md, "Image files").

A request's image is written once as `pending/<sha256>` (the same bytes
sent again find it there and write nothing). Once the model has run on it,
it moves to `<first 2 hex digits>/<sha256>`, kept IMAGE_RETENTION_HOURS
from its last use. Finding an image by its hash opens one path (two at
most); nothing here ever lists a folder for a request.

Each request in flight holds its image (`hold`): a held file is never
deleted. When the last hold on a pending file is released (the request
was superseded, interrupted, failed or refused) the file goes
RELEASE_GRACE_SECONDS later, unless a live record of the same token scope
names the same image by then, or one that was processed (by another
replica: then it is kept). A new file is refused
(`store_unavailable`) when writing it would leave less than
MIN_FREE_DISK_MB free. `sweep` does the rest in bounded steps on the
sweeper's thread (server/sweeper.py): files past their retention, pending
files no request can still need, and image files of earlier versions
(`<uuid>.<ext>` at the top of IMAGE_DIR), moved to their hash's name.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import stat
import tempfile
import threading
import time
from pathlib import Path

from server import images, jobs
from server.config import Settings
from server.errors import ClientError
from server.image_layout import (
    HASH, OLD_NAME, PENDING_RANK, ROOT_RANK, floor_problem, folder_rank, kept_path, pass_folders, pending_path,
    shard_rank,
)
from server.image_usage import Usage
from server.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

# A released pending file waits this long, so that a request by hash that
# follows at once (a click that superseded its image's first request) finds it.
RELEASE_GRACE_SECONDS = 2.0
# The sweep's bounded step: this many folder entries, and at most this many bytes of old files hashed.
STEP_ENTRIES = 256
STEP_HASH_BYTES = 64 * 2**20
STEP_PAUSE_SECONDS = 0.05  # between the steps of a pass
PASS_SECONDS = 60.0  # from the end of one pass over IMAGE_DIR to the next, or a quarter of the shortest age limit
RECORDS_CHECKED = 8  # the newest records with a released image's hash, looked at for a live one
class Hold:
    """A request's claim on its image's file: released once, when the request ends."""

    def __init__(self, owner: "ImageStore", sha256: str, scope: str | None):
        self.sha256 = sha256
        self.scope = scope
        self._owner = owner
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._owner._unpin(self.sha256, self.scope)


class ImageStore:
    def __init__(self, settings: Settings, store: Store):
        self.root = Path(settings.image_dir)
        self.settings = settings
        self.store = store
        self.usage = Usage()
        self.passes = 0  # passes over IMAGE_DIR completed; after the first, `usage` counts every file
        self._lock = threading.Lock()
        self._pins: collections.Counter[str] = collections.Counter()
        # sha256 -> when its pending file is looked at again, and the scope whose records are looked at then
        self._released: dict[str, tuple[float, str | None]] = {}
        self._walk: list[tuple[int, Path]] = []  # folders left in this pass, in order
        self._names: list[str] = []  # entries left in the folder being walked, last first
        self._folder: tuple[int, Path] = (ROOT_RANK, self.root)  # the folder being walked
        self._next_pass = 0.0
        self._deleted = 0  # files this pass found past their time

    # --- requests ---------------------------------------------------------------

    def hold(self, sha256: str, data: bytes | None, scope: str | None) -> Hold:
        """Hold the image for a request of `scope` (its token's), writing `data` as its file
        unless this image is here already."""
        with self._lock:
            self._pins[sha256] += 1
            self._released.pop(sha256, None)
        hold = Hold(self, sha256, scope)
        try:
            if data is None:
                self._touch(kept_path(self.root, sha256))
            else:
                self.put(sha256, data)
        except BaseException:
            hold.release()
            raise
        return hold

    def put(self, sha256: str, data: bytes) -> None:
        """Write the image as a pending file, unless it is already here (then its retention starts again)."""
        kept, pending = kept_path(self.root, sha256), pending_path(self.root, sha256)
        if self._touch(kept) or pending.exists():
            return
        try:
            pending.parent.mkdir(parents=True, exist_ok=True)
            problem = floor_problem(pending.parent, self.settings.min_free_disk_mb, len(data))
            if problem:
                log.warning("image refused: %s", problem)
                raise ClientError(
                    "store_unavailable",
                    "The server is short of disk space for images (MIN_FREE_DISK_MB); try again later.",
                )
            fd, temporary = tempfile.mkstemp(dir=pending.parent, prefix=f".{sha256}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                with self._lock:
                    if kept.exists() or pending.exists():  # written meanwhile by another request
                        os.unlink(temporary)
                    else:
                        os.replace(temporary, pending)
                        self.usage.add(PENDING_RANK, sha256, len(data))
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
        except OSError as exc:
            log.error("cannot write the image to IMAGE_DIR %s: %s", self.root, exc)
            raise ClientError(
                "store_unavailable",
                f"The server cannot store the image right now ({exc.strerror or exc}); try again later.",
            ) from None

    def promote(self, sha256: str) -> None:
        """The model ran on this image: keep its file for IMAGE_RETENTION_HOURS from now."""
        with self._lock:
            self._keep(sha256)

    def _unpin(self, sha256: str, scope: str | None) -> None:
        with self._lock:
            self._pins[sha256] -= 1
            if self._pins[sha256] <= 0:
                del self._pins[sha256]
                self._released[sha256] = (time.monotonic() + RELEASE_GRACE_SECONDS, scope)

    def _touch(self, path: Path) -> bool:
        """Start a kept file's retention again; whether it exists."""
        try:
            os.utime(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:  # there, but not ours to touch: it keeps its age
            log.warning("cannot touch %s: %s", path, exc)
        return True

    def _keep(self, sha256: str) -> None:
        """Move a pending file to its kept name, or touch the kept one. Under the lock."""
        pending, kept = pending_path(self.root, sha256), kept_path(self.root, sha256)
        if self._touch(kept):
            self._delete(PENDING_RANK, pending)  # a second copy, written while the first was being kept
            return
        try:
            size = os.lstat(pending).st_size
            kept.parent.mkdir(exist_ok=True)
            os.utime(pending)
            os.rename(pending, kept)
        except FileNotFoundError:
            return
        except OSError as exc:  # a disk gone read-only, say: the file stays pending, the request goes on
            log.warning("image %s: cannot keep its file: %s", sha256[:12], exc)
            return
        self.usage.remove(PENDING_RANK, sha256, size)
        self.usage.add(shard_rank(sha256), sha256, size)

    def _delete(self, rank: int, path: Path) -> None:
        """Delete a file and count it out. Under the lock."""
        try:
            size = os.lstat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot delete %s: %s", path, exc)
            return
        self.usage.remove(rank, path.name, size)

    # --- the sweep: on the sweeper's thread ---------------------------------------

    def sweep(self, now: float | None = None) -> float:
        """One bounded step of housekeeping; the seconds until the next one is wanted."""
        now = time.monotonic() if now is None else now
        self._settle_released(now)
        if not self._walk and not self._names:
            if now < self._next_pass:
                return min(self._next_pass - now, RELEASE_GRACE_SECONDS / 4)
            self._walk = [(folder_rank(name), self.root / name) for name in pass_folders()]
        hashed = 0
        for _ in range(STEP_ENTRIES):
            entry = self._next_entry()
            if entry is None:
                self._end_pass(now)
                return RELEASE_GRACE_SECONDS / 4
            hashed += self._visit(*entry)
            if hashed > STEP_HASH_BYTES:
                break
        return STEP_PAUSE_SECONDS

    def _end_pass(self, now: float) -> None:
        with self._lock:
            self.usage.finish()
        if self._deleted:
            log.info("image sweep: %d files past their time deleted", self._deleted)
        self.passes += 1
        self._deleted = 0
        limits = [PASS_SECONDS * 4, self.settings.job_timeout]
        if self.settings.image_retention_hours > 0:
            limits.append(self.settings.image_retention_hours * 3600)
        self._next_pass = now + min(limits) / 4

    def _settle_released(self, now: float) -> None:
        """Pending files whose last hold went RELEASE_GRACE_SECONDS ago: kept, left or deleted."""
        with self._lock:
            due = [(sha256, scope) for sha256, (when, scope) in self._released.items() if when <= now]
            for sha256, _ in due:
                del self._released[sha256]
        for sha256, scope in due:
            if not pending_path(self.root, sha256).exists():
                continue
            try:
                records = self.store.with_image(sha256, RECORDS_CHECKED, scope)
            except StoreUnavailable as exc:
                log.warning("image %s: left for the sweep, the store did not answer: %s", sha256[:12], exc)
                continue
            with self._lock:
                if self._pins[sha256] or any(not jobs.is_terminal(r) for r in records):
                    continue  # needed again; a live record elsewhere: the sweep's JOB_TIMEOUT rule
                if any(r["processed"] is not None for r in records):
                    self._keep(sha256)  # processed by another replica
                else:
                    self._delete(PENDING_RANK, pending_path(self.root, sha256))

    def _next_entry(self) -> tuple[int, Path] | None:
        """The next folder entry of this pass, listing the next folder when one is done."""
        with self._lock:
            while not self._names:
                if not self._walk:
                    return None
                rank, folder = self._walk.pop(0)
                try:
                    names = sorted(os.listdir(folder), reverse=True)
                except (FileNotFoundError, NotADirectoryError):
                    names = []
                self._names = names
                self._folder = (rank, folder)
                self.usage.enter(rank, names)
            rank, folder = self._folder
            return rank, folder / self._names.pop()

    def _visit(self, rank: int, path: Path) -> int:
        """Count an entry (first pass), delete it if it is due; the bytes hashed to move an old file."""
        with self._lock:
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                self.usage.found(rank, path.name, None)
                return 0
            regular = stat.S_ISREG(info.st_mode)
            self.usage.found(rank, path.name, info.st_size if regular else None)
            if not regular:
                return 0
            age = time.time() - info.st_mtime
            if self._due(rank, path.name, age):
                self._delete(rank, path)
                self._deleted += 1
                return 0
            if rank != ROOT_RANK or not OLD_NAME.fullmatch(path.name):
                return 0
        return self._migrate(path, info.st_size)

    def _due(self, rank: int, name: str, age: float) -> bool:
        """Whether a file is past its time. Under the lock."""
        retention = self.settings.image_retention_hours * 3600
        if name.startswith(".") and name.endswith(".tmp"):  # left by a write that died
            return age > self.settings.job_timeout
        if rank == ROOT_RANK:  # an image file of an earlier version: moved, unless past its retention
            return OLD_NAME.fullmatch(name) is not None and 0 < retention < age
        if not HASH.fullmatch(name) or self._pins[name]:
            return False
        if name in self._released:
            return False
        if rank == PENDING_RANK:  # no record lives longer than JOB_TIMEOUT
            return age > self.settings.job_timeout
        return 0 < retention < age

    def _migrate(self, path: Path, size: int) -> int:
        """Move an image file of an earlier version (`<uuid>.<ext>`) to its hash's name, keeping its age."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            log.warning("cannot move %s: %s", path, exc)
            return 0
        sha256 = images.sha256_hex(data)
        kept = kept_path(self.root, sha256)
        with self._lock:
            if kept.exists():  # another name of the same image (earlier versions linked one per request)
                self._delete(ROOT_RANK, path)
                return len(data)
            try:
                kept.parent.mkdir(exist_ok=True)
                os.rename(path, kept)
            except OSError as exc:
                log.warning("cannot move %s: %s", path, exc)
                return len(data)
            self.usage.remove(ROOT_RANK, path.name, size)
            self.usage.add(shard_rank(sha256), sha256, size)
        log.debug("image %s: moved to %s", path.name, kept.relative_to(self.root))
        return len(data)
