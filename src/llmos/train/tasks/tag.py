"""Sequence labelling (segmentation, POS, NER, slot filling): encoding, training windows,
batches, loss, evaluation, and the fine-tuning setup built from a
:class:`~llmos.config.run.FinetuneConfig`.

Data arrive as texts with character spans (:func:`llmos.data.readers.read_spans`). Spans are
aligned to subword tokens and written as BIO or BMES tags, every subword tagged (with
``data.char_tags``, every character of the pieces instead: see
:class:`~llmos.models.bert.BertForCharTagging`); long texts are cut into windows of
``max_length`` tokens for training. Evaluation decodes exactly as
prediction does (overlapping windows, constrained Viterbi) and scores the character spans
against the gold ones, so a span the tokenizer cannot represent counts as a miss.

With ``crf: true`` the loss is the CRF's negative log-likelihood of each window's tag
sequence instead of per-token cross-entropy (see :mod:`llmos.models.crf`): a window cut out of
a longer text has an open edge there (it may start or end inside a span), and a token whose
gold label the model lacks (-100) is marginalized. The sum over windows is divided by the
step's labelled tokens, as the cross-entropy is, so both losses read per token.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmos.checkpoint.task import Tagging
from llmos.config.model import BertConfig, XLNetConfig
from llmos.config.run import FinetuneConfig
from llmos.data.batching import EpochBatches, pad_batch
from llmos.data.datasets import dataset_files, warn_skipped
from llmos.data.readers import SpanExample, read_spans
from llmos.data.tagging import align_spans, label_set, parse_label, spans_to_tags
from llmos.errors import CheckpointError, DataError
from llmos.inference.encoder import EncoderPipeline
from llmos.inference.load import load_pipeline
from llmos.inference.tag import (
    SpanDecoder,
    TokenizedText,
    frame,
    pad_units,
    predict_spans,
    reads_cls_last,
    tagger_model,
    tokenize_for_tagging,
)
from llmos.text.tokenizer import special_ids
from llmos.train.loop import FitResult
from llmos.train.metrics import plot_span_scores, span_scores
from llmos.train.runs import FinetuneSetup, Init

log = logging.getLogger("llmos.train")

IGNORE = -100


@dataclass
class TagEncoded:
    """A split ready for training and scoring."""

    rows: list[SpanExample]
    tokens: list[TokenizedText]
    tags: list[list[int]]  # gold tag index per content token (-100: a label the model lacks)
    dropped: int  # gold spans the tokenizer could not represent


def encode_tagging(
    tokenizer: Any,
    rows: list[SpanExample],
    labels: list[str],
    scheme: str,
    name: str,
    char_units: bool = False,
) -> TagEncoded:
    """Tokenize texts and turn their character spans into one tag index per unit (a token,
    or with ``char_units`` a character of the pieces)."""
    index = {label: i for i, label in enumerate(labels)}
    tokens = tokenize_for_tagging(tokenizer, [r.text for r in rows], char_units)
    tags, dropped, unknown = [], 0, set()
    for row, tok in zip(rows, tokens, strict=True):
        token_spans, n = align_spans(tok.offsets, row.spans)
        dropped += n
        names = spans_to_tags(token_spans, len(tok.offsets), scheme)
        unknown.update(t for t in names if t not in index)
        tags.append([index.get(t, IGNORE) for t in names])
    if dropped:
        log.warning(
            "%s: %d gold spans share a token with another span or cover no token; "
            "they cannot be predicted and count as misses",
            name,
            dropped,
        )
    if unknown:
        log.warning("%s: labels unseen in training (never predicted): %s", name, sorted(unknown))
    return TagEncoded(rows, tokens, tags, dropped)


def _windows(data: TagEncoded, max_length: int) -> Iterator[tuple[int, int, int, int]]:
    """``(text, first token, first unit, end unit)`` of each training window: texts cut into
    windows of ``max_length - 2`` tokens; a window with no unit to tag is left out."""
    size = max_length - 2
    for i, tok in enumerate(data.tokens):
        for s in range(0, len(tok.ids), size):
            u0, u1 = tok.window(s, s + size)
            if u1 > u0:
                yield i, s, u0, u1


def training_windows(
    data: TagEncoded, max_length: int, cls_id: int, sep_id: int, cls_last: bool = False
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Input ids and label ids of each window of :func:`_windows`: tokens with specials
    (framed as :func:`~llmos.inference.tag.frame` does: XLNet's ``<sep> <cls>`` last when
    ``cls_last``; the labels of a token tagger aligned with them, ``IGNORE`` on the
    specials), or a character tagger's labels, one per character."""
    size = max_length - 2
    ids, labels = [], []
    for i, s, u0, u1 in _windows(data, max_length):
        tok, tags = data.tokens[i], data.tags[i]
        ids.append(frame(tok.ids[s : s + size], cls_id, sep_id, cls_last))
        window = list(tags[u0:u1])
        if tok.units is None:
            window = [*window, IGNORE, IGNORE] if cls_last else [IGNORE, *window, IGNORE]
        labels.append(np.asarray(window, np.int64))
    return ids, labels


