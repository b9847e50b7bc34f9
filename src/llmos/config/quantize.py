"""``llmos compress quantize``: which checkpoint, which int8 method, and the data to measure on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class QuantizeConfig:
    """Quantize an encoder checkpoint to int8 and measure it against the original.

    The fields are the ``llmos compress quantize`` flags; the recipe
    (``quantize_checkpoint``) takes them as keyword arguments and checks them.

    Attributes:
        checkpoint: fp32 encoder checkpoint (classifier, tagger, embedding).
        out_dir: quantized checkpoint directory to write.
        method: int8-dynamic: PyTorch int8 kernels; onnx-int8: ONNX Runtime.
        data: dataset (name or directory with valid/test splits; default: the one in
            task.json) or a text file, one text per line, to calibrate and measure on.
        label_key: label column of the dataset (default: task.json's, else 'label').
        smooth: SmoothQuant: move activation outliers into the weights (0.8 suits MiniLM;
            default: off).
        keep_fp32: keep the N most sensitive linear layers in fp32.
        calibration: calibration texts.
        limit: most test texts to measure on.
    """

    checkpoint: str
    out_dir: str
    method: Literal["int8-dynamic", "onnx-int8"] = "int8-dynamic"
    data: str | None = None
    label_key: str | None = None
    smooth: float | None = None
    keep_fp32: int = 0
    calibration: int = 256
    limit: int = 2000
