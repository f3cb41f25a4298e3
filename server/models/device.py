"""Where and how the model computes: the device, torch's CPU threads, and the encoder's precision.

Each is chosen once at start-up from a setting (SAM_DEVICE, TORCH_THREADS,
PRECISION) and what this machine has; what stops the start is one sentence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

import torch

from server.config import PRECISIONS


def resolve_device(setting: str) -> str:
    """`auto` means CUDA when it is available, else the CPU."""
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def available_cores() -> int:
    """The CPU cores this process may use: its affinity, capped by a cgroup CPU quota (docker --cpus)."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit to read
    return cores


def set_torch_threads(setting: int) -> int:
    """Give torch TORCH_THREADS threads (0: the cores this process may use); returns the count."""
    threads = setting or available_cores()
    torch.set_num_threads(threads)
    return threads


class DeviceError(Exception):
    """SAM_DEVICE names a device this machine does not have; the message is one sentence for a person."""


def check_device(setting: str) -> None:
    """Fail fast, before anything starts, when SAM_DEVICE cannot be used here."""
    if setting == "auto":
        return
    try:
        device = torch.device(setting)
    except RuntimeError:
        raise DeviceError(f"SAM_DEVICE={setting!r} is not a device name: set it to auto, cpu, cuda or cuda:N.") from None
    if device.type != "cuda":
        return
    if not torch.cuda.is_available():
        raise DeviceError(
            f"SAM_DEVICE={setting} but torch {torch.__version__} sees no CUDA GPU: check that nvidia-smi lists one "
            f"(with a driver new enough for CUDA {torch.version.cuda}) and, in Docker, that the container runs with "
            "--gpus all; or set SAM_DEVICE=auto to run on the CPU."
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(
            f"SAM_DEVICE={setting} but this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0: "
            "set SAM_DEVICE=cuda or an index that exists."
        )


@dataclasses.dataclass(frozen=True)
class Precision:
    """The encoder's arithmetic: float32, or bfloat16 autocast; `reason` says why, for the start-up log."""

    dtype: torch.dtype
    reason: str

    @property
    def name(self) -> str:
        return "bf16" if self.dtype == torch.bfloat16 else "fp32"

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo: AVX-512 BF16 (Cooper Lake, Zen 4 on), AMX (Sapphire Rapids on)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags, as Linux lists them (empty where there is no /proc/cpuinfo)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def resolve_precision(setting: str, device: torch.device, flags: set[str] | None = None) -> Precision:
    """PRECISION for `device`: auto is bf16 where the device does bf16 natively, fp32 elsewhere."""
    if setting not in PRECISIONS:
        raise ValueError(f"PRECISION is one of {PRECISIONS}, not {setting!r}")
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
        hardware = f"{torch.cuda.get_device_name(device)} {'supports' if native else 'lacks'} bfloat16"
    else:
        found = sorted((cpu_flags() if flags is None else flags) & set(NATIVE_BF16_FLAGS))
        native = bool(found)
        hardware = f"the CPU has {' and '.join(found)}" if found else "the CPU has no native bfloat16 (avx512_bf16 or amx_bf16)"
    if setting == "fp32":
        return Precision(torch.float32, "PRECISION=fp32")
    if setting == "bf16":
        slow = "" if native else ", emulated, so slower than fp32"
        return Precision(torch.bfloat16, f"PRECISION=bf16 ({hardware}{slow})")
    return Precision(torch.bfloat16 if native else torch.float32, f"PRECISION=auto and {hardware}")
