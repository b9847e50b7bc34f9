"""``llmos write correct``: the writing assistant's spelling correction from the command line.

    llmos write correct --model runs/csc-zh/checkpoint "我们再学校里学习。"
    llmos write correct --model runs/csc-zh/checkpoint --dict my-words.txt < drafts.txt
    llmos write correct --model runs/csc-zh/checkpoint --json "..."     # one JSON object per text
    llmos write correct --lang en "Teh film was grate."     # the English speller
    llmos write correct --model classic "我们再学校里学习。"   # confusion sets + n-gram LM
    llmos write lm runs/csc-zh/checkpoint       # decode with a character n-gram LM beside it
    llmos write materials build                 # the shared corpus's index (once; slow on CPU)
    llmos write suggest "段落……" [--k 5] [--json] [--user NAME]   # material suggestions
    llmos write adapter --out runs/my-style mine/*.txt    # a LoRA adapter of gpt-zh: your style
    llmos write continue --adapter runs/my-style/checkpoint "却说"   # continue in that style

The model is a spelling checkpoint (``llmos finetune --config configs/run/csc-zh.yaml``).
``--dict`` is a user dictionary: one protected term per line, or ``wrong<TAB>right``
(:mod:`llmos.apps.write.dictionary`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from llmos.cli.flags import Subcommands
from llmos.cli.write_style import add_style
from llmos.data.materials import DEFAULT_POETRY
from llmos.errors import LlmosError

CLASSIC = "classic"  # --model: the classic corrector, no checkpoint
DEFAULT_MODEL = Path("runs/csc-zh/checkpoint")


def add_write(sub: Subcommands) -> None:
    """``llmos write ACTION``."""
    sp = sub.add_parser(
        "write",
        help="the writing assistant: spelling correction, material suggestions, continuation "
        "in your own style",
    ).add_subparsers(dest="action", required=True)
    p = sp.add_parser(
        "correct",
        help="correct the spelling of texts (arguments, or one per line on stdin)",
    )
    p.add_argument("texts", nargs="*", help="texts to correct (none, or -: the lines of stdin)")
    p.add_argument(
        "--model",
        help="a spelling checkpoint (default runs/csc-zh/checkpoint, configs/run/csc-zh.yaml, "
        f"where it is built; else {CLASSIC!r}), or {CLASSIC!r}: confusion sets ranked by a "
        "character 4-gram LM of the prepared corpus, built in seconds",
    )
    p.add_argument("--dict", type=Path, help="a user dictionary: terms, or wrong<TAB>right")
    p.add_argument(
        "--threshold",
        type=float,
        help="detection probability from which a character is replaced, by the model alone "
        "(default: the model's own decoding, with its n-gram LM if `llmos write lm` fitted one)",
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
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16", "auto"),
        default="fp32",
        help="the spelling model's weights: auto is bf16 on a CPU with AVX512-BF16 or AMX "
        "(1.4x the sentences a second, the same edits on 99.94%% of the test sentences), fp32 "
        "elsewhere",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per text")
    p.set_defaults(func=_correct)
    _add_lm(sp)
    _add_materials(sp)
    add_style(sp)


def _add_lm(sp: Any) -> None:
    """``llmos write lm``."""
    p = sp.add_parser(
        "lm",
        help="fit a spelling model's decoding with a character n-gram LM (saved in the "
        "checkpoint; it then decodes with it everywhere)",
    )
    p.add_argument("checkpoint", help="a spelling checkpoint, e.g. runs/csc-zh/checkpoint")
    p.add_argument(
        "--corpus", type=Path, help="clean sentences, one per line (default: corpus/zh/train.txt)"
    )
    p.add_argument(
        "--valid",
        type=Path,
        help="validation pairs, JSONL with source and target (default: tasks/csc-zh/valid.jsonl)",
    )
    p.add_argument("--order", type=int, default=4, help="the LM's n-gram order (default 4)")
    p.add_argument(
        "--pairs", type=int, default=1000, help="validation pairs to fit on (default 1000)"
    )
    p.add_argument(
        "--max-fpr",
        type=float,
        default=0.05,
        help="the largest share of clean validation sentences it may change (default 0.05)",
    )
    p.add_argument(
        "--lexicon",
        type=Path,
        help="pycorrector's word_freq.txt, person_name.txt, place_name.txt and "
        "common_char_set.txt for the noisy-channel prior (default: tasks/csc-zh/confusion)",
    )
    p.add_argument(
        "--channel-pairs",
        type=int,
        default=3000,
        help="validation pairs after --pairs that the prior is fitted on (0: no prior; "
        "default 3000)",
    )
    p.set_defaults(func=_lm)


def _lm(args: argparse.Namespace) -> int:
    from llmos.train.spelling_lm import fit_spelling_lm

    if not 0 <= args.max_fpr <= 1:
        raise LlmosError(f"--max-fpr must be in [0, 1], got {args.max_fpr}")
    if args.channel_pairs < 0:
        raise LlmosError(f"--channel-pairs must be >= 0, got {args.channel_pairs}")
    report = fit_spelling_lm(
        args.checkpoint,
        args.corpus,
        args.valid,
        args.order,
        args.pairs,
        args.max_fpr,
        args.lexicon,
        args.channel_pairs,
    )
    chosen, alone = report["chosen"], report["lm_alone"]
    prior = " and the noisy-channel prior" if (report["channel"] or {}).get("chosen") else ""
    print(
        f"{args.checkpoint}: decodes with a {args.order}-gram LM{prior}, alpha "
        f"{chosen['alpha']:.3g}, beta {chosen['beta']:.3g}, threshold {chosen['threshold']} nats"
    )
    print(
        f"valid ({report['valid']['pairs']} pairs): sentence F1 {chosen['sentence_f1']:.4f} "
        f"(the LM alone {alone['sentence_f1']:.4f}), clean sentences changed "
        f"{chosen['fpr']:.1%} ({alone['fpr']:.1%})"
    )
    return 0


def _add_materials(sp: Any) -> None:
    """``llmos write suggest`` and ``llmos write materials build``."""
    p = sp.add_parser(
        "suggest",
        help="passages of the shared corpus (and of a user's documents) for a paragraph",
    )
    p.add_argument("text", help="the paragraph being written")
    p.add_argument("--k", type=int, default=5, help="how many suggestions (1-50, default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--encoder", default="runs/e5-zh", help="embedding checkpoint (runs/e5-zh)")
    p.add_argument(
        "--index",
        type=Path,
        help="the shared corpus's index (default $LLMOS_HOME/apps/write/materials)",
    )
    p.add_argument(
        "--user", help="also suggest from this user's documents in the store (llmos users)"
    )
    p.set_defaults(func=_suggest)
    m = sp.add_parser("materials", help="the shared corpus of material suggestions")
    build = m.add_subparsers(dest="materials_action", required=True).add_parser(
        "build",
        help="prepare the shared corpus (三国演义, People's Daily, poetry via npm) and index it",
    )
    build.add_argument("--encoder", default="runs/e5-zh", help="embedding checkpoint")
    build.add_argument(
        "--poetry",
        default=",".join(DEFAULT_POETRY),
        help="chinese-poetry collections, comma-separated: tang, songci, song; 'none' for no "
        f"poetry (no npm download); default {','.join(DEFAULT_POETRY)}",
    )
    build.add_argument("--index", type=Path, help="where to save it (default as for suggest)")
    build.add_argument(
        "--max-docs",
        type=int,
        help="index only this many documents, spread evenly over the corpus (a quick try; "
        "`llmos setup` builds 2,500)",
    )
    build.set_defaults(func=_materials_build)


def _correct(args: argparse.Namespace) -> int:
    from llmos.apps.write.corrector import Corrector
    from llmos.apps.write.dictionary import read_dictionary
    from llmos.apps.write.edits import apply_edits

    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise LlmosError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.texts in ([], ["-"]):  # - is stdin, as for the other commands' --input
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    else:
        texts = args.texts
    dictionary = read_dictionary(args.dict) if args.dict else None
    if args.lang == "en":
        from llmos.apps.write.corrector import english_speller
        from llmos.paths import data_dir

        if args.model is not None or args.precision != "fp32":
            raise LlmosError(
                "--lang en corrects with the English speller: it takes no --model or --precision"
            )
        corrector = Corrector(english_speller(data_dir() / "corpus" / "en" / "train.txt"))
    elif _spelling_model(args) == CLASSIC:
        from llmos.apps.write.corrector import classic_corrector
        from llmos.paths import data_dir

        if args.threshold is not None or args.any_character or args.precision != "fp32":
            raise LlmosError(
                f"--model {CLASSIC} takes no --threshold, --any-character or --precision"
            )
        confusion = args.confusion or data_dir() / "tasks" / "csc-zh" / "confusion"
        corpus = data_dir() / "corpus" / "zh" / "train.txt"
        corrector = Corrector(classic_corrector(corpus, confusion))
    else:
        confusion = None if args.any_character else (args.confusion or "model")
        corrector = Corrector.load(args.model, args.threshold, confusion, args.precision)
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


def _spelling_model(args: argparse.Namespace) -> str:
    """``--model``, or where it is not given the default checkpoint if it is built, else the
    classic corrector (said on stderr)."""
    if args.model is None:
        if (DEFAULT_MODEL / "config.json").is_file():
            args.model = str(DEFAULT_MODEL)
        else:
            args.model = CLASSIC
            print(
                f"{DEFAULT_MODEL} is not built (llmos setup --with csc-zh): correcting with the "
                "classic method (confusion sets + a character 4-gram LM)",
                file=sys.stderr,
            )
    return args.model


def _encoder(path: str) -> Any:
    from llmos.apps.support.local import PipelineEmbedder

    if not (Path(path) / "config.json").is_file():
        raise LlmosError(
            f"{path}: no encoder checkpoint (build runs/e5-zh with `llmos setup`, "
            "or pass --encoder)"
        )
    return PipelineEmbedder(path)


def _suggest(args: argparse.Namespace) -> int:
    from llmos.apps.write.materials import MaterialIndex
    from llmos.apps.write.suggestions import (
        Materials,
        check_request,
        shared_index_dir,
        users_index_dir,
    )

    check_request(args.text, args.k)  # before anything is loaded
    index_dir = args.index or shared_index_dir()
    if not (index_dir / "meta.json").is_file():
        raise LlmosError(
            f"{index_dir}: no material index; build it with `llmos write materials build` "
            "(or pass --index)"
        )
    shared = MaterialIndex.load(index_dir)
    embed = _encoder(args.encoder)
    store = None
    try:
        user_id = None
        if args.user:
            from llmos.store.db import Store
            from llmos.store.documents import WriteDocuments

            store = Store()
            user = store.user(args.user)
            if user is None:
                raise LlmosError(f"--user: no user named {args.user!r} (see `llmos users list`)")
            user_id = user.id
        documents = WriteDocuments(store) if store is not None else None
        materials = Materials(embed, shared, documents, users_index_dir())
        found = materials.suggest(user_id, args.text, args.k)
    finally:
        if store is not None:
            store.close()
    if args.json:
        print(json.dumps({"suggestions": [s.as_json() for s in found]}, ensure_ascii=False))
        return 0
    for i, s in enumerate(found, 1):
        print(f"{i}. [{s.corpus}] {s.title} (doc {s.doc}, offset {s.offset}, score {s.score:.4f})")
        print("   " + s.text.replace("\n", "\n   "))
    return 0


def _materials_build(args: argparse.Namespace) -> int:
    import time

    from llmos.apps.write.suggestions import build_shared_index, shared_index_dir

    poetry = [c.strip() for c in args.poetry.split(",") if c.strip() and c.strip() != "none"]
    if args.max_docs is not None and args.max_docs < 1:
        raise LlmosError(f"--max-docs must be at least 1, got {args.max_docs}")
    embed = _encoder(args.encoder)  # before the long preparation
    start = time.perf_counter()
    out = args.index or shared_index_dir()
    index = build_shared_index(out, embed, args.max_docs, poetry)
    print(
        f"material index saved to {out}: {len(index.documents):,} documents, "
        f"{len(index):,} passages, {time.perf_counter() - start:.0f} s"
    )
    return 0
