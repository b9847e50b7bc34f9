"""The machine a bench runs on, as its output states it: the CPU's model name and the widest
vector extension (AVX-512 or AVX2), which decides fp32 speed on these CPUs."""

from __future__ import annotations

import platform
from pathlib import Path


def machine() -> str:
    """``"AMD EPYC 7B13 (AVX2)"``: the CPU's model name and its vector extensions."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next(
        (ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")),
        platform.processor(),
    )
    isa = "AVX-512" if "avx512f" in text else "AVX2" if "avx2" in text else "no AVX2"
    return f"{name} ({isa})"
