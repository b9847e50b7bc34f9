"""bf16 inference: weights cast, outputs fp32 and close to the fp32 model; bad values refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import llmos
from llmos.errors import LlmosError


def test_bf16_encoder_embeds_close_to_fp32(tiny_encoder: Path) -> None:
    fp32 = llmos.load(tiny_encoder)
    bf16 = llmos.load(tiny_encoder, precision="bf16")
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    texts = ["今天我们学习经济。", "老师介绍历史！", "the market grew", "。"]
    a, b = fp32.embed(texts), bf16.embed(texts)
    assert b.dtype == np.float32
    assert (a * b).sum(1).min() > 0.99


def test_bad_precision_is_refused(tiny_encoder: Path) -> None:
    with pytest.raises(LlmosError, match="fp32, bf16 or auto"):
        llmos.load(tiny_encoder, precision="fp16")


def test_auto_is_bf16_for_encoders_where_the_cpu_computes_it(
    tiny_encoder: Path, tiny_gpt: Path
) -> None:
    """``auto`` casts an encoder only on a CPU with native bf16, and leaves a GPT in fp32
    where an explicit bf16 is refused."""
    from llmos.models.precision import bf16_supported

    want = torch.bfloat16 if bf16_supported("cpu") else torch.float32
    assert next(llmos.load(tiny_encoder, precision="auto").model.parameters()).dtype == want
    gpt = llmos.load(tiny_gpt, precision="auto")
    assert next(gpt.model.parameters()).dtype == torch.float32
    with pytest.raises(LlmosError, match="covers fp32 encoder"):
        llmos.load(tiny_gpt, precision="bf16")
