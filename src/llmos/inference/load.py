"""From a checkpoint directory to a ready pipeline: the model class its task names, the weights
loaded strictly, precision and device applied, wrapped in the pipeline for its kind (HF's
``pipeline(task)``: one class per kind of model, chosen here, once). A CLIP checkpoint (no
tokenizer: its text tower is another checkpoint) goes to :mod:`llmos.inference.image`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from llmos.checkpoint.clip import is_clip
from llmos.checkpoint.io import (
    TASK_FILE,
    Checkpoint,
    load_state_dict_strict,
    read_checkpoint,
)
from llmos.checkpoint.task import (
    Classification,
    Generation,
    Instruct,
    MultiTask,
    Spelling,
    Tagging,
    TaskSpec,
    parse_task,
)
from llmos.config.model import GPTConfig, ModelConfig, XLNetConfig
from llmos.errors import CheckpointError, LlmosError
from llmos.inference.encoder import EncoderPipeline
from llmos.inference.generator import GeneratorPipeline
from llmos.inference.image import ImagePipeline, load_image_pipeline
from llmos.inference.onnx import OnnxModel
from llmos.inference.tag import tagger_model, tagging_crf
from llmos.models.bert import BertForPreTraining, BertForSequenceClassification
from llmos.models.csc import BertForSpellingCorrection
from llmos.models.gpt import GPT
from llmos.models.multitask import BertMultiTask, HeadShape
from llmos.models.precision import PRECISIONS, bf16_supported
from llmos.models.xlnet import XLNetForSequenceClassification, XLNetLMHeadModel


def build_model(
    config: ModelConfig, task: TaskSpec | dict[str, Any] | None, path: Path
) -> torch.nn.Module:
    """The model class (random weights) that a checkpoint's config and task name: pretraining
    heads for a pretrained or embedding encoder, a classifier or tagger head (with its CRF when
    ``task.json`` says ``crf: true``), a multi-task encoder with several of them, a spelling
    corrector, a GPT, an XLNet (its LM head, or a classifier or tagger).

    ``task`` may still be a ``task.json`` dict (validated here) or None (a pretrained model)
    for callers that have not moved to :class:`~llmos.checkpoint.io.Checkpoint`.
    """
    if isinstance(task, dict):
        task = parse_task(task, f"{path}/{TASK_FILE}")
    if isinstance(config, GPTConfig):
        if task is None or isinstance(task, Instruct | Generation):
            return GPT(config)
        raise CheckpointError(
            f"{path}/{TASK_FILE}: unsupported task {task.kind!r} for a GPT (supported: "
            "instruct, or none for a pretrained decoder)"
        )
    if isinstance(config, XLNetConfig):
        match task:
            case Classification(labels=labels, pooling="cls"):
                return XLNetForSequenceClassification(config, len(labels))
            case Classification(pooling=pooling):
                raise CheckpointError(
                    f"{path}/{TASK_FILE}: an XLNet classifier reads its sequence summary "
                    f"(pooling cls), not {pooling!r}"
                )
            case Tagging(labels=labels, scheme=scheme, crf=crf, char_tags=char_tags):
                return tagger_model(config, list(labels), scheme, crf, char_tags)
        return XLNetLMHeadModel(config)  # a pretrained XLNet (read_checkpoint allows no other)
    match task:
        case Classification(labels=labels, pooling=pooling):
            return BertForSequenceClassification(config, len(labels), pooling)
        case Tagging(labels=labels, scheme=scheme, crf=crf, char_tags=char_tags):
            return tagger_model(config, list(labels), scheme, crf, char_tags)
        case MultiTask(heads=heads):
            return BertMultiTask(config, {name: head_shape(h) for name, h in heads.items()})
        case Spelling(chars=chars):
            return BertForSpellingCorrection(config, chars)
        case Instruct() | Generation():
            raise CheckpointError(
                f"{path}/{TASK_FILE}: unsupported task {task.kind!r} for an encoder "
                "(supported: classification, tagging, multitask, embedding, spelling, or none)"
            )
    return BertForPreTraining(config)  # pretrained (MaskedLM, None) and embedding encoders


def head_shape(spec: Classification | Tagging) -> HeadShape:
    """A multi-task model's head as its spec describes it (a fresh CRF when it has one)."""
    if isinstance(spec, Tagging):
        crf = tagging_crf(list(spec.labels), spec.scheme) if spec.crf else None
        return HeadShape("tagging", len(spec.labels), crf, spec.char_tags)
    return HeadShape("classification", len(spec.labels))


