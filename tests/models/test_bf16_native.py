"""Which precision a model runs in: ``auto`` follows the CPU's flags (read from a file here,
so both answers are checked on any machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos.models.precision import bf16_supported, resolve_precision

AVX2 = "flags\t\t: fpu sse2 avx avx2 fma bmi2\n"
AVX512_BF16 = "flags\t\t: fpu sse2 avx avx2 avx512f avx512_vnni avx512_bf16\n"
AMX = "flags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n"


@pytest.mark.parametrize(("flags", "native"), [(AVX2, False), (AVX512_BF16, True), (AMX, True)])
def test_bf16_is_native_where_the_cpu_flags_say(tmp_path: Path, flags: str, native: bool) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\n" + flags)
    assert bf16_supported("cpu", info) is native
    assert bf16_supported("cpu", tmp_path / "missing") is False


def test_resolve_precision() -> None:
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu") == ("bf16" if bf16_supported("cpu") else "fp32")
    with pytest.raises(ValueError, match="fp32, bf16 or auto"):
        resolve_precision("fp16", "cpu")
