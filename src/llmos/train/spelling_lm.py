"""Fit a spelling checkpoint's decoding with a character n-gram LM (``llmos write lm``).

A MacBERT4CSC-style model trained here for an hour finds few typos alone, and the classic
n-gram method cannot tell a rare correct character from a typo; decoded together
(:mod:`llmos.inference.csc_lm`) they beat either under one cap on false alarms
(docs/BENCHMARKS.md, "Spelling correction"). This trains the LM on a corpus of clean sentences
(by default the prepared Chinese corpus's train split: the spelling data's train documents),
reads the model's evidence on validation pairs once, and chooses the weights of that evidence
and the score threshold with the best sentence-level correction F1 among those that change at
most ``max_fpr`` of the clean validation sentences. The LM is saved in the checkpoint
(``lm.json.gz``) and ``task.json`` records the choice (``lm``); from then on the checkpoint
decodes with it everywhere (CLI, Python API, server).

Where pycorrector's lexicon is prepared beside the confusion sets, it also fits the
noisy-channel prior (:mod:`llmos.inference.csc_channel`) on the validation pairs after those,
chooses the evidence's weights and the threshold again with the prior in place, and keeps the
prior if that scores better under the same cap; the lexicon is then copied into the
checkpoint's ``confusion/``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from llmos.checkpoint.task import Spelling, SpellingLM, parse_task
from llmos.data.spelling import read_corrections
from llmos.errors import DataError, LlmosError
from llmos.files import atomic_write, atomic_write_json
from llmos.inference.csc_channel import CHANNEL_FILES, ChannelPrior, channel_features, fit_channel
from llmos.inference.csc_lm import best_decoding, sweep_decoding
from llmos.inference.encoder import EncoderPipeline
from llmos.inference.load import load_pipeline
from llmos.models.ngram import CharNgramLM
from llmos.paths import data_dir

log = logging.getLogger("llmos.train")

LM_FILE = "lm.json.gz"
# The weights tried for the model's evidence: alpha on the correction log-probability ratio,
# beta on the detection logit; (0, 0) is the LM alone.
ALPHAS = (0.0, 0.25, 0.5, 1.0, 2.0)
BETAS = (0.0, 0.25, 0.5, 1.0, 2.0)
# Score thresholds tried, in nats.
THRESHOLDS = tuple(0.5 * k for k in range(-10, 21))
MAX_FPR = 0.05  # issue 19's target: at most 5 % of clean sentences changed
# With the noisy-channel prior the scores sit higher (the classic method's threshold: 10.5).
CHANNEL_THRESHOLDS = tuple(0.25 * k for k in range(-8, 65))
CHANNEL_PAIRS = 3000  # validation pairs, after the fit's own, that the prior is fitted on


def default_corpus() -> Path:
    return data_dir() / "corpus" / "zh" / "train.txt"


def default_valid() -> Path:
    return data_dir() / "tasks" / "csc-zh" / "valid.jsonl"


def default_lexicon() -> Path:
    return data_dir() / "tasks" / "csc-zh" / "confusion"


def _sentences(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the LM corpus ({e})") from e
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"{path}: no sentences to train the n-gram LM on")
    return lines


def fit_spelling_lm(
    checkpoint: str | Path,
    corpus: str | Path | None = None,
    valid: str | Path | None = None,
    order: int = 4,
    pairs: int = 1000,
    max_fpr: float = MAX_FPR,
    lexicon: str | Path | None = None,
    channel_pairs: int = CHANNEL_PAIRS,
) -> dict[str, Any]:
    """Train the LM, fit the decoding on validation pairs, and record both in ``checkpoint``.

    Args:
        checkpoint: a spelling checkpoint saved with its confusion sets.
        corpus: clean sentences, one per line (default :func:`default_corpus`).
        valid: validation pairs, JSONL of {"source", "target"} (default :func:`default_valid`).
        order: the LM's n-gram order.
        pairs: how many validation pairs the fit reads (the first ones).
        max_fpr: the largest share of clean validation sentences the decoding may change.
        lexicon: the directory with the noisy-channel prior's files (default
            :func:`default_lexicon`); without them, or with ``channel_pairs`` 0, no prior.
        channel_pairs: how many validation pairs after the first ``pairs`` the prior is
            fitted on.

    Returns:
        The report (also written as ``lm_fit.json`` in the checkpoint): the choice, its
        validation scores and the LM alone's.
    """
    if not 2 <= order <= 8:
        raise LlmosError(f"the n-gram order must be in 2..8, got {order}")
    if pairs < 1:
        raise LlmosError(f"pairs must be >= 1, got {pairs}")
    path = Path(checkpoint)
    pipe = load_pipeline(path)
    if not isinstance(pipe, EncoderPipeline) or not isinstance(pipe.spec, Spelling):
        raise LlmosError(f"{path} is {pipe.describe()}, not a spelling model")
    usable = pipe.speller().candidates()  # before the minutes of work below: it may have none
    corpus = Path(corpus) if corpus is not None else default_corpus()
    valid = Path(valid) if valid is not None else default_valid()
    every = read_corrections(valid)
    fit_pairs, prior_pairs = every[:pairs], every[pairs : pairs + max(0, channel_pairs)]
    if not fit_pairs:
        raise DataError(f"{valid}: no validation pairs")
    t = time.perf_counter()
    lm = CharNgramLM.train(_sentences(corpus), order=order)
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    evidence = pipe.speller().evidence([s for s, _ in fit_pairs])
    weights = [(a, b) for a in ALPHAS for b in BETAS]  # (0, 0), the LM alone, among them
    tried = sweep_decoding(lm, fit_pairs, usable, THRESHOLDS, evidence, weights)
    best = best_decoding(tried, max_fpr)
    alone = best_decoding([f for f in tried if f.alpha == f.beta == 0], max_fpr)
    how = SpellingLM(LM_FILE, best.alpha, best.beta, best.threshold)
    lexicon = Path(lexicon) if lexicon is not None else default_lexicon()
    channel: dict[str, Any] | None = None
    if prior_pairs and all((lexicon / name).is_file() for name in CHANNEL_FILES):
        # The prior is fitted on the LM's gains alone, then the evidence's weights and the
        # threshold with it in place: on 1,000 validation pairs this scored better under the
        # cap than one regression over the gain, the prior's features and the evidence
        # (docs/BENCHMARKS.md, "Spelling correction: a noisy-channel prior").
        features = channel_features(lexicon, lm)
        prior_weights = fit_channel(lm, prior_pairs, usable, features)
        prior = ChannelPrior(features, prior_weights)
        grid = CHANNEL_THRESHOLDS
        fit = best_decoding(
            sweep_decoding(lm, fit_pairs, usable, grid, evidence, weights, prior), max_fpr
        )
        channel = asdict(fit) | {"prior_pairs": len(prior_pairs), "chosen": False}
        channel["weights"] = prior_weights.to_json()
        if fit.sentence_f1 > best.sentence_f1:
            channel["chosen"] = True
            how = SpellingLM(LM_FILE, fit.alpha, fit.beta, fit.threshold, prior_weights.to_json())
            for name in CHANNEL_FILES:
                atomic_write(path / "confusion" / name, (lexicon / name).read_bytes())
    else:
        log.info("%s: no noisy-channel lexicon or no pairs for it; decoding without it", lexicon)
    fit_s = time.perf_counter() - t
    lm.save(path / LM_FILE)
    spec = replace(pipe.spec, lm=how)
    task_file = path / "task.json"
    atomic_write_json(task_file, parse_task(spec.to_json(), str(task_file)).to_json())
    report = {
        "lm": {"order": order, "corpus": str(corpus), "train_s": round(train_s, 1)},
        "valid": {"file": str(valid), "pairs": len(fit_pairs), "max_fpr": max_fpr},
        "chosen": asdict(best) if channel is None or not channel["chosen"] else channel,
        "without_channel": asdict(best),
        "channel": channel,
        "lm_alone": asdict(alone),
        "fit_s": round(fit_s, 1),
    }
    atomic_write_json(path / "lm_fit.json", report)
    log.info("spelling LM decoding: %s", json.dumps(report["chosen"]))
    return report