def load_model(
    ckpt: Checkpoint, device: str = "cpu", precision: str = "fp32", compile: bool = False
) -> torch.nn.Module:
    """The checkpoint's model with its weights, in eval mode, on ``device`` (an
    :class:`OnnxModel` for an ONNX export).

    ``precision`` ``bf16`` casts an encoder's weights to bfloat16 (fast on CUDA and on CPUs
    with AVX512-BF16 or AMX; emulated, and slower, elsewhere); outputs are returned in fp32.
    ``auto`` is bf16 for an fp32 encoder on a device that computes bf16 natively
    (:func:`~llmos.models.precision.bf16_supported`) and fp32 for everything else.
    ``compile`` wraps an encoder in ``torch.compile(dynamic=True)``: each new batch shape
    compiles first (minutes on a CPU), so it pays off only for long-running servers.
    """
    if precision not in PRECISIONS:
        raise LlmosError(f"precision must be fp32, bf16 or auto, got {precision!r}")
    path, config = ckpt.path, ckpt.config
    quantized = getattr(config, "quantization", None)
    if precision == "auto":
        plain = ckpt.onnx is None and not ckpt.is_decoder and not quantized
        precision = "bf16" if plain and bf16_supported(device) else "fp32"
    if ckpt.onnx is not None:
        return OnnxModel(ckpt.onnx)
    weights = ckpt.weights()
    vocab = ckpt.tokenizer.get_vocab_size()
    if vocab != config.vocab_size:
        raise CheckpointError(
            f"{path}: tokenizer.json has {vocab} tokens but config.json says vocab_size "
            f"{config.vocab_size}"
        )
    model = build_model(config, ckpt.task, path)
    if quantized == "int8-dynamic":
        from llmos.compress.quantize import prepare_quantized

        prepare_quantized(model, weights)
    load_state_dict_strict(model, weights)
    if precision == "bf16":
        if ckpt.is_decoder or quantized:
            raise LlmosError(f"{path}: bf16 inference covers fp32 encoder checkpoints")
        model = model.to(torch.bfloat16)
    model = model.to(device)
    if compile:
        if ckpt.is_decoder:
            raise LlmosError(f"{path}: compile covers encoder checkpoints")
        model.forward = torch.compile(model.forward, dynamic=True)
    return model.eval()


def load_pipeline(
    path: str | Path | Checkpoint,
    device: str = "cpu",
    precision: str = "fp32",
    compile: bool = False,
    text_encoder: str | Path | None = None,
) -> EncoderPipeline | GeneratorPipeline | ImagePipeline:
    """A checkpoint directory (or an already read :class:`Checkpoint`) as the pipeline of its
    kind: :class:`EncoderPipeline` for BERT-style encoders (also ONNX exports),
    :class:`GeneratorPipeline` for GPTs, :class:`ImagePipeline` for CLIP image-text models.
    See :func:`llmos.load`; ``text_encoder`` overrides a CLIP checkpoint's text tower."""
    if not isinstance(path, Checkpoint) and is_clip(path):
        if compile:
            raise LlmosError(f"{path}: compile covers text checkpoints, not CLIP")
        return load_image_pipeline(
            path, device=device, precision=precision, text_encoder=text_encoder
        )
    if text_encoder is not None:
        raise LlmosError(f"{path}: text_encoder is for CLIP checkpoints, and this is not one")
    ckpt = path if isinstance(path, Checkpoint) else read_checkpoint(path)
    model = load_model(ckpt, device, precision, compile)
    if ckpt.is_decoder:
        return GeneratorPipeline(model, ckpt)
    return EncoderPipeline(model, ckpt)
