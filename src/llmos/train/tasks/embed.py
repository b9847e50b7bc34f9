"""Retrieval embeddings fine-tuned on (query, positive) pairs (``task: embedding``): the
in-batch negatives loss of sentence-transformers' ``MultipleNegativesRankingLoss``, validation
by retrieval over the split's passages, and the report of the best checkpoint against the
encoder it started from.

The encoder is read the way the init checkpoint says it is read (its ``task.json``: pooling,
normalisation and E5's ``query: `` / ``passage: `` prefixes, or mean pooling, normalised, no
prefixes for a pretrained MLM encoder), and the fine-tuned checkpoint records the same, so
``embed(kind=...)``, ``llmos index`` and the apps read it unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmos.checkpoint.io import load_state_dict_strict, read_checkpoint
from llmos.checkpoint.task import Embedding
from llmos.config.run import FinetuneConfig
from llmos.data.batching import EpochBatches, pad_batch
from llmos.data.datasets import dataset_files, warn_skipped
from llmos.data.readers import Pair, read_pairs
from llmos.errors import DataError
from llmos.inference.classify import encode_texts
from llmos.inference.embed import embed_ids, pool
from llmos.inference.load import load_pipeline
from llmos.models.bert import BertForPreTraining
from llmos.text.tokenizer import special_ids
from llmos.train.loop import FitResult
from llmos.train.metrics import plot_retrieval, retrieval_metrics
from llmos.train.runs import FinetuneSetup, Init

log = logging.getLogger("llmos.train")

# A logit that no softmax picks: a passage that is not a negative for this query.
MASKED = -1e4


@dataclass
class EncodedPairs:
    """A split's training rows, one per (query, positive or paraphrase): token ids of each
    side, the hard negative of the row (None if it has none), and the ids of the texts
    involved, so a text that answers a query is never used as that query's negative."""

    queries: list[np.ndarray]
    positives: list[np.ndarray]
    negatives: list[np.ndarray | None]
    group: np.ndarray  # (rows,) index of the Pair each row comes from
    label: np.ndarray  # (rows,) id of the Pair's label, -1 for none
    positive_key: np.ndarray  # (rows,) id of the positive's text
    negative_key: np.ndarray  # (rows,) id of the negative's text, -1 for none
    answers: list[frozenset[int]]  # per Pair: the text ids of its positives and paraphrases


def targets(pair: Pair) -> list[tuple[str, bool]]:
    """What a pair's query should find: its positives (read as passages), then its
    paraphrases (read as queries), each as (text, read as a query)."""
    return [(t, False) for t in pair.positives] + [(t, True) for t in pair.paraphrases]


def encode_pairs(
    tokenizer: Any, pairs: list[Pair], max_length: int, query_prefix: str, passage_prefix: str
) -> EncodedPairs:
    """One training row per (query, positive or paraphrase); a Pair's hard negatives are
    handed out to its rows in turn (row j gets negative j mod n). Queries and paraphrases get
    the query prefix, positives and negatives the passage prefix. Labels become ids (-1:
    none)."""
    texts: dict[tuple[str, bool], int] = {}

    def key(target: tuple[str, bool]) -> int:
        return texts.setdefault(target, len(texts))

    def encode(side: list[tuple[str, bool]]) -> list[np.ndarray]:
        prefixed = [(query_prefix if as_query else passage_prefix) + t for t, as_query in side]
        return encode_texts(tokenizer, prefixed, None, max_length)[0]

    rows = [
        (g, x.query, target, (x.negatives[j % len(x.negatives)], False) if x.negatives else None)
        for g, x in enumerate(pairs)
        for j, target in enumerate(targets(x))
    ]
    n_ids = iter(encode([r[3] for r in rows if r[3] is not None]))
    labels = {name: i for i, name in enumerate(sorted({x.label for x in pairs if x.label}))}
    return EncodedPairs(
        queries=encode([(r[1], True) for r in rows]),
        positives=encode([r[2] for r in rows]),
        negatives=[next(n_ids) if r[3] is not None else None for r in rows],
        group=np.array([r[0] for r in rows], dtype=np.int64),
        label=np.array([labels.get(pairs[r[0]].label, -1) for r in rows], dtype=np.int64),
        positive_key=np.array([key(r[2]) for r in rows], dtype=np.int64),
        negative_key=np.array([key(r[3]) if r[3] else -1 for r in rows], dtype=np.int64),
        answers=[frozenset(map(key, targets(x))) for x in pairs],
    )


def in_batch_logits(
    q: torch.Tensor,
    p: torch.Tensor,
    n: torch.Tensor | None,
    scale: float,
    mask: torch.Tensor,
) -> torch.Tensor:
    """(B, B + M) logits of each query against every positive of the batch, then every hard
    negative: ``scale`` * cosine (the vectors are normalised here), ``mask`` True -> not a
    candidate (a passage that also answers the query)."""
    q, p = F.normalize(q, dim=-1), F.normalize(p, dim=-1)
    cands = p if n is None else torch.cat([p, F.normalize(n, dim=-1)])
    return (scale * q @ cands.T).masked_fill(mask, MASKED)


