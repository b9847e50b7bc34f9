"""``llmos setfit``: a classifier from a few labelled examples per label (SetFit-style).

    llmos setfit runs/e5-zh --examples few.jsonl --out runs/my-intents
    llmos predict runs/my-intents --input texts.txt      # an ordinary classifier from then on

The examples file is what ``llmos classify-zero --examples`` reads (JSONL ``{"text",
"label"}``, or .tsv/.csv). The training is :func:`llmos.train.setfit.train_setfit`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llmos.cli.flags import Subcommands


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
    sf.add_argument(
        "--examples",
        required=True,
        help='labelled examples: JSONL {"text", "label"} (or .tsv/.csv)',
    )
    sf.add_argument(
        "--label-key", default="label", help="label key of --examples (intents: intent)"
    )
    sf.add_argument("--skip-bad-rows", action="store_true", help="skip malformed example rows")
    sf.add_argument("--out", type=Path, required=True, help="the classifier checkpoint to write")
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
    sf.add_argument("--seed", type=int, default=d.seed)
    sf.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    sf.add_argument(
        "--run-dir", type=Path, help="keep the step checkpoints here (to --resume a cut-off run)"
    )
    sf.add_argument("--resume", action="store_true", help="continue a cut-off run in --run-dir")
    sf.set_defaults(func=_setfit)


def _setfit(args: argparse.Namespace) -> int:
    from llmos.config.setfit import SetFitConfig
    from llmos.errors import ConfigError
    from llmos.recipes.classify_zero import read_examples
    from llmos.train.setfit import train_setfit

    if args.resume and args.run_dir is None:
        raise ConfigError("--resume needs --run-dir (where the cut-off run kept its steps)")
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
