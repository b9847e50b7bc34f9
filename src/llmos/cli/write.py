"""``llmos write correct``: the writing assistant's spelling correction from the command line.

    llmos write correct --model runs/csc-zh/checkpoint "我们再学校里学习。"
    llmos write correct --model runs/csc-zh/checkpoint --dict my-words.txt < drafts.txt
    llmos write correct --model runs/csc-zh/checkpoint --json "..."     # one JSON object per text
    llmos write correct --lang en "Teh film was grate."     # the English speller

The model is a spelling checkpoint (``llmos finetune --config configs/run/csc-zh.yaml``).
``--dict`` is a user dictionary: one protected term per line, or ``wrong<TAB>right``
(:mod:`llmos.apps.write.dictionary`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmos.cli.flags import Subcommands
from llmos.errors import LlmosError


def add_write(sub: Subcommands) -> None:
    """``llmos write ACTION``."""
    sp = sub.add_parser("write", help="the writing assistant: spelling correction").add_subparsers(
        dest="action", required=True
    )
    p = sp.add_parser(
        "correct",
        help="correct the spelling of texts (arguments, or one per line on stdin)",
    )
    p.add_argument("texts", nargs="*", help="texts to correct (default: lines of stdin)")
    p.add_argument(
        "--model",
        default="runs/csc-zh/checkpoint",
        help="a spelling checkpoint (default runs/csc-zh/checkpoint, configs/run/csc-zh.yaml)",
    )
    p.add_argument("--dict", type=Path, help="a user dictionary: terms, or wrong<TAB>right")
    p.add_argument(
        "--threshold",
        type=float,
        help="detection probability from which a character is replaced (default: the model's)",
    )
    p.add_argument(
        "--confusion",
        type=Path,
        help="a directory with same_pinyin.txt and same_stroke.txt: a character is replaced "
        "only by one of its confusion set (default: the confusion sets saved with the model)",
    )
    p.add_argument(
        "--any-character",
        action="store_true",
        help="let the model put any character it knows in place of one (no confusion sets)",
    )
    p.add_argument(
        "--lang",
        choices=("zh", "en"),
        default="zh",
        help="zh: the spelling model (--model); en: the English speller over the prepared "
        "English corpus (SymSpell candidates ranked by a character 6-gram LM)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per text")
    p.set_defaults(func=_correct)


def _correct(args: argparse.Namespace) -> int:
    from llmos.apps.write.corrector import Corrector
    from llmos.apps.write.dictionary import read_dictionary
    from llmos.apps.write.edits import apply_edits

    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise LlmosError(f"--threshold must be in [0, 1], got {args.threshold}")
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    dictionary = read_dictionary(args.dict) if args.dict else None
    if args.lang == "en":
        from llmos.apps.write.corrector import english_speller
        from llmos.paths import data_dir

        corrector = Corrector(english_speller(data_dir() / "corpus" / "en" / "train.txt"))
    else:
        confusion = None if args.any_character else (args.confusion or "model")
        corrector = Corrector.load(args.model, args.threshold, confusion)
    for text, edits in zip(texts, corrector.correct(texts, dictionary), strict=True):
        fixed = apply_edits(text, edits)
        if args.json:
            row = {"text": text, "corrected": fixed, "edits": [e.as_json() for e in edits]}
            print(json.dumps(row, ensure_ascii=False))
            continue
        print(fixed)
        for e in edits:
            print(f"  {e.start}: {e.original} -> {e.suggestion}  ({e.kind}, {e.score:.2f})")
    return 0