class ContrastiveTask(EpochBatches):
    """(query, positive[, negative]) rows for the shared training loop; see
    :class:`~llmos.config.run.ContrastiveConfig` for the loss."""

    def __init__(
        self,
        train: EncodedPairs,
        valid: tuple[list[np.ndarray], list[np.ndarray], list[frozenset[int]]],
        *,
        batch_size: int,
        seed: int,
        pad_id: int,
        pooling: str,
        normalize: bool,
        scale: float,
        symmetric: bool,
    ) -> None:
        self.train, self.valid = train, valid
        self.batch_size, self.seed, self.pad_id = batch_size, seed, pad_id
        self.pooling, self.normalize = pooling, normalize
        self.scale, self.symmetric = scale, symmetric
        # Bucket by the longer side, so a batch's queries and passages both pad little.
        self.lengths = np.array(
            [max(len(a), len(b)) for a, b in zip(train.queries, train.positives, strict=True)]
        )
        self.position = {"epoch": 0, "batch": 0}

    def collate(self, idx: np.ndarray) -> dict[str, Any]:
        t = self.train
        negs = [i for i in idx if t.negatives[i] is not None]
        answers = [t.answers[g] for g in t.group[idx]]
        cand_keys = [*t.positive_key[idx], *t.negative_key[negs]]
        # A candidate that answers the query is not its negative (its own positive excepted),
        # nor is another row's positive when both rows have the same label.
        label = t.label[idx]
        same = torch.from_numpy((label[:, None] == label[None, :]) & (label[:, None] >= 0))
        mask = torch.tensor(
            [[c in a and j != i for j, c in enumerate(cand_keys)] for i, a in enumerate(answers)]
        )
        mask[:, : len(idx)] |= same & ~torch.eye(len(idx), dtype=torch.bool)
        batch: dict[str, Any] = {
            "q": pad_batch([t.queries[i] for i in idx], None, self.pad_id),
            "p": pad_batch([t.positives[i] for i in idx], None, self.pad_id),
            "n": pad_batch([t.negatives[i] for i in negs], None, self.pad_id) if negs else None,
            "mask": mask,
        }
        sides = [batch[k] for k in ("q", "p", "n") if batch[k] is not None]
        batch["num_tokens"] = sum(int(b["num_tokens"]) for b in sides)  # for the tokens/s log
        if self.symmetric:  # passage -> query: a query the passage also answers is no negative
            keys = t.positive_key[idx]
            batch["mask_t"] = torch.tensor(
                [[k in a and j != i for j, a in enumerate(answers)] for i, k in enumerate(keys)]
            ) | (same & ~torch.eye(len(idx), dtype=torch.bool))
        return batch

    def counts(self, batch: dict[str, Any]) -> list[float]:
        return [float(batch["mask"].shape[0])]

    def _vectors(self, model: nn.Module, b: dict[str, Any]) -> torch.Tensor:
        h = model.bert(b["input_ids"], None, b["attention_mask"])
        return pool(h.float(), b["attention_mask"], self.pooling)

    def loss(
        self, model: nn.Module, batch: dict[str, Any], totals: list[float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        q = self._vectors(model, batch["q"])
        p = self._vectors(model, batch["p"])
        n = self._vectors(model, batch["n"]) if batch["n"] is not None else None
        logits = in_batch_logits(q, p, n, self.scale, batch["mask"])
        target = torch.arange(len(q))
        total = F.cross_entropy(logits, target, reduction="sum")
        if self.symmetric:
            back = in_batch_logits(p, q, None, self.scale, batch["mask_t"])
            total = (total + F.cross_entropy(back, target, reduction="sum")) / 2
        loss = total / totals[0]
        return loss, {"loss": loss.item()}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return score_retrieval(model, *self.valid, self.pad_id, self.pooling, self.normalize)


def retrieval_split(
    tokenizer: Any, pairs: list[Pair], max_length: int, query_prefix: str, passage_prefix: str
) -> tuple[list[np.ndarray], list[np.ndarray], list[frozenset[int]]]:
    """A split as a retrieval test: every query, the corpus of every distinct text a query
    should or should not find (positives, paraphrases, negatives), and each query's positives
    and paraphrases as indices into it."""
    corpus: dict[tuple[str, bool], int] = {}
    for x in pairs:
        for target in (*targets(x), *((t, False) for t in x.negatives)):
            corpus.setdefault(target, len(corpus))
    prefixed = [(query_prefix if as_query else passage_prefix) + t for t, as_query in corpus]
    queries = encode_texts(tokenizer, [query_prefix + x.query for x in pairs], None, max_length)
    passages = encode_texts(tokenizer, prefixed, None, max_length)
    relevant = [frozenset(corpus[t] for t in targets(x)) for x in pairs]
    return queries[0], passages[0], relevant


def score_retrieval(
    model: nn.Module,
    queries: list[np.ndarray],
    passages: list[np.ndarray],
    relevant: list[frozenset[int]],
    pad_id: int,
    pooling: str,
    normalize: bool,
) -> dict[str, float]:
    """Retrieval metrics (:func:`~llmos.train.metrics.retrieval_metrics`) of ``model``'s
    embeddings: each query ranks the whole corpus by dot product."""

    def vectors(ids: list[np.ndarray]) -> np.ndarray:
        return embed_ids(
            model.bert, ids, [np.zeros_like(x) for x in ids], pad_id, pooling, normalize
        )

    return retrieval_metrics(vectors(queries) @ vectors(passages).T, relevant)


def embedding_spec(init: Init) -> Embedding:
    """How the init checkpoint's vectors are read: its own embedding spec, or mean pooling,
    normalised, without prefixes for an encoder that has none (a pretrained MLM)."""
    spec = read_checkpoint(init.path).task
    return spec if isinstance(spec, Embedding) else Embedding()


def setup_embedding(cfg: FinetuneConfig, init: Init) -> FinetuneSetup:
    """Pairs from the dataset's splits, the contrastive task, the encoder with every weight of
    the init checkpoint (:func:`load_all`), and a report of the best checkpoint and the init
    checkpoint (as it is on disk, all its layers) side by side on the test split (with
    ``retrieval_test.png``)."""
    spec = embedding_spec(init)
    files = dataset_files(cfg.data.dataset)
    read = {s: read_pairs(f, skip_bad_rows=cfg.data.skip_bad_rows) for s, f in files.items()}
    warn_skipped(files, read)
    max_length = min(cfg.data.max_length, init.config.max_position)
    prefixes = (spec.query_prefix or "", spec.passage_prefix or "")
    train = encode_pairs(init.tokenizer, read["train"].rows, max_length, *prefixes)
    if len(train.queries) < 2:
        raise DataError(f"{files['train']}: needs at least two pairs to have negatives")
    splits = {
        s: retrieval_split(init.tokenizer, r.rows, max_length, *prefixes)
        for s, r in read.items()
        if s != "train"
    }
    pad_id = special_ids(init.tokenizer)["pad"] or 0
    task = ContrastiveTask(
        train,
        splits["valid"],
        batch_size=cfg.train.batch_size,
        seed=cfg.train.seed,
        pad_id=pad_id,
        pooling=spec.pooling,
        normalize=spec.normalize,
        scale=cfg.contrastive.scale,
        symmetric=cfg.contrastive.symmetric,
    )
    log.info(
        "embedding: %d training pairs from %d queries, %d with a hard negative",
        len(train.queries),
        len(read["train"].rows),
        sum(n is not None for n in train.negatives),
    )
    meta: dict[str, Any] = {
        "task": "embedding",
        "pooling": spec.pooling,
        "normalize": spec.normalize,
        "max_length": spec.max_length or init.config.max_position,
    }
    if spec.query_prefix:
        meta["query_prefix"] = spec.query_prefix
    if spec.passage_prefix:
        meta["passage_prefix"] = spec.passage_prefix
    meta["contrastive"] = {
        "pairs": len(train.queries),
        "scale": cfg.contrastive.scale,
        "symmetric": cfg.contrastive.symmetric,
    }

    def report(result: FitResult) -> dict[str, Any]:
        out: dict[str, Any] = {"best": result.best, "train_pairs": len(train.queries)}
        if "test" in splits:
            score = {
                name: score_retrieval(
                    load_pipeline(path).model,
                    *splits["test"],
                    pad_id,
                    spec.pooling,
                    spec.normalize,
                )
                for name, path in (("init", init.path), ("tuned", result.checkpoint))
            }
            out["test"] = score["tuned"]
            out["test_init"] = score["init"]
            out["test_queries"] = len(splits["test"][0])
            plot_retrieval(score, result.run_dir / "retrieval_test.png", f"{cfg.name} (test)")
        return out

    config = init.config
    return FinetuneSetup(task, lambda: BertForPreTraining(config), meta, report, load_all)


def load_all(model: nn.Module, weights: dict[str, torch.Tensor], path: Any) -> None:
    """Every weight of the init checkpoint; what the vectors do not read (the pooler, an MLM
    or NSP head) is kept as it is and not trained, so that no parameter is left without a
    gradient (DDP requires every trained one to get one)."""
    load_state_dict_strict(model, weights)
    for name, p in model.named_parameters():
        if not name.startswith(("bert.embeddings.", "bert.layers.")):
            p.requires_grad_(False)
