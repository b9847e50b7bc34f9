"""``llmos setfit`` and ``llmos pet``: a classifier from a few labelled examples per label;
``llmos self-train``: one from label descriptions and unlabelled texts alone.

    llmos setfit runs/e5-zh --examples few.jsonl --out runs/my-intents
    llmos pet runs/e5-zh-mlm/checkpoint --examples few.jsonl --unlabelled reviews.txt \
        --pattern '[MASK]评：{text}' --verbalizer pos=好 --verbalizer neg=差 --out runs/my-pet
    llmos self-train runs/e5-zh --labels pos=正面评价 neg=负面评价 --unlabelled reviews.txt \
        --out runs/my-zero
    llmos predict runs/my-intents --input texts.txt      # an ordinary classifier from then on

The examples file is what ``llmos classify-zero --examples`` reads (JSONL ``{"text",
"label"}``, or .tsv/.csv), and ``--labels`` is spelled as there. The training is
:func:`llmos.train.setfit.train_setfit`, :func:`llmos.train.pet.train_pet` and
:func:`llmos.train.selftrain.train_self_training`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llmos.cli.flags import Subcommands


def _add_examples(p: argparse.ArgumentParser) -> None:
    """The labelled examples and the checkpoint to write: the flags setfit and pet share."""
    p.add_argument(
        "--examples",
        required=True,
        help='labelled examples: JSONL {"text", "label"} (or .tsv/.csv)',
    )
    p.add_argument("--label-key", default="label", help="label key of --examples (intents: intent)")
    p.add_argument("--skip-bad-rows", action="store_true", help="skip malformed example rows")
    p.add_argument("--out", type=Path, required=True, help="the classifier checkpoint to write")


def _add_run(p: argparse.ArgumentParser, seed: int) -> None:
    """Seed, threads, and where a run keeps its steps to resume: shared by setfit and pet."""
    p.add_argument("--seed", type=int, default=seed)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument(
        "--run-dir", type=Path, help="keep the run's steps here (to --resume a cut-off run)"
    )
    p.add_argument("--resume", action="store_true", help="continue a cut-off run in --run-dir")


def _check_resume(args: argparse.Namespace) -> None:
    from llmos.errors import ConfigError

    if args.resume and args.run_dir is None:
        raise ConfigError("--resume needs --run-dir (where the cut-off run kept its steps)")


def add_setfit(sub: Subcommands) -> None:
    """``llmos setfit``."""
    from llmos.config.setfit import SetFitConfig

    d = SetFitConfig()
    sf = sub.add_parser(
        "setfit",
        help="train a classifier from a few examples per label: contrastive fine-tuning of a "
        "sentence encoder, then a logistic-regression head (SetFit)",
        description="Fine-tunes the encoder so that examples of one label embed close together "
        "and examples of different labels apart (every pair of each batch of --labels-per-batch "
        "labels x --per-label examples), then fits a logistic regression on the tuned vectors. "
        "Writes an ordinary classification checkpoint: llmos classify, llmos serve's "
        "/v1/classify, calibrate and quantize read it.",
    )
    sf.add_argument("encoder", help="sentence encoder checkpoint (e.g. runs/e5-zh)")
    _add_examples(sf)
    sf.add_argument("--steps", type=int, default=d.steps, help=f"training steps ({d.steps})")
    sf.add_argument(
        "--labels-per-batch",
        type=int,
        default=d.labels_per_batch,
        help=f"labels in a batch ({d.labels_per_batch})",
    )
    sf.add_argument(
        "--per-label",
        type=int,
        default=d.per_label,
        help=f"examples of each label in a batch ({d.per_label})",
    )
    sf.add_argument("--lr", type=float, default=d.lr, help=f"encoder learning rate ({d.lr:g})")
    _add_run(sf, d.seed)
    sf.set_defaults(func=_setfit)


def _setfit(args: argparse.Namespace) -> int:
    from llmos.config.setfit import SetFitConfig
    from llmos.recipes.classify_zero import read_examples
    from llmos.train.setfit import train_setfit

    _check_resume(args)
    examples = read_examples(args.examples, args.label_key, args.skip_bad_rows)
    cfg = SetFitConfig(
        steps=args.steps,
        labels_per_batch=args.labels_per_batch,
        per_label=args.per_label,
        lr=args.lr,
        seed=args.seed,
        num_threads=args.threads,
    )
    result = train_setfit(
        args.encoder, examples, args.out, cfg, resume=args.resume, run_dir=args.run_dir
    )
    counts = ", ".join(f"{label} {len(examples[label])}" for label in result.labels)
    print(f"classifier: {result.checkpoint}")
    print(f"examples: {counts}")
    print(f"accuracy on its own examples: {100 * result.train_accuracy:.1f} %")
    print(f"trained in {result.seconds:.1f} s")
    return 0


def add_pet(sub: Subcommands) -> None:
    """``llmos pet``."""
    from llmos.config.pet import MANY_LABELS, TWO_LABELS, PetConfig

    d, two, many = PetConfig(), TWO_LABELS, MANY_LABELS
    pe = sub.add_parser(
        "pet",
        help="train a classifier from a few examples per label with cloze patterns on a masked "
        "LM, an ensemble that labels unlabelled texts, and a classifier distilled from it "
        "(PET / iPET)",
        description="Fine-tunes the masked LM once per --pattern on the examples (each label "
        "scored by its --verbalizer word at [MASK]), lets the models label the --unlabelled "
        "texts (soft labels), and trains an ordinary classifier on them and the examples. "
        "--generations N runs iPET: N more rounds, each model retrained on the examples plus "
        "texts the other models labelled. Writes a classification checkpoint: llmos classify, "
        "llmos serve's /v1/classify, calibrate and quantize read it.",
    )
    pe.add_argument("mlm", help="checkpoint with a masked-LM head (runs/e5-zh-mlm/checkpoint)")
    _add_examples(pe)
    pe.add_argument(
        "--unlabelled",
        required=True,
        help="texts of the same kind without labels: a text file (one a line) or .tsv/.csv/.jsonl",
    )
    pe.add_argument(
        "--pattern",
        action="append",
        required=True,
        metavar="TEXT",
        help="pattern with {text} and [MASK] once each, e.g. '[MASK]评：{text}' (repeat: one "
        "model per pattern)",
    )
    pe.add_argument(
        "--verbalizer",
        action="append",
        metavar="LABEL=WORD",
        help="a label's verbalizer, a word of one token, e.g. pos=好 (repeat for every label; "
        "a label given twice gets both words). Without any, the words are chosen from the "
        "examples (those the masked LM expects at [MASK] for one label's examples more than "
        "for the others'), and printed",
    )
    pe.add_argument(
        "--verbalizers-per-label",
        type=int,
        default=d.verbalizers_per_label,
        metavar="N",
        help=f"words chosen per label when no --verbalizer is given ({d.verbalizers_per_label})",
    )
    pe.add_argument("--generations", type=int, default=d.generations, help="iPET rounds (0: PET)")
    pe.add_argument(
        "--steps",
        type=int,
        help=f"steps per model ({two['steps']} for two labels, {many['steps']} for more)",
    )
    pe.add_argument("--lr", type=float, default=d.lr, help=f"learning rate ({d.lr:g})")
    pe.add_argument(
        "--models-per-pattern",
        type=int,
        default=d.models_per_pattern,
        help=f"models per pattern, each its own seed ({d.models_per_pattern})",
    )
    pe.add_argument(
        "--max-unlabelled",
        type=int,
        default=d.max_unlabelled,
        help=f"at most this many unlabelled texts, a seeded sample ({d.max_unlabelled})",
    )
    pe.add_argument(
        "--distill-steps",
        type=int,
        help=f"steps of the final classifier ({two['distill_steps']} for two labels, "
        f"{many['distill_steps']} for more)",
    )
    pe.add_argument(
        "--distill-lr",
        type=float,
        help=f"learning rate of the final classifier ({two['distill_lr']:g} for two labels, "
        f"{many['distill_lr']:g} for more)",
    )
    pe.add_argument(
        "--mlm-weight",
        type=float,
        default=d.mlm_weight,
        metavar="A",
        help="PET's auxiliary language modelling: the loss is (1 - A) x the cloze loss + A x "
        "a masked-LM loss on a batch of --unlabelled texts each step (the paper's A: 1e-4; "
        f"default {d.mlm_weight:g}: off)",
    )
    _add_run(pe, d.seed)
    pe.set_defaults(func=_pet)


def _pet(args: argparse.Namespace) -> int:
    from llmos.config.pet import PetConfig
    from llmos.data.textfiles import read_inputs
    from llmos.errors import DataError
    from llmos.recipes.classify_zero import parse_labels, read_examples
    from llmos.train.pet import train_pet

    _check_resume(args)
    cfg = PetConfig(
        steps=args.steps,
        lr=args.lr,
        models_per_pattern=args.models_per_pattern,
        max_unlabelled=args.max_unlabelled,
        generations=args.generations,
        distill_steps=args.distill_steps,
        distill_lr=args.distill_lr,
        mlm_weight=args.mlm_weight,
        verbalizers_per_label=args.verbalizers_per_label,
        seed=args.seed,
        num_threads=args.threads,
    )
    verbalizers = parse_labels(args.verbalizer, "--verbalizer", None) if args.verbalizer else None
    examples = read_examples(args.examples, args.label_key, args.skip_bad_rows)
    pool, _ = read_inputs(args.unlabelled)
    if not pool:
        raise DataError(f"{args.unlabelled}: no texts")
    result = train_pet(
        args.mlm,
        examples,
        pool,
        args.pattern,
        verbalizers,
        args.out,
        cfg,
        resume=args.resume,
        run_dir=args.run_dir,
    )
    counts = ", ".join(f"{label} {len(examples[label])}" for label in result.labels)
    print(f"classifier: {result.checkpoint}")
    if result.verbalizers_found:
        words = ", ".join(f"{lab}={'/'.join(w)}" for lab, w in result.verbalizers.items())
        print(f"verbalizers chosen from the examples: {words}")
    print(f"examples: {counts}; unlabelled texts: {result.pool}; models: {result.models}")
    print(
        f"agreement with the ensemble on the unlabelled texts: {100 * result.pool_agreement:.1f} %"
    )
    print(f"trained in {result.seconds:.1f} s")
    return 0


def add_self_train(sub: Subcommands) -> None:
    """``llmos self-train``."""
    from llmos.config.selftrain import SelfTrainConfig

    d = SelfTrainConfig()
    st = sub.add_parser(
        "self-train",
        help="train a classifier from label descriptions and unlabelled texts, no labelled "
        "example: zero-shot labels of the texts, the surest of them to fine-tune on "
        "(self-training)",
        description="Labels every --unlabelled text zero-shot (classify-zero's similarity to "
        "the --labels descriptions, each label's mean over the texts removed), keeps the same "
        "number of texts per label, those the teacher is surest of (the largest gap between "
        "its best and second-best label), and fine-tunes a classifier from the encoder on "
        "them. --rounds N repeats it with the classifier as the teacher. Writes a "
        "classification checkpoint: llmos classify, llmos serve's /v1/classify, calibrate and "
        "quantize read it.",
    )
    st.add_argument("encoder", help="sentence encoder checkpoint (e.g. runs/e5-zh)")
    st.add_argument(
        "--labels",
        nargs="+",
        required=True,
        metavar="NAME=TEXT",
        help='label descriptions, e.g. "pos=正面评价" "neg=负面评价" (repeat a NAME for more)',
    )
    st.add_argument(
        "--unlabelled",
        required=True,
        help="texts of the kind to classify, without labels: a text file (one a line) or "
        ".tsv/.csv/.jsonl (the text under 'text')",
    )
    st.add_argument("--out", type=Path, required=True, help="the classifier checkpoint to write")
    st.add_argument(
        "--fraction",
        type=float,
        default=d.fraction,
        help="texts kept per label: this share of the least-predicted label's count "
        f"({d.fraction:g})",
    )
    st.add_argument("--rounds", type=int, default=d.rounds, help=f"rounds ({d.rounds})")
    st.add_argument("--steps", type=int, default=d.steps, help=f"steps per round ({d.steps})")
    st.add_argument("--lr", type=float, default=d.lr, help=f"learning rate ({d.lr:g})")
    _add_run(st, d.seed)
    st.set_defaults(func=_self_train)


def _self_train(args: argparse.Namespace) -> int:
    from llmos.config.selftrain import SelfTrainConfig
    from llmos.data.textfiles import read_inputs
    from llmos.errors import DataError
    from llmos.recipes.classify_zero import parse_labels
    from llmos.train.selftrain import train_self_training

    _check_resume(args)
    cfg = SelfTrainConfig(
        fraction=args.fraction,
        rounds=args.rounds,
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        num_threads=args.threads,
    )
    descriptions = parse_labels(args.labels, misplaced=None)
    pool, _ = read_inputs(args.unlabelled)
    if not pool:
        raise DataError(f"{args.unlabelled}: no texts")
    result = train_self_training(
        args.encoder, descriptions, pool, args.out, cfg, resume=args.resume, run_dir=args.run_dir
    )
    counts = ", ".join(f"{label} {n}" for label, n in result.selected.items())
    print(f"classifier: {result.checkpoint}")
    print(f"unlabelled texts: {result.pool}; trained on (per label): {counts}")
    print(
        "agreement with the zero-shot teacher on the unlabelled texts: "
        f"{100 * result.teacher_agreement:.1f} %"
    )
    print(f"trained in {result.seconds:.1f} s")
    return 0
