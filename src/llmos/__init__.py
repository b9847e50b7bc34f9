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

    from llmos.inference.encoder import EncoderPipeline
    from llmos.inference.generator import GeneratorPipeline

__version__ = "0.1.0"
__all__ = ["LlmosError", "__version__", "load"]


def load(
    path: str | Path, device: str = "cpu", precision: str = "fp32", compile: bool = False
) -> EncoderPipeline | GeneratorPipeline:
    """Load any llmos checkpoint directory for inference, as the pipeline of its kind.

    Args:
        path: a checkpoint directory (``config.json``, ``model.safetensors``, ``tokenizer.json``;
            or ``model.onnx`` for ONNX exports and ``onnx-int8`` quantized models).
        device: torch device string.
        precision: ``fp32``, or ``bf16`` for an encoder's weights in bfloat16.
        compile: ``torch.compile`` the encoder (each new batch shape compiles first).

    Returns:
        An :class:`~llmos.inference.encoder.EncoderPipeline` (``classify``, ``tag``,
        ``fill_mask``, ``embed``) for an encoder, a
        :class:`~llmos.inference.generator.GeneratorPipeline` (``generate``, ``stream``) for a
        GPT. The other kind's methods raise
        :class:`~llmos.inference.pipeline.UnsupportedTaskError` naming what the model can do.
    """
    # Imported here so that `import llmos` stays cheap (no torch at import time).
    from llmos.inference.load import load_pipeline

    return load_pipeline(path, device=device, precision=precision, compile=compile)
