"""This process's memory, as the kernel counts it: for the benchmark's rows and the tests' peak."""

from __future__ import annotations

import ctypes
from pathlib import Path


def rss_bytes(field: str = "VmRSS") -> int:
    """The process's resident set (VmRSS), or its peak since the last reset (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the kernel (tcmalloc keeps them otherwise, and the
    process's resident set stays at its peak)."""
    libc = ctypes.CDLL(None)
    if hasattr(libc, "MallocExtension_ReleaseFreeMemory"):  # tcmalloc, when preloaded
        libc.MallocExtension_ReleaseFreeMemory()
    if hasattr(libc, "malloc_trim"):  # glibc
        libc.malloc_trim(0)