def window_units(data: TagEncoded, max_length: int) -> list[np.ndarray] | None:
    """A character tagger's (U, 4) units per window of :func:`training_windows`, in its
    order (see :class:`~llmos.models.bert.BertForCharTagging`); None for a token tagger."""
    if not data.tokens or data.tokens[0].units is None:
        return None
    out = []
    for i, s, u0, u1 in _windows(data, max_length):
        units = data.tokens[i].units
        assert units is not None
        out.append(units.rows(u0, u1, s))
    return out


def window_edges(data: TagEncoded, max_length: int) -> np.ndarray:
    """(N, 2) bool per window of :func:`training_windows`, in its order: does the window start
    after its text's start, does it end before its text's end (a CRF's open edges)."""
    edges = [
        (u0 > 0, u1 < len(data.tokens[i].offsets)) for i, _, u0, u1 in _windows(data, max_length)
    ]
    return np.asarray(edges, dtype=bool).reshape(-1, 2)


def evaluate_tagging(
    model: nn.Module,
    data: TagEncoded,
    decoder: SpanDecoder,
    special: dict[str, int | None],
    max_length: int,
) -> tuple[dict[str, float], dict[str, Any], list[list[dict[str, Any]]]]:
    """Span P/R/F1 on character offsets, token accuracy and loss; flat, full, predictions.

    The loss is the mean negative log-probability of the gold labels: per-token softmax, or a
    CRF's marginal probabilities (not the sequence NLL it trains on)."""
    was_training = model.training
    model.eval()
    scores, tags, spans = predict_spans(
        model, data.tokens, [r.text for r in data.rows], decoder, special, max_length
    )
    model.train(was_training)
    nll, n_tok, n_known, correct = 0.0, 0, 0, 0
    for sc, gold, pred in zip(scores, data.tags, tags, strict=True):
        gold_arr = np.asarray(gold, dtype=np.int64)
        known = gold_arr != IGNORE
        if len(gold_arr):
            nll -= float(sc[np.arange(len(gold_arr))[known], gold_arr[known]].sum())
        n_tok += len(gold_arr)
        n_known += int(known.sum())
        correct += sum(decoder.index[p] == g for p, g in zip(pred, gold, strict=True))
    report = span_scores(
        [r.spans for r in data.rows],
        [[(s["label"], s["start"], s["end"]) for s in sent] for sent in spans],
    )
    report["accuracy"] = correct / n_tok if n_tok else 0.0
    report["loss"] = nll / n_known if n_known else float("nan")  # over labels the model has
    report["unrepresentable_spans"] = data.dropped
    flat = {k: report[k] for k in ("loss", "accuracy", "precision", "recall", "f1", "macro_f1")}
    return flat, report, spans


