"""llmos: a language-model operating system.

Train, compress and serve transformer language models on a laptop CPU, and on GPUs when you
outgrow it. The Python API mirrors the CLI::

    import llmos
    m = llmos.load("runs/bert-zh/checkpoint")
    m.fill_mask("今天天气很[MASK]。", top_k=5)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmos.errors import LlmosError

if TYPE_CHECKING:
    from pathlib import Path

    from llmos.inference.pipeline import Pipeline

__version__ = "0.1.0"
__all__ = ["LlmosError", "__version__", "load"]


def load(
    path: str | Path, device: str = "cpu", precision: str = "fp32", compile: bool = False
) -> Pipeline:
    """Load any llmos checkpoint directory for inference.

    Args:
        path: a checkpoint directory (``config.json``, ``model.safetensors``, ``tokenizer.json``;
            or ``model.onnx`` for ONNX exports and ``onnx-int8`` quantized models).
        device: torch device string.
        precision: ``fp32``, or ``bf16`` for an encoder's weights in bfloat16.
        compile: ``torch.compile`` the encoder (each new batch shape compiles first).

    Returns:
        A :class:`~llmos.inference.pipeline.Pipeline` with ``fill_mask`` and the task methods.
    """
    # Imported here so that `import llmos` stays cheap (no torch at import time).
    from llmos.inference.pipeline import Pipeline

    return Pipeline.from_checkpoint(path, device=device, precision=precision, compile=compile)
