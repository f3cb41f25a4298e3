"""`python -m server download-checkpoint`: fetch an official SAM checkpoint, verified.

SAM 1's official file names carry the first hex digits of the file's SHA-256
(`sam_vit_h_4b8939.pth`: its hash starts with 4b8939), the torch.hub
convention. SAM 2.1's (`sam2.1_hiera_tiny.pt`) carry none, and Meta publishes
no hash for them: such a file is verified by loading it as the model it is
for (every tensor present, with its shape, and no other), the `verify`
callable. The download is streamed to a temporary file beside the target
while its SHA-256 is computed; only a verified file is renamed into place,
so the target is either absent, or a whole, verified checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import IO, Callable
from urllib.parse import urlsplit

import requests

from server.models.registry import hash_prefix

CHUNK_BYTES = 1024 * 1024


class DownloadError(Exception):
    """The checkpoint could not be downloaded whole and verified; the message says what to do."""


class Unreachable(DownloadError):
    """Not one byte came: no network, a name that does not resolve, a refused or silent host. The message
    says which; what to do instead (a mirror, or copying the file in) is the caller's to say."""


def expected_prefix(url: str) -> str | None:
    """The SHA-256 prefix in the URL's file name; None if it carries none."""
    return hash_prefix(Path(urlsplit(url).path).name)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def download_checkpoint(
    url: str,
    target: Path,
    progress: IO[str] = sys.stderr,
    timeout: float = 30,
    verify: Callable[[Path], None] | None = None,
) -> None:
    """Download `url` to `target`, verified against the hash prefix in its file name, or else by `verify`.

    `verify(path)` raises (with a message for a person) when the file is not
    the model's checkpoint; a name without a prefix and no `verify` is refused.
    """
    prefix = expected_prefix(url)
    if prefix is None and verify is None:
        name = Path(urlsplit(url).path).name
        raise DownloadError(f"{name!r} carries no SHA-256 prefix (like sam_vit_b_01ec64.pth), so it cannot be verified.")
    if target.is_file() and _verified(target, prefix, verify):
        print(f"{target} is already there and verified ({_how(prefix)}).", file=progress)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as file:
            digest = _stream(url, file, progress, timeout)
        if prefix is not None and not digest.startswith(prefix):
            raise DownloadError(
                f"The file from {url} is corrupt: its SHA-256 is {digest[:16]}..., the name says {prefix}...; "
                "nothing was written. Try again."
            )
        if prefix is None:
            try:
                verify(temp)  # type: ignore[misc]
            except Exception as exc:
                raise DownloadError(f"The file from {url} is not the checkpoint ({exc}); nothing was written. Try again.") from None
        os.chmod(temp, 0o644)  # mkstemp's 0600 would hide the public weights from the server's user
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    print(f"{target}: verified ({_how(prefix)}; sha256 {digest}).", file=progress)


def _verified(path: Path, prefix: str | None, verify: Callable[[Path], None] | None) -> bool:
    if prefix is not None:
        return sha256_of(path).startswith(prefix)
    try:
        verify(path)  # type: ignore[misc]
    except Exception:
        return False
    return True


def _how(prefix: str | None) -> str:
    return f"sha256 {prefix}..." if prefix else "it loads as the model, every tensor with its shape"


def _stream(url: str, file: IO[bytes], progress: IO[str], timeout: float) -> str:
    """Write the response body to `file` with a progress bar; its SHA-256 hex digest."""
    digest = hashlib.sha256()
    received = 0
    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            total = int(response.headers.get("Content-Length", 0))
            for chunk in response.iter_content(CHUNK_BYTES):
                file.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                _show(progress, received, total)
    except requests.RequestException as exc:
        if received == 0 and isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            raise Unreachable(f"Cannot reach {urlsplit(url).hostname} for {url} ({_unreachable(exc, timeout)})") from None
        raise DownloadError(f"The download from {url} failed after {received} bytes ({exc}); nothing was written. Try again.") from None
    finally:
        print(file=progress)
    if total and received != total:
        raise DownloadError(f"The download from {url} stopped at {received} of {total} bytes; nothing was written. Try again.")
    return digest.hexdigest()


def _unreachable(exc: requests.RequestException, timeout: float) -> str:
    """Why no connection was made, in a few words rather than urllib3's nested exceptions."""
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout:g} s"
    cause: BaseException | None = exc
    while isinstance(cause, requests.RequestException) or (cause is not None and not isinstance(cause, OSError)):
        cause = cause.__cause__ or cause.__context__  # requests' error, urllib3's, then the socket's
    if isinstance(cause, socket.gaierror):
        return "the name does not resolve: no network, or no DNS"
    if isinstance(cause, ConnectionRefusedError):
        return "the connection was refused"
    return cause.strerror if isinstance(cause, OSError) and cause.strerror else "no connection"


def _show(progress: IO[str], received: int, total: int) -> None:
    megabytes = f"{received / 1e6:,.0f} MB"
    if total:
        done = received / total
        bar = "#" * int(done * 30)
        progress.write(f"\r[{bar:<30}] {done:4.0%} {megabytes} of {total / 1e6:,.0f} MB")
    else:
        progress.write(f"\r{megabytes}")
    progress.flush()