class TagTask(EpochBatches):
    """Token classification for the shared training loop: per-token cross-entropy, or the
    model's CRF negative log-likelihood when ``crf_edges`` (from :func:`window_edges`) is
    given. With ``train_units`` (from :func:`window_units`) the model is a character tagger
    and each window's labels are its characters'."""

    def __init__(
        self,
        train_ids: list[np.ndarray],
        train_labels: list[np.ndarray],
        valid: TagEncoded,
        decoder: SpanDecoder,
        special: dict[str, int | None],
        max_length: int,
        batch_size: int,
        seed: int,
        crf_edges: np.ndarray | None = None,
        train_units: list[np.ndarray] | None = None,
    ) -> None:
        self.train_ids, self.train_labels, self.valid = train_ids, train_labels, valid
        assert crf_edges is None or len(crf_edges) == len(train_ids), "one edge pair per window"
        assert train_units is None or len(train_units) == len(train_ids), "units per window"
        self.crf_edges, self.train_units = crf_edges, train_units
        self.decoder, self.special, self.max_length = decoder, special, max_length
        self.batch_size, self.seed = batch_size, seed
        self.lengths = np.array([len(x) for x in train_ids])
        self.position = {"epoch": 0, "batch": 0}

    def collate(self, idx: np.ndarray) -> dict[str, Any]:
        b = pad_batch([self.train_ids[i] for i in idx], None, self.special["pad"] or 0)
        width = b["input_ids"].shape[1]
        if self.train_units is not None:
            units = [self.train_units[i] for i in idx]
            b["units"] = pad_units(units)  # (B, U, 4)
            b["unit_lengths"] = torch.tensor([len(u) for u in units])
            width = b["units"].shape[1]
        labels = np.full((len(idx), width), IGNORE, dtype=np.int64)
        for row, i in enumerate(idx):
            labels[row, : len(self.train_labels[i])] = self.train_labels[i]
        b["labels"] = torch.from_numpy(labels)
        if self.crf_edges is not None:
            b["open_edges"] = torch.from_numpy(self.crf_edges[idx])  # (B, 2)
        return b

    def counts(self, batch: dict[str, Any]) -> list[float]:
        return [float((batch["labels"] != IGNORE).sum())]

    def loss(
        self, model: nn.Module, batch: dict[str, Any], totals: list[float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        args = [batch["input_ids"], None, batch["attention_mask"]]
        if "units" in batch:
            args.append(batch["units"])
        logits = model(*args)  # (B, T, K), or (B, U, K) for a character tagger
        if self.crf_edges is not None:
            loss = self._crf_nll(model, logits, batch) / max(totals[0], 1.0)
            return loss, {"loss": loss.item()}
        loss = F.cross_entropy(
            logits.float().flatten(0, 1),
            batch["labels"].flatten(),
            ignore_index=IGNORE,
            reduction="sum",
        ) / max(totals[0], 1.0)
        return loss, {"loss": loss.item()}

    def _crf_nll(
        self, model: nn.Module, logits: torch.Tensor, batch: dict[str, Any]
    ) -> torch.Tensor:
        """Summed CRF NLL of the batch's windows over their content tokens."""
        crf = getattr(model, "module", model).crf  # under DDP, the wrapped model's
        labels, attention = batch["labels"], batch["attention_mask"]
        B, T = labels.shape
        device = labels.device
        edges = batch["open_edges"].to(device)
        if "units" in batch:  # a character tagger: the labels are the characters', no specials
            n = batch["unit_lengths"].to(device)
            mask = torch.arange(T, device=device)[None, :] < n[:, None]  # (B, U)
            return crf.nll(logits, labels, mask, edges[:, 0], edges[:, 1]).sum()
        lengths = attention.sum(1) if attention is not None else torch.full((B,), T, device=device)
        # Content tokens sit between [CLS] (position 0) and [SEP] (position length - 1), or
        # first when the model reads XLNet's layout (w <sep> <cls>).
        first = 0 if reads_cls_last(getattr(model, "module", model)) else 1
        mask = torch.arange(T - first, device=device)[None, :] < (lengths - 2)[:, None]
        nll = crf.nll(logits[:, first:], labels[:, first:], mask, edges[:, 0], edges[:, 1])
        return nll.sum()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return evaluate_tagging(model, self.valid, self.decoder, self.special, self.max_length)[0]


def score_tagger(
    pipe: EncoderPipeline,
    data: str | Path,
    *,
    spans_key: str | None = None,
    skip_bad_rows: bool = False,
) -> dict[str, Any]:
    """A fine-tuned tagger on a labelled file, decoding as ``tag()`` does: span P/R/F1 per type
    (exact character offsets, the CoNLL definition), token accuracy and loss, plus
    ``examples``, ``skipped_rows`` and ``unseen_labels``.

    The file is read as the model was trained (``view`` and ``spans_key`` from ``task.json``,
    ``spans_key`` overridable). Gold types the model was never trained on are reported
    (``unseen_labels``); they count as misses.
    """
    labels = pipe.require_task("tagging")  # raises unless the checkpoint is a tagger
    spec = cast(Tagging, pipe.spec)
    key = spans_key or spec.spans_key or "spans"
    read = read_spans(data, view=spec.view, spans_key=key, skip_bad_rows=skip_bad_rows)
    rows = read.rows
    known = {parse_label(label, spec.scheme)[1] for label in labels}
    unseen = Counter(t for r in rows for t, _, _ in r.spans if t not in known)
    if unseen:
        log.warning("%s: span types the model was not trained on: %s", data, dict(unseen))
    enc = encode_tagging(pipe.tokenizer, rows, labels, spec.scheme, str(data), spec.char_tags)
    max_length = pipe.checkpoint.max_length
    special = special_ids(pipe.tokenizer)
    report = evaluate_tagging(pipe.model, enc, pipe.decoder, special, max_length)[1]
    return report | {
        "examples": len(rows),
        "skipped_rows": read.skipped,
        "unseen_labels": dict(unseen),
    }


def setup_tagging(cfg: FinetuneConfig, init: Init) -> FinetuneSetup:
    """The label set (BIO or BMES tags of the training spans), the splits encoded and cut into
    training windows, the task, and a report scoring the best checkpoint's spans on the test
    split (with ``span_scores_test.png``)."""
    files = dataset_files(cfg.data.dataset)
    read = {
        s: read_spans(
            f,
            view=cfg.data.view,
            spans_key=cfg.data.spans_key,
            skip_bad_rows=cfg.data.skip_bad_rows,
        )
        for s, f in files.items()
    }
    warn_skipped(files, read)
    scheme = cfg.data.scheme
    train_rows = read["train"].rows
    covered = sum(e - s for r in train_rows for _, s, e in r.spans)
    with_o = covered < sum(len(r.text) for r in train_rows)
    labels = label_set([r.spans for r in train_rows], scheme, with_o)
    if len(labels) < 2:
        raise DataError(f"{files['train']}: no labelled spans found")
    max_length = min(cfg.data.max_length, init.config.max_position)
    chars = cfg.data.char_tags
    enc = {
        s: encode_tagging(init.tokenizer, r.rows, labels, scheme, str(files[s]), chars)
        for s, r in read.items()
    }
    special = special_ids(init.tokenizer)
    if special["cls"] is None or special["sep"] is None:
        raise CheckpointError(f"{init.path}: the tokenizer has no [CLS]/[SEP] tokens")
    train_ids, train_labels = training_windows(
        enc["train"],
        max_length,
        special["cls"],
        special["sep"],
        cls_last=isinstance(init.config, XLNetConfig),
    )
    decoder = SpanDecoder(labels, scheme)
    task = TagTask(
        train_ids,
        train_labels,
        enc["valid"],
        decoder,
        special,
        max_length,
        cfg.train.batch_size,
        cfg.train.seed,
        crf_edges=window_edges(enc["train"], max_length) if cfg.crf else None,
        train_units=window_units(enc["train"], max_length),
    )
    meta = {
        "task": "tagging",
        "labels": labels,
        "scheme": scheme,
        "max_length": max_length,
        "view": cfg.data.view,
        "spans_key": cfg.data.spans_key,
    }
    if cfg.crf:
        meta["crf"] = True  # written only when set: task.json of softmax taggers is unchanged
    if chars:
        meta["char_tags"] = True

    def report(result: FitResult) -> dict[str, Any]:
        out: dict[str, Any] = {
            "best": result.best,
            "labels": labels,
            "train_sentences": len(train_rows),
            "train_windows": len(train_ids),
        }
        if "test" in enc:
            best = load_pipeline(result.checkpoint)
            out["test"] = evaluate_tagging(best.model, enc["test"], decoder, special, max_length)[1]
            plot_span_scores(
                out["test"]["per_type"],
                result.run_dir / "span_scores_test.png",
                f"{cfg.name} (test)",
            )
        return out

    config = cast(BertConfig, init.config)
    return FinetuneSetup(
        task, lambda: tagger_model(config, labels, scheme, cfg.crf, chars), meta, report
    )
