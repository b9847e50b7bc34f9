"""Changing a model's form: ``convert`` (Hugging Face <-> llmos), ``export onnx`` and ``compress
quantize | prune | distill | trim-vocab``.

The flags of ``quantize``, ``prune`` and ``trim-vocab`` are generated from
:class:`~llmos.config.quantize.QuantizeConfig`, :class:`~llmos.config.prune.PruneConfig` and
:class:`~llmos.config.trim_vocab.TrimVocabConfig`;
``distill`` takes a YAML config plus dotted overrides, as training does.
"""

from __future__ import annotations

import argparse
import json

from llmos.cli.flags import Flag, Subcommands, add_flags, build
from llmos.config.prune import PruneConfig
from llmos.config.quantize import QuantizeConfig
from llmos.config.trim_vocab import TrimVocabConfig

# How the config fields read as flags where the name or placeholder differs from the field's.
QUANTIZE_FLAGS = {
    "out_dir": Flag("--out"),
    "smooth": Flag(metavar="ALPHA"),
    "keep_fp32": Flag(metavar="N"),
}
PRUNE_FLAGS = {
    "out_dir": Flag("--out"),
    "num_threads": Flag("--threads"),
    "progress": Flag("--quiet", help="no progress bar", negate=True),
}
TRIM_VOCAB_FLAGS = {
    "out_dir": Flag("--out"),
    "corpus": Flag(metavar="NAMES"),
    "data": Flag(metavar="DATASET", append=True),
    "keep_top": Flag(metavar="N"),
    "cjk_characters": Flag(
        "--no-cjk-characters",
        help="do not also keep the single-character CJK pieces that taggers fine-tuned from a "
        "Unigram checkpoint use",
        negate=True,
    ),
    "progress": Flag("--quiet", help="no progress bar", negate=True),
}


def add_convert(sub: Subcommands) -> None:
    """``llmos convert``."""
    cv = sub.add_parser(
        "convert",
        help="Hugging Face model directory <-> llmos checkpoint (BERT, RoBERTa, GPT-2, XLNet)",
        description="Import a Hugging Face model directory (config.json, model.safetensors or "
        "pytorch_model.bin, tokenizer) as an llmos checkpoint, or export an llmos checkpoint "
        "as a directory that transformers' AutoModel* and AutoTokenizer load.",
    )
    way = cv.add_mutually_exclusive_group(required=True)
    way.add_argument("--from-hf", metavar="DIR", help="Hugging Face model directory to import")
    way.add_argument("--to-hf", metavar="CHECKPOINT", help="llmos checkpoint to export")
    cv.add_argument("out", help="the directory to write")
    cv.set_defaults(func=_convert)


def add_export(sub: Subcommands) -> None:
    """``llmos export onnx``."""
    ex = sub.add_parser("export", help="export checkpoints").add_subparsers(
        dest="format", required=True
    )
    eo = ex.add_parser(
        "onnx",
        help="an encoder checkpoint (classifier, tagger, embedding) as ONNX with dynamic "
        "batch and sequence axes",
    )
    eo.add_argument("checkpoint", help="encoder checkpoint directory")
    eo.add_argument("out", help="directory to write (model.onnx, tokenizer.json, config)")
    eo.set_defaults(func=_export_onnx)


