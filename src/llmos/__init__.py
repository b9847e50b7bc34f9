"""llmos: a language-model operating system.

Train, compress and serve transformer language models on a laptop CPU, and on GPUs when you
outgrow it. The Python API mirrors the CLI::

    import llmos
    m = llmos.load("runs/bert-zh/checkpoint")
    m.fill_mask("今天天气很[MASK]。", top_k=5)
    clf = llmos.zero_shot("runs/e5-zh", {"pos": "正面评价", "neg": "负面评价"})
    clf.classify(["质量很好"])
    clip = llmos.load("runs/clip-emoji/checkpoint")       # images and texts in one space
    clip.classify_images(["cat.png"], {"cat": ["猫", "a cat"], "dog": ["狗", "a dog"]})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any

from llmos.errors import LlmosError

if TYPE_CHECKING:
    from pathlib import Path

    from llmos.inference.encoder import EncoderPipeline
    from llmos.inference.generator import GeneratorPipeline
    from llmos.inference.image import ImagePipeline
    from llmos.inference.zeroshot import ZeroShotClassifier

__version__ = "0.1.0"
__all__ = ["LlmosError", "__version__", "load", "zero_shot"]


def load(
    path: str | Path,
    device: str = "cpu",
    precision: str = "fp32",
    compile: bool = False,
    *,
    text_encoder: str | Path | None = None,
) -> EncoderPipeline | GeneratorPipeline | ImagePipeline:
    """Load any llmos checkpoint directory for inference, as the pipeline of its kind.

    Args:
        path: a checkpoint directory (``config.json``, ``model.safetensors``, ``tokenizer.json``;
            or ``model.onnx`` for ONNX exports and ``onnx-int8`` quantized models; a CLIP
            checkpoint has no tokenizer: its ``config.json`` names its text tower).
        device: torch device string.
        precision: ``fp32``, ``bf16`` for an encoder's weights in bfloat16, or ``auto``
            (bf16 where the device computes it natively, fp32 elsewhere).
        compile: ``torch.compile`` the encoder (each new batch shape compiles first).
        text_encoder: a CLIP checkpoint's text tower, in place of the one its
            ``config.json`` names (the same weights: their digest is checked when the
            checkpoint recorded it).

    Returns:
        An :class:`~llmos.inference.encoder.EncoderPipeline` (``classify``, ``tag``,
        ``fill_mask``, ``embed``) for an encoder, a
        :class:`~llmos.inference.generator.GeneratorPipeline` (``generate``, ``stream``) for a
        GPT, an :class:`~llmos.inference.image.ImagePipeline` (``embed_images``,
        ``embed_texts``, ``classify_images``, ``describe_images``, ``search_images``) for a
        CLIP checkpoint. The other kinds' methods raise
        :class:`~llmos.inference.pipeline.UnsupportedTaskError` naming what the model can do.
    """
    # Imported here so that `import llmos` stays cheap (no torch at import time).
    from llmos.inference.load import load_pipeline

    return load_pipeline(
        path, device=device, precision=precision, compile=compile, text_encoder=text_encoder
    )


def zero_shot(
    model: str | Path | EncoderPipeline | GeneratorPipeline,
    labels: Mapping[str, str | Sequence[str]],
    examples: Mapping[str, Sequence[str]] | None = None,
    *,
    method: str | None = None,
    device: str = "cpu",
    **options: Any,
) -> ZeroShotClassifier:
    """A classifier from label descriptions (zero-shot) or a few examples per label
    (few-shot), over a sentence encoder's frozen vectors: no training run.

    Args:
        model: an encoder checkpoint directory (multilingual-e5: ``runs/e5-zh``), a GPT
            checkpoint directory for ``instruct``, or a pipeline loaded with :func:`load`.
        labels: each label's description(s): ``{"pos": "a positive review", ...}``; for
            ``cloze``, its verbalizer(s): ``{"pos": "好", "neg": "差"}``; for ``instruct``,
            its answer(s): ``{"pos": "正面", "neg": "负面"}``.
        examples: each label's example texts (few-shot).
        method: ``similarity`` (descriptions only), ``centroid``, ``logreg``, ``cloze``
            (a masked LM's head: ``patterns=["{text}。总之很[MASK]。"]``) or ``instruct`` (an
            instruction-tuned GPT: ``instruction="判断下面这条评论的情感是正面还是负面。"``);
            default ``centroid`` with examples, else ``similarity``.
        device: torch device, when ``model`` is a path.
        **options: ``temperature``, ``C``, ``batch_size``, ``unlabelled``, ``patterns``,
            ``instruction`` of
            :class:`~llmos.inference.zeroshot.ZeroShotClassifier`.

    Returns:
        A :class:`~llmos.inference.zeroshot.ZeroShotClassifier`: ``classify(texts)`` gives
        ``[{"label", "score", "scores"}, ...]`` like a trained classifier.
    """
    from llmos.inference.zeroshot import ZeroShotClassifier

    pipe = load(model, device=device) if isinstance(model, str | PathLike) else model
    return ZeroShotClassifier(pipe, labels, examples, method=method, **options)
