"""What every pipeline shares: a loaded model, its checkpoint and tokenizer, and a clear error
for what it cannot do.

Text in, results out: each pipeline does preprocess -> forward -> postprocess, so the model
never sees text. There is one pipeline per kind of model, as in Hugging Face's
``pipelines/<task>.py``:

- :class:`~llmos.inference.encoder.EncoderPipeline` (BERT-style encoders and their ONNX
  exports): ``classify``, ``tag``, ``fill_mask``, ``embed``;
- :class:`~llmos.inference.generator.GeneratorPipeline` (GPTs): ``generate``, ``stream``;
- :class:`~llmos.inference.image.ImagePipeline` (CLIP image-text models, which have no
  tokenizer of their own and so no :class:`Pipeline` base): ``embed_images``,
  ``embed_texts``, ``classify_images``, ``describe_images``, ``search_images``.

:func:`llmos.load` (:func:`~llmos.inference.load.load_pipeline`) picks one from the
checkpoint. A method of the other kind is not there at all; asking for it raises
:class:`UnsupportedTaskError`, which names what the model can do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from llmos.checkpoint.io import Checkpoint
from llmos.checkpoint.task import TaskSpec
from llmos.errors import LlmosError
from llmos.text.tokenizer import special_ids

# Every public inference method, of either kind.
OPERATIONS = ("classify", "tag", "fill_mask", "embed", "correct", "generate", "stream")


class UnsupportedTaskError(LlmosError, AttributeError):
    """A pipeline was asked for an operation its model cannot do (a GPT's ``classify``).

    An ``AttributeError`` too, so ``hasattr(pipe, "classify")`` is False for a GPT."""


class Pipeline:
    """A checkpoint ready for inference: the base of the per-kind pipelines.

    Attributes:
        model: the model in eval mode (an ``OnnxModel`` for ONNX exports).
        checkpoint: the checkpoint it was loaded from.
        tokenizer: the checkpoint's tokenizer.
    """

    operations: ClassVar[tuple[str, ...]] = ()
    needs: ClassVar[str] = ""  # what the other kind's operations need, for the error message

    def __init__(self, model: torch.nn.Module, checkpoint: Checkpoint) -> None:
        self.model = model.eval()
        self.checkpoint = checkpoint
        self.tokenizer = checkpoint.tokenizer
        self.device = next(model.parameters()).device
        self._ids = special_ids(self.tokenizer)

    @property
    def config(self) -> Any:
        """The architecture (``BertConfig`` or ``GPTConfig``)."""
        return self.checkpoint.config

    @property
    def path(self) -> Path:
        return self.checkpoint.path

    @property
    def spec(self) -> TaskSpec:
        """What the model was trained to do (typed; see :mod:`llmos.checkpoint.task`)."""
        return self.checkpoint.task

    @property
    def task(self) -> dict[str, Any] | None:
        """The ``task.json`` dict (None for a pretrained model), for code that still reads
        plain dicts; new code matches on :attr:`spec`."""
        return self.checkpoint.task_json

    def describe(self) -> str:
        """``a classification model``, ``a pretrained GPT``, ... for messages."""
        kind = self.spec.kind
        if kind == "mlm":
            return "a pretrained BERT (fill-mask)"
        if kind == "generation":
            return "a pretrained GPT"
        return f"an {kind} model" if kind[0] in "aeiou" else f"a {kind} model"

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the instance and its class lack: an operation of the other
        # kind of model gets a message that says what this one can do.
        if name in OPERATIONS:
            can = ", ".join(type(self).operations)
            raise UnsupportedTaskError(
                f"this checkpoint is {self.describe()}: it can {can}; {name} needs "
                f"{type(self).needs}"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
