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
    with pytest.raises(LlmosError, match="fp32 or bf16"):
        llmos.load(tiny_encoder, precision="fp16")
