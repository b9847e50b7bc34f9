"""Which floating-point precision a model runs in: fp32, bf16, or ``auto`` (bf16 where the
device computes it natively, fp32 elsewhere).

bf16 halves the bytes every matrix product reads and, on CPUs with AVX512-BF16 or AMX (and
CUDA GPUs with bf16), runs those products at up to twice the fp32 rate; elsewhere it is
emulated and slower, hence ``auto``.
"""

from __future__ import annotations

from pathlib import Path

import torch

PRECISIONS = ("fp32", "bf16", "auto")
CPUINFO = Path("/proc/cpuinfo")


def bf16_supported(device: torch.device | str, cpuinfo: Path = CPUINFO) -> bool:
    """True on CUDA with bf16 and on CPUs whose flags (``cpuinfo``) have AVX512-BF16 or AMX."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``fp32`` or ``bf16``: ``precision`` itself, or for ``auto`` bf16 where
    :func:`bf16_supported`. Raises ValueError for anything but :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be fp32, bf16 or auto, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision
