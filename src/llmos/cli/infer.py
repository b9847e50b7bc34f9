"""Using a model: ``evaluate``, ``calibrate``, ``predict``, ``classify-zero`` (texts, or
images with ``--image``), ``fill-mask`` and ``generate``. Embeddings and search are
:mod:`llmos.cli.vectors`.

``generate``'s decoding flags are generated from
:class:`~llmos.inference.generate.GenerationConfig`, so their defaults are the library's.
"""

from __future__ import annotations

import argparse
import json
import sys

from llmos.cli.flags import CommandParser, Flag, Subcommands, add_flags, values

# How GenerationConfig's fields read as `llmos generate` flags (the rest: --field-name).
GENERATION_FLAGS = {
    "top_k": Flag(help="0 = off"),
    "top_p": Flag(help="nucleus mass in (0, 1]; 1 = off"),
    "seed": Flag(help="makes sampling reproducible"),
    "num_beams": Flag(help="> 1: beam search"),
    "stop": Flag(help="stop string (repeatable); cut before it", metavar="TEXT", append=True),
}


def add_evaluate(sub: Subcommands) -> None:
    """``llmos evaluate``."""
    ev = sub.add_parser(
        "evaluate",
        help="score a model: classes (accuracy, macro-F1, confusion matrix), spans (P/R/F1 "
        "per type), or a GPT (perplexity on text; answers to JSONL instructions)",
    )
    ev.add_argument("checkpoint", help="fine-tuned or GPT checkpoint directory")
    ev.add_argument(
        "--data",
        required=True,
        help="labelled file (.tsv/.csv/.jsonl; taggers: also .conll or word/POS .txt); GPT: a "
        "corpus .txt or instruction .jsonl",
    )
    ev.add_argument("--label-key", default="label", help="label column/key (intent files: intent)")
    ev.add_argument("--skip-bad-rows", action="store_true", help="skip and count malformed rows")
    ev.add_argument(
        "--spans-key", help="JSONL key of a tagger's gold spans (default: as in training)"
    )
    ev.add_argument(
        "--out-dir", help="where report.json and confusion.png go (default: beside --data)"
    )
    ev.set_defaults(func=_evaluate)


def add_calibrate(sub: Subcommands) -> None:
    """``llmos calibrate``."""
    ca = sub.add_parser(
        "calibrate",
        help="fit a classifier's temperature on held-out data so that its probabilities are "
        "honest (recorded in task.json; labels unchanged)",
    )
    ca.add_argument("checkpoint", help="classifier or multi-task checkpoint directory")
    ca.add_argument(
        "--data",
        help="labelled .tsv/.csv/.jsonl (default: the valid split of the dataset it was "
        "trained on)",
    )
    ca.add_argument("--label-key", help="label column/key (default: as in training)")
    ca.add_argument(
        "--head",
        action="append",
        dest="heads",
        metavar="NAME",
        help="a multi-task model's classification head (repeatable; default: all of them)",
    )
    ca.add_argument(
        "--out-dir", help="where the reliability diagrams go (default: beside the checkpoint)"
    )
    ca.add_argument("--dry-run", action="store_true", help="report the fit, write nothing")
    ca.set_defaults(func=_calibrate)


def add_predict(sub: Subcommands) -> None:
    """``llmos predict``."""
    pr = sub.add_parser(
        "predict", help="label texts: JSONL with label and scores, or tagged spans with offsets"
    )
    pr.add_argument("checkpoint", help="fine-tuned checkpoint directory")
    pr.add_argument(
        "--input",
        required=True,
        help="text file (one text a line), .tsv/.csv/.jsonl, or - for stdin",
    )
    pr.add_argument("--output", default="-", help="JSONL file, or - for stdout")
    pr.add_argument("--batch-size", type=int, default=32)
    pr.defer(_predict_arguments)  # the choices live next to torch
    pr.set_defaults(func=_predict)


def _predict_arguments(pr: CommandParser) -> None:
    from llmos.inference.classify import LONG_INPUTS

    pr.add_argument(
        "--long-inputs",
        choices=LONG_INPUTS,
        default=LONG_INPUTS[0],
        help="classifiers: a text longer than the model's max_length is read in overlapping "
        "windows whose logits are averaged (window, the default) or cut off (truncate); "
        "sentence pairs are always truncated",
    )


def add_classify_zero(sub: Subcommands) -> None:
    """``llmos classify-zero``."""
    cz = sub.add_parser(
        "classify-zero",
        help="classify texts with labels from descriptions (zero-shot) or a few examples each "
        "(few-shot), over an encoder's sentence vectors, with cloze prompts on a masked LM, or "
        "by asking an instruction-tuned GPT: no training",
        description="Labels come from --labels NAME=DESCRIPTION (repeat a name for several "
        "descriptions) and/or --examples FILE. similarity: nearest label description "
        "(E5: texts as queries, descriptions as passages); centroid: nearest mean of a label's "
        "examples; logreg: logistic regression on the examples' vectors (scikit-learn). A "
        "label without examples goes by its descriptions. cloze: each text goes into --pattern "
        "('{text}。总之很[MASK]。'), and --labels NAME=WORD gives each label a verbalizer, a "
        "word of one token that the masked-LM head scores at [MASK] (a checkpoint with an MLM "
        "head: runs/e5-zh-mlm/checkpoint). instruct: each text is the input of --instruction "
        "('判断下面这条评论的情感是正面还是负面。') in an instruction-tuned GPT's prompt, and "
        "--labels NAME=ANSWER gives each label an answer ('pos=正面') whose log-probability "
        "the GPT scores (runs/instruct-zh/checkpoint). --image FILE ...: classify images "
        "with a CLIP checkpoint (runs/clip-emoji/checkpoint) by label descriptions in any "
        "language its text tower reads. Put the TEXTs before --labels, whose values run up to "
        "the next option.",
    )
    cz.add_argument(
        "checkpoint",
        help="checkpoint directory: an encoder (e.g. runs/e5-zh), a GPT for --method instruct",
    )
    cz.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify (or --input)")
    cz.add_argument(
        "--labels",
        nargs="+",
        default=[],
        metavar="NAME=TEXT",
        help='label descriptions, e.g. "positive=a positive review" (repeat a NAME for more); a '
        "label of --examples needs none; cloze: NAME=WORD, instruct: NAME=ANSWER",
    )
    cz.add_argument("--examples", help='labelled examples: JSONL {"text", "label"} (or .tsv/.csv)')
    cz.add_argument(
        "--label-key", default="label", help="label key of --examples (intents: intent)"
    )
    cz.add_argument(
        "--unlabelled",
        help="texts like the ones to classify, without labels (a file as --input): each "
        "label's mean cosine (similarity, centroid) or log-probability (cloze, instruct) over "
        "them is removed first",
    )
    cz.add_argument("--skip-bad-rows", action="store_true", help="skip malformed example rows")
    cz.add_argument(
        "--input", help="texts: a text file (one a line), .tsv/.csv/.jsonl, or - for stdin"
    )
    cz.add_argument("--output", default="-", help="JSONL file (default: print to stdout)")
    cz.add_argument("--json", action="store_true", help="print one JSON object per text")
    cz.add_argument(
        "--pattern",
        action="append",
        default=[],
        metavar="TEXT",
        help="cloze pattern with {text} and [MASK] once each, e.g. '{text} All in all, it was "
        "[MASK].' (repeat: the patterns' scores are averaged)",
    )
    cz.add_argument(
        "--instruction",
        metavar="TEXT",
        help="instruct: the question asked of each text (the text is its input), e.g. "
        "'判断下面这条评论的情感是正面还是负面。'",
    )
    cz.add_argument(
        "--image",
        nargs="+",
        default=[],
        metavar="FILE",
        help="classify these images instead (a CLIP checkpoint): files, directories or globs",
    )
    cz.add_argument("--text-encoder", help="with --image: the CLIP checkpoint's text tower")
    cz.add_argument("--batch-size", type=int, default=32)
    cz.defer(_classify_zero_arguments)  # the methods and the temperature live in inference
    cz.set_defaults(func=_classify_zero)


def _classify_zero_arguments(cz: CommandParser) -> None:
    from llmos.inference.zeroshot import CLOZE_TEMPERATURE, METHODS, TEMPERATURE

    cz.add_argument(
        "--method", choices=METHODS, help="default: centroid with --examples, else similarity"
    )
    cz.add_argument(
        "--temperature",
        type=float,
        help=f"softmax temperature over cosines (similarity, centroid; default {TEMPERATURE}) "
        f"or log-probabilities (cloze, instruct; default {CLOZE_TEMPERATURE:g}): it sets how "
        "sure the scores are, not which label wins",
    )


def add_fill_mask(sub: Subcommands) -> None:
    """``llmos fill-mask``."""
    fm = sub.add_parser("fill-mask", help="predict [MASK] tokens with a pretrained encoder")
    fm.add_argument("checkpoint", help="checkpoint directory")
    fm.add_argument("texts", nargs="+", metavar="TEXT", help="text with one or more [MASK]")
    fm.add_argument("--top-k", type=int, default=5)
    fm.add_argument("--json", action="store_true", help="one JSON object per line")
    fm.set_defaults(func=_fill_mask)


def add_generate(sub: Subcommands) -> None:
    """``llmos generate``: its flags are added when it runs (their defaults import torch)."""
    gen = sub.add_parser(
        "generate",
        help="continue text (or answer instructions) with a GPT checkpoint, streaming",
        description="Greedy, sampled or beam-search generation. One --prompt streams its text "
        "to the terminal as it decodes; --input FILE writes JSONL. Prompts longer than the "
        "context window minus --max-new-tokens are cut from the left, with a warning.",
    )
    gen.defer(_generate_arguments)
    gen.set_defaults(func=_generate)


def _generate_arguments(gen: CommandParser) -> None:
    from llmos.inference.generate import GenerationConfig

    gen.add_argument("checkpoint", help="GPT checkpoint directory")
    src = gen.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the text to continue (an instruction, for tuned models)")
    src.add_argument(
        "--input", help='prompts: a text file (one a line), JSONL {"prompt": ...}, or - for stdin'
    )
    gen.add_argument("--output", default="-", help="with --input: JSONL file, or - for stdout")
    add_flags(gen, GenerationConfig, GENERATION_FLAGS)
    gen.add_argument(
        "--raw", action="store_true", help="instruction-tuned models: do not apply the template"
    )
    gen.add_argument("--no-stream", action="store_true", help="print the text once, at the end")
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    gen.add_argument("--batch-size", type=int, default=8, help="with --input")


def _evaluate(args: argparse.Namespace) -> int:
    from llmos.recipes.evaluate import evaluate_file

    report = evaluate_file(
        args.checkpoint,
        args.data,
        label_key=args.label_key,
        spans_key=args.spans_key,
        out_dir=args.out_dir,
        skip_bad_rows=args.skip_bad_rows,
    )
    print(report.format_report())
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from llmos.train.calibration import calibrate_checkpoint, format_calibration

    results = calibrate_checkpoint(
        args.checkpoint,
        data=args.data,
        label_key=args.label_key,
        heads=args.heads,
        out_dir=args.out_dir,
        write=not args.dry_run,
    )
    print(format_calibration(results))
    print(
        "(dry run: task.json unchanged)"
        if args.dry_run
        else f"written: {args.checkpoint}/task.json"
    )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from llmos.recipes.predict import predict_file

    n = predict_file(
        args.checkpoint,
        args.input,
        args.output,
        batch_size=args.batch_size,
        long_inputs=args.long_inputs,
    )
    if args.output != "-":
        print(f"{n} predictions written to {args.output}")
    return 0


def _classify_zero(args: argparse.Namespace) -> int:
    from llmos.data.textfiles import write_lines
    from llmos.recipes.classify_zero import classify_zero

    results = classify_zero(
        args.checkpoint,
        args.labels,
        args.texts,
        input_path=args.input,
        examples_path=args.examples,
        unlabelled_path=args.unlabelled,
        label_key=args.label_key,
        skip_bad_rows=args.skip_bad_rows,
        method=args.method,
        temperature=args.temperature,
        batch_size=args.batch_size,
        patterns=args.pattern,
        instruction=args.instruction,
        images=args.image,
        text_encoder=args.text_encoder,
    )
    if args.json or args.output != "-":
        n = write_lines([json.dumps(r, ensure_ascii=False) for r in results], args.output)
        if args.output != "-":
            print(f"{n} predictions written to {args.output}")
        return 0
    for r in results:
        print(f"{r['score']:.3f}  {r['label']:<12} {r.get('text', r.get('image'))}")
    return 0


def _fill_mask(args: argparse.Namespace) -> int:
    import llmos

    model = llmos.load(args.checkpoint)
    for text in args.texts:
        res = model.fill_mask(text, top_k=args.top_k)
        if args.json:
            print(json.dumps({"text": text, "predictions": res}, ensure_ascii=False))
            continue
        print(text)
        rows = res if isinstance(res[0], list) else [res]
        for i, row in enumerate(rows):
            if len(rows) > 1:
                print(f"  [MASK] #{i + 1}")
            for r in row:
                print(f"  {r['score']:.3f}  {r['token']:<8} {r['sequence']}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from llmos.inference.generate import GenerationConfig

    # Every GenerationConfig field, as given or its default, as keyword arguments.
    options = values(GenerationConfig, args, GENERATION_FLAGS)
    if args.input is not None:
        from llmos.recipes.predict import generate_file

        n = generate_file(
            args.checkpoint,
            args.input,
            args.output,
            batch_size=args.batch_size,
            raw=args.raw,
            **options,
        )
        if args.output != "-":
            print(f"{n} generations written to {args.output}")
        return 0
    import llmos

    model = llmos.load(args.checkpoint)
    several = options["num_beams"] > 1 or options["num_return_sequences"] > 1
    if args.json or several or args.no_stream:
        out = model.generate(args.prompt, raw=args.raw, **options)
        if args.json:
            key = "generations" if isinstance(out, list) else "generation"
            print(json.dumps({"prompt": args.prompt, key: out}, ensure_ascii=False))
        else:
            for i, text in enumerate(out if isinstance(out, list) else [out]):
                print(f"--- {i + 1} ---\n{text}" if isinstance(out, list) else text)
        return 0
    for piece in model.stream(args.prompt, raw=args.raw, **options):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
