"""Chinese spelling correction (MacBERT4CSC-style): pairs of a sentence with typos and its
correct form, encoded per character, the weighted detection + correction loss, evaluation by
the sentence- and character-level scores of the field (SIGHAN's, as pycorrector reports
them), and the fine-tuning setup built from a :class:`~llmos.config.run.FinetuneConfig`.

Data: JSONL rows ``{"source": with typos, "target": correct}`` of equal length (a typo is a
character replaced by another; :func:`~llmos.data.spelling.read_corrections`). The packaged
``csc-zh`` dataset is People's Daily and 三国演义 with synthetic typos from pycorrector's
confusion sets (``llmos data prepare``).

At every character position (a token covering one Chinese character, see
:mod:`llmos.inference.correct`) the correction target is the correct character and the
detection target whether the source differs there. The loss is ``w * BCE(detection) +
(1 - w) * CE(correction)`` over those positions (``w`` = ``detect_weight``, 0.3 as
pycorrector's MacBERT4CSC), each mean over the step's positions. A correct character that
is not one of the head's outputs (absent from the tokenizer) has no correction target there.

The encoder this is trained from need not be a masked LM (multilingual-e5 is a sentence
encoder): fine-tuned on typos alone, it learns to copy every character (after 500 steps of
32 sentences from multilingual-e5, the correction head's best guess was the input character
at every position of the validation sentences looked at, typos included). ``mask_correct`` of
the correct characters of each training sentence are replaced by the mask token (targets
kept), as Wu et al. (2023) do, so that the characters are read from their context.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmos.checkpoint.io import TASK_FILE, read_checkpoint
from llmos.checkpoint.task import Spelling
from llmos.config.model import BertConfig
from llmos.config.run import FinetuneConfig
from llmos.data.batching import EpochBatches, pad_batch
from llmos.data.datasets import dataset_files
from llmos.data.spelling import read_confusion, read_corrections
from llmos.errors import CheckpointError, DataError
from llmos.files import atomic_path, atomic_write_json
from llmos.inference.correct import (
    CharVocab,
    Correction,
    Window,
    apply_corrections,
    encode_windows,
    predict_corrections,
)
from llmos.inference.load import load_model
from llmos.models.csc import BertForSpellingCorrection
from llmos.text.csc_metrics import sentence_scores
from llmos.text.tokenizer import special_ids
from llmos.train.loop import FitResult
from llmos.train.runs import FinetuneSetup, Init
from llmos.train.spelling_lm import fit_spelling_lm

log = logging.getLogger("llmos.train")

IGNORE = -100
# Detection thresholds tried on the validation split once training is done; the best
# sentence-level correction F1 is kept in task.json.
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
# The threshold of the validations during training (the best checkpoint is chosen by their
# sentence F1); the detection head's probabilities stay low for the first hundreds of steps.
EVAL_THRESHOLD = 0.3
# Validation sentences the threshold is fitted on (one corrector run per threshold).
FIT_SENTENCES = 2000
# The share of clean sentences the fitted threshold may change on validation: false alarms on
# clean text are what pycorrector's users complain of first (issue 19's target: <= 5 %).
MAX_FPR = 0.05
CONFUSION_DIR = "confusion"  # beside a dataset's splits, and in a checkpoint that uses them


@dataclass
class SpellEncoded:
    """A split ready for training and scoring: its windows (one per sentence unless a
    sentence is longer than the model reads), per window the correction target of each
    character position (index into the head's characters, ``IGNORE`` when the correct
    character is not one of them) and its detection target (1: the source is wrong there)."""

    sources: list[str]
    targets: list[str]
    windows: list[Window]
    correct: list[np.ndarray]
    wrong: list[np.ndarray]


def encode_pairs(
    tok: Any,
    pairs: list[tuple[str, str]],
    vocab: CharVocab,
    max_length: int,
    cls_id: int,
    sep_id: int,
) -> SpellEncoded:
    """Windows and per-position targets of (source, target) pairs."""
    sources = [s for s, _ in pairs]
    targets = [t for _, t in pairs]
    windows = encode_windows(tok, sources, max_length, cls_id, sep_id)
    correct, wrong = [], []
    for w in windows:
        src, tgt = sources[w.text], targets[w.text]
        gold = [tgt[o] for o in w.offsets.tolist()]
        correct.append(np.array([vocab.index.get(c, IGNORE) for c in gold], dtype=np.int64))
        flags = [src[o] != c for o, c in zip(w.offsets.tolist(), gold, strict=True)]
        wrong.append(np.array(flags, dtype=np.float32))
    return SpellEncoded(sources, targets, windows, correct, wrong)


@dataclass(frozen=True)
class Decoding:
    """How corrections are read off the model, in training's evaluation as in serving: the
    padding id, the mask id of a second, masked pass (None: one pass) and the characters a
    character may become (None: any of the head's)."""

    pad_id: int
    mask_id: int | None = None
    candidates: Callable[[str], Sequence[str]] | None = None


def correct_texts(
    model: nn.Module, data: SpellEncoded, vocab: CharVocab, threshold: float, how: Decoding
) -> list[list[Correction]]:
    """The model's corrections of every source sentence of ``data``."""
    was_training = model.training
    model.eval()
    found = predict_corrections(
        model,
        data.windows,
        data.sources,
        vocab,
        threshold,
        how.pad_id,
        candidates=how.candidates,
        mask_id=how.mask_id,
    )
    model.train(was_training)
    return found


def evaluate_spelling(
    model: nn.Module, data: SpellEncoded, vocab: CharVocab, threshold: float, how: Decoding
) -> dict[str, Any]:
    """Sentence- and character-level scores of the model's corrections of ``data``."""
    found = correct_texts(model, data, vocab, threshold, how)
    predictions = [apply_corrections(s, c) for s, c in zip(data.sources, found, strict=True)]
    return sentence_scores(data.sources, predictions, data.targets)


def fit_threshold(
    model: nn.Module, data: SpellEncoded, vocab: CharVocab, how: Decoding
) -> tuple[float, list[dict[str, Any]]]:
    """The detection threshold of :data:`THRESHOLDS` with the best sentence-level correction
    F1 on ``data`` among those that change at most :data:`MAX_FPR` of its clean sentences (the
    lower one on a tie; when none does, the one that changes the fewest), and every
    threshold's scores.

    With one pass, one run at the lowest threshold: a higher one keeps the corrections whose
    detection probability reaches it (the correction head's choice does not depend on the
    threshold). With a masked second pass, what is masked depends on the threshold: one run
    per threshold.
    """
    rows = []
    if how.mask_id is None:
        found = correct_texts(model, data, vocab, THRESHOLDS[0], how)
        for t in THRESHOLDS:
            predictions = [
                apply_corrections(src, [c for c in row if c.detect >= t])
                for src, row in zip(data.sources, found, strict=True)
            ]
            scores = sentence_scores(data.sources, predictions, data.targets)
            rows.append({"threshold": t} | scores)
    else:
        for t in THRESHOLDS:
            rows.append({"threshold": t} | evaluate_spelling(model, data, vocab, t, how))
    quiet = [r for r in rows if r["fpr"] <= MAX_FPR]
    if quiet:
        best = max(quiet, key=lambda r: (r["sentence_f1"], -r["threshold"]))
    else:
        best = min(rows, key=lambda r: (r["fpr"], -r["sentence_f1"]))
    return float(best["threshold"]), rows


def plot_thresholds(rows: list[dict[str, Any]], out_png: Path, title: str = "") -> Path:
    """Sentence-level correction precision, recall, F1 and the false-positive rate on clean
    sentences against the detection threshold (:func:`fit_threshold`'s sweep)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["threshold"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for key, label in (
        ("sentence_precision", "precision"),
        ("sentence_recall", "recall"),
        ("sentence_f1", "F1"),
        ("fpr", "clean sentences changed"),
    ):
        ax.plot(x, [r[key] for r in rows], marker="o", label=label)
    ax.set_xlabel("detection threshold")
    ax.set_ylim(0, 1.0)
    ax.set_title(title or "spelling correction by threshold (valid)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return out_png


class SpellTask(EpochBatches):
    """Spelling correction for the shared training loop."""

    def __init__(
        self,
        train: SpellEncoded,
        valid: SpellEncoded,
        vocab: CharVocab,
        how: Decoding,
        detect_weight: float,
        batch_size: int,
        seed: int,
        eval_sentences: int,
        mask_correct: float = 0.0,
    ) -> None:
        self.train, self.vocab, self.how, self.pad_id = train, vocab, how, how.pad_id
        self.mask_id, self.mask_correct = how.mask_id, mask_correct
        keep = sorted({w.text for w in valid.windows})[:eval_sentences]
        self.valid = _subset(valid, set(keep))
        self.detect_weight = detect_weight
        self.batch_size, self.seed = batch_size, seed
        self.lengths = np.array([len(w.ids) for w in train.windows])
        self.position = {"epoch": 0, "batch": 0}

    def _masked(self, idx: np.ndarray) -> list[np.ndarray]:
        """The windows' input ids with ``mask_correct`` of their correct characters masked,
        drawn from the data position (so a resumed run masks as an uninterrupted one)."""
        wins = [self.train.windows[i] for i in idx]
        if not self.mask_correct or self.mask_id is None:
            return [w.ids for w in wins]
        pos = self.position
        rng = np.random.default_rng([self.seed, pos["epoch"], pos["batch"], int(idx[0])])
        out = []
        for w, i in zip(wins, idx, strict=True):
            ids = w.ids.copy()
            clean = w.positions[self.train.wrong[i] == 0]
            ids[clean[rng.random(len(clean)) < self.mask_correct]] = self.mask_id
            out.append(ids)
        return out

    def collate(self, idx: np.ndarray) -> dict[str, Any]:
        wins = [self.train.windows[i] for i in idx]
        b = pad_batch(self._masked(idx), None, self.pad_id)
        T = b["input_ids"].shape[1]
        rows = np.concatenate([np.full(len(w.positions), r) for r, w in enumerate(wins)])
        cols = np.concatenate([w.positions for w in wins])
        b["positions"] = torch.from_numpy((rows * T + cols).astype(np.int64))  # (N,) into B*T
        b["correct"] = torch.from_numpy(np.concatenate([self.train.correct[i] for i in idx]))
        b["wrong"] = torch.from_numpy(np.concatenate([self.train.wrong[i] for i in idx]))
        return b

    def counts(self, batch: dict[str, Any]) -> list[float]:
        return [float(batch["positions"].numel()), float((batch["correct"] != IGNORE).sum())]

    def loss(
        self, model: nn.Module, batch: dict[str, Any], totals: list[float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(batch["input_ids"], batch["attention_mask"], batch["positions"])
        detect = out.detect.reshape(-1).index_select(0, batch["positions"])  # (N,)
        det = F.binary_cross_entropy_with_logits(
            detect.float(), batch["wrong"], reduction="sum"
        ) / max(totals[0], 1.0)
        cor = F.cross_entropy(
            out.correct.float(), batch["correct"], ignore_index=IGNORE, reduction="sum"
        ) / max(totals[1], 1.0)
        w = self.detect_weight
        loss = w * det + (1 - w) * cor
        return loss, {"loss": loss.item(), "detect_loss": det.item(), "correct_loss": cor.item()}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        scores = evaluate_spelling(model, self.valid, self.vocab, EVAL_THRESHOLD, self.how)
        keys = ("sentence_f1", "sentence_precision", "sentence_recall", "char_f1", "fpr")
        return {k: float(scores[k]) for k in keys if k in scores}


def _subset(data: SpellEncoded, texts: set[int]) -> SpellEncoded:
    """The sentences ``texts`` of ``data`` (renumbered in order), with their windows."""
    order = sorted(texts)
    new = {t: i for i, t in enumerate(order)}
    keep = [i for i, w in enumerate(data.windows) if w.text in texts]
    return SpellEncoded(
        [data.sources[t] for t in order],
        [data.targets[t] for t in order],
        [replace(data.windows[i], text=new[data.windows[i].text]) for i in keep],
        [data.correct[i] for i in keep],
        [data.wrong[i] for i in keep],
    )


def spelling_model(config: BertConfig, chars: int) -> BertForSpellingCorrection:
    """The task model of a spelling checkpoint (random weights)."""
    return BertForSpellingCorrection(config, chars)


def setup_spelling(cfg: FinetuneConfig, init: Init) -> FinetuneSetup:
    """The head's characters (the tokenizer's), the splits encoded, the task, a loader that
    starts the correction head from the word embeddings (or, when ``init`` is a spelling
    model with the same characters, keeps its heads: a second run trains it on), and a report
    that fits the detection threshold on the validation split and scores the test split with
    it."""
    config = init.config
    if not isinstance(config, BertConfig):
        raise CheckpointError(f"{init.path}: spelling correction needs a BERT encoder")
    files = dataset_files(cfg.data.dataset)
    pairs = {s: read_corrections(f) for s, f in files.items()}
    tok = init.tokenizer
    vocab = CharVocab.from_tokenizer(tok)
    if not len(vocab.ids):
        raise CheckpointError(f"{init.path}: the tokenizer has no single Chinese characters")
    special = special_ids(tok)
    cls_id, sep_id, pad_id = special["cls"], special["sep"], special["pad"] or 0
    if cls_id is None or sep_id is None:
        raise CheckpointError(f"{init.path}: the tokenizer has no [CLS]/[SEP] tokens")
    max_length = min(cfg.data.max_length, config.max_position)
    enc = {s: encode_pairs(tok, p, vocab, max_length, cls_id, sep_id) for s, p in pairs.items()}
    if not any(len(w.positions) for w in enc["train"].windows):
        raise DataError(f"{files['train']}: no Chinese character the model can read")
    mask_id = special["mask"] if cfg.mask_correct else None
    if cfg.mask_correct and mask_id is None:
        raise CheckpointError(f"{init.path}: mask_correct needs a tokenizer with a mask token")
    confusion = files["train"].parent / CONFUSION_DIR
    candidates = read_confusion(confusion).candidates if confusion.is_dir() else None
    how = Decoding(pad_id, mask_id, candidates)
    eval_sentences = cfg.train.eval_batches * cfg.train.batch_size
    task = SpellTask(
        enc["train"],
        enc["valid"],
        vocab,
        how,
        cfg.detect_weight,
        cfg.train.batch_size,
        cfg.train.seed,
        eval_sentences,
        cfg.mask_correct,
    )
    meta: dict[str, Any] = {
        "task": "spelling",
        "chars": len(vocab.ids),
        "max_length": max_length,
        "detect_weight": cfg.detect_weight,
        "threshold": EVAL_THRESHOLD,
    }
    if cfg.mask_correct:
        meta["mask_correct"] = cfg.mask_correct
    char_ids = torch.from_numpy(vocab.ids)

    def load(model: nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
        own = weights.get("char_ids")
        if own is not None and torch.equal(own, char_ids):  # a spelling model: train it on
            missing, unexpected = model.load_state_dict(weights, strict=False)
            if missing or unexpected:
                raise CheckpointError(f"{path}: spelling weights do not fit ({missing[:3]})")
            log.info("%s is a spelling model: its heads are trained on", path)
            return
        encoder = {k: v for k, v in weights.items() if k.startswith("bert.embeddings.")}
        encoder |= {k: v for k, v in weights.items() if k.startswith("bert.layers.")}
        missing, _ = model.load_state_dict(encoder, strict=False)
        if any(k.startswith("bert.") for k in missing):
            raise CheckpointError(f"{path}: not a BERT encoder checkpoint (missing {missing[:3]})")
        cast(BertForSpellingCorrection, model).init_correction(char_ids)

    def report(result: FitResult) -> dict[str, Any]:
        if candidates is not None:  # the checkpoint decodes as it was evaluated
            copy = result.checkpoint / f".{CONFUSION_DIR}.tmp"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(confusion, copy)
            shutil.rmtree(result.checkpoint / CONFUSION_DIR, ignore_errors=True)
            copy.rename(result.checkpoint / CONFUSION_DIR)
        ckpt = read_checkpoint(result.checkpoint)
        model = load_model(ckpt)
        fit = _subset(enc["valid"], set(range(min(FIT_SENTENCES, len(enc["valid"].sources)))))
        threshold, sweep = fit_threshold(model, fit, vocab, how)
        spec = replace(cast(Spelling, ckpt.task), threshold=threshold)
        atomic_write_json(result.checkpoint / TASK_FILE, spec.to_json())
        plot_thresholds(sweep, result.run_dir / "thresholds_valid.png", f"{cfg.name} (valid)")
        out: dict[str, Any] = {
            "best": result.best,
            "threshold": threshold,
            "valid_thresholds": sweep,
            "confusion_sets": candidates is not None,
            "train_sentences": len(enc["train"].sources),
        }
        if "test" in enc:
            out["test"] = evaluate_spelling(model, enc["test"], vocab, threshold, how)
        if cfg.lm_order is not None:  # the checkpoint then decodes with its n-gram LM
            out["lm"] = fit_spelling_lm(
                result.checkpoint, cfg.lm_corpus, files["valid"], cfg.lm_order
            )
        return out

    return FinetuneSetup(task, lambda: spelling_model(config, len(vocab.ids)), meta, report, load)