def add_compress(sub: Subcommands) -> None:
    """``llmos compress METHOD``: one group, a subcommand per compression method."""
    cp = sub.add_parser("compress", help="make a model smaller and faster").add_subparsers(
        dest="compress_command", required=True
    )
    cq = cp.add_parser(
        "quantize",
        help="int8 weights for an encoder checkpoint; reports size, speed and accuracy change",
    )
    add_flags(cq, QuantizeConfig, QUANTIZE_FLAGS)
    cq.set_defaults(func=_compress_quantize)

    pr = cp.add_parser(
        "prune",
        help="remove the least important attention heads (and FFN neurons) of a fine-tuned "
        "encoder, optionally fine-tune to recover",
        description="Head importance is the gradient-based score of Michel et al. (2019) on "
        "the task's training data; the lowest-scoring heads over all layers are physically "
        "removed. Writes OUT/checkpoint, OUT/report.json (accuracy before/after, sizes, "
        "measured speed-up) and OUT/head_importance.png.",
    )
    add_flags(pr, PruneConfig, PRUNE_FLAGS)
    pr.set_defaults(func=_compress_prune)

    di = cp.add_parser(
        "distill",
        help="train a smaller student on a teacher's logits (+ hidden states, attention)",
        description="Knowledge distillation through the shared trainer: soft-logit KL with a "
        "temperature, hard labels, optional TinyBERT hidden-state and attention MSE over a "
        "layer map; for classifiers and for masked-LM encoders. report.json compares teacher "
        "and student on the test split (quality, parameters, inference time).",
    )
    di.add_argument("--teacher", help="teacher checkpoint (overrides the config's teacher)")
    di.add_argument("--student", required=True, help="YAML config (configs/distill/*.yaml)")
    di.add_argument(
        "--resume", action="store_true", help="continue from the run's newest checkpoint"
    )
    di.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. student.num_layers=2 alpha=0.9"
    )
    di.set_defaults(func=_compress_distill)

    tv = cp.add_parser(
        "trim-vocab",
        help="keep only the vocabulary pieces some corpora and datasets use (and their "
        "embedding rows); reports sizes and what became <unk>",
        description="Counts the pieces the checkpoint's tokenizer (Unigram or WordPiece) "
        "produces on the counted splits, keeps those (or the N most frequent) plus the special "
        "tokens in their original order, and writes an ordinary checkpoint whose outputs on "
        "covered texts are bit-identical to the original's. OUT/trim_vocab.json reports sizes "
        "and, per split, the tokens that became <unk>.",
    )
    add_flags(tv, TrimVocabConfig, TRIM_VOCAB_FLAGS)
    tv.set_defaults(func=_compress_trim_vocab)


def _convert(args: argparse.Namespace) -> int:
    from llmos.recipes.convert import export_hf, import_hf

    if args.from_hf:
        path = import_hf(args.from_hf, args.out)
        print(f"llmos checkpoint written to {path}")
    else:
        path = export_hf(args.to_hf, args.out)
        print(f"Hugging Face model directory written to {path}")
    return 0


def _export_onnx(args: argparse.Namespace) -> int:
    from llmos.inference.onnx_export import export_onnx

    out = export_onnx(args.checkpoint, args.out)
    print(f"ONNX model written to {out / 'model.onnx'}")
    return 0


def _compress_quantize(args: argparse.Namespace) -> int:
    from llmos.recipes.quantize import quantize_checkpoint

    cfg = build(QuantizeConfig, args, QUANTIZE_FLAGS)
    report = quantize_checkpoint(
        cfg.checkpoint,
        cfg.out_dir,
        method=cfg.method,
        data=cfg.data,
        label_key=cfg.label_key,
        smooth=cfg.smooth,
        keep_fp32=cfg.keep_fp32,
        calibration=cfg.calibration,
        limit=cfg.limit,
    )
    print(report.format_report())
    return 0


def _compress_prune(args: argparse.Namespace) -> int:
    from llmos.recipes.prune import prune

    result = prune(build(PruneConfig, args, PRUNE_FLAGS))
    print(result.format_report())
    return 0


def _compress_distill(args: argparse.Namespace) -> int:
    from llmos.config import DistillConfig, load_config
    from llmos.recipes.distill import distill

    # JSON quoting makes any path a YAML string; the flag wins over the config's teacher.
    teacher = [f"teacher={json.dumps(args.teacher)}"] if args.teacher else []
    cfg = load_config(DistillConfig, args.student, [*args.overrides, *teacher])
    result = distill(cfg, resume=args.resume)
    if not result.is_main:
        return 0
    print(result.format_report())
    return 0


def _compress_trim_vocab(args: argparse.Namespace) -> int:
    from llmos.recipes.trim_vocab import trim_vocab

    report = trim_vocab(build(TrimVocabConfig, args, TRIM_VOCAB_FLAGS))
    print(report.format_report())
    return 0
