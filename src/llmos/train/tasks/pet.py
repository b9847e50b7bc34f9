"""The pieces of PET's training (:mod:`llmos.train.pet`): a masked LM in memory scored as the
zero-shot ``cloze`` method scores a pipeline, the few-shot step's batches and loss (the
cross-entropy of the labels' verbalizer scores at the mask, with PET's optional auxiliary
masked-LM loss on unlabelled texts), the distillation step's batches and loss (cross-entropy
against soft labels), and iPET's choice of pseudo-labelled examples.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from llmos.data.batching import pad_batch
from llmos.data.mlm import SpecialIds, mask_tokens
from llmos.errors import ConfigError
from llmos.inference import cloze
from llmos.inference.zeroshot import softmax
from llmos.models.bert import BertForPreTraining


class ModelScorer:
    """A masked LM in memory, as :class:`~llmos.inference.zeroshot.Cloze` reads a pipeline:
    its head's log-probabilities of some pieces at the mask of filled patterns."""

    has_mlm_head = True

    def __init__(
        self, model: BertForPreTraining, tok: Tokenizer, mask_id: int, pad_id: int, max_length: int
    ) -> None:
        self.model, self.tok = model, tok
        self.mask_id, self.pad_id, self.max_length = mask_id, pad_id, max_length
        self.mask_token = tok.id_to_token(mask_id)

    def word_piece(self, word: str) -> int | None:
        return cloze.word_piece(self.tok, word)

    def mask_scores(
        self, texts: list[str], token_ids: Sequence[int], batch_size: int = 32
    ) -> np.ndarray:
        inputs, positions, _ = cloze.encode_cloze(self.tok, texts, self.mask_id, self.max_length)
        self.model.eval()
        return cloze.mask_log_probs(
            self.model, inputs, positions, token_ids, self.pad_id, batch_size
        )


def label_logits(logits: torch.Tensor, pieces: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
    """(B, K) each label's score from (B, V) MLM logits at the mask: the log of the mean
    softmax weight of its verbalizer pieces, up to the row's log-normaliser (which a softmax
    over the labels cancels)."""
    chosen = logits.index_select(1, pieces)  # (B, P)
    k = int(owner.max()) + 1
    cols = []
    for c in range(k):
        mine = chosen[:, owner == c]
        cols.append(torch.logsumexp(mine, dim=-1) - math.log(mine.size(1)))
    return torch.stack(cols, dim=1)


# Rows per micro-batch: a step's examples are sorted by length and cut into groups of this
# many, each padded only to its own longest row. Sentiment-zh reviews run from 21 tokens (first
# quartile) to 120 (ninth decile), so one padded batch of 16 spends most of its work on padding.
# The loop normalises every group's loss by the step's total, so the gradient is the batch's.
LENGTH_GROUP = 4


class _Stream(ABC):
    """Endless steps of ``batch_size`` rows drawn without replacement (a function of the seed
    and the step alone), each step's rows sorted by length into micro-batches of
    :data:`LENGTH_GROUP` (:func:`~llmos.train.loop.fit`'s task protocol). A subclass pads
    the rows of one micro-batch (:meth:`micro_batch`)."""

    def __init__(self, sequences: Sequence[np.ndarray], batch_size: int, seed: int) -> None:
        self.lengths = np.array([len(x) for x in sequences])
        self.batch_size, self.seed = batch_size, seed
        self.position = {"step": 0}

    @abstractmethod
    def micro_batch(self, rows: np.ndarray) -> dict[str, Any]:
        """The padded micro-batch of ``rows`` (indexes into the sequences)."""

    def batches(self, step: int) -> list[dict[str, Any]]:
        """Step ``step``'s micro-batches."""
        n = len(self.lengths)
        idx = np.random.default_rng([self.seed, step]).choice(
            n, size=min(self.batch_size, n), replace=False
        )
        idx = idx[np.argsort(self.lengths[idx], kind="stable")]
        return [
            self.micro_batch(idx[i : i + LENGTH_GROUP]) for i in range(0, len(idx), LENGTH_GROUP)
        ]

    def steps(self, info: Any, micro_batch: int) -> Iterator[list[dict[str, Any]]]:
        if info.world > 1:
            raise ConfigError("PET trains on one process (a few-shot run is one machine's)")
        while True:
            step = self.position["step"]
            self.position = {"step": step + 1}
            yield self.batches(step)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {}

    def state(self) -> dict[str, int]:
        return dict(self.position)

    def load_state(self, state: dict[str, Any]) -> None:
        self.position = {"step": int(state["step"])}


class AuxiliaryMLM:
    """PET's auxiliary language modelling (Schick and Schütze 2021, section 3.1): each step
    also draws ``batch_size`` unlabelled texts, masks them as BERT pretraining does
    (:func:`~llmos.data.mlm.mask_tokens`: ``mask_prob`` of the tokens, 80/10/10) and adds
    ``weight`` times their masked-LM cross-entropy to the cloze loss, which keeps
    ``1 - weight`` of its own.

    ``inputs`` are the texts as the few-shot step reads them, put into the pattern (as in the
    reference implementation, whose unlabelled batches go through the same PVP encoding as
    the labelled ones: https://github.com/timoschick/pet/blob/master/pet/wrapper.py); the
    pattern's own [MASK] stays and is no target. A step's rows and masks are a function of
    the seed and the step alone, so resuming draws the same ones.
    """

    def __init__(
        self,
        inputs: Sequence[np.ndarray],
        sp: SpecialIds,
        weight: float,
        mask_prob: float,
        batch_size: int,
        seed: int,
    ) -> None:
        assert 0 < weight < 1 and inputs
        self.inputs, self.sp = inputs, sp
        self.weight, self.mask_prob = weight, mask_prob
        self.lengths = np.array([len(x) for x in inputs])
        self.batch_size, self.seed = batch_size, seed

    def batches(self, step: int) -> list[dict[str, Any]]:
        """Step ``step``'s masked micro-batches (sorted by length, :data:`LENGTH_GROUP` rows
        each; a micro-batch where no token was picked is left out)."""
        rng = np.random.default_rng([self.seed, step, 1])  # apart from the labelled rows' draw
        n = len(self.inputs)
        idx = rng.choice(n, size=min(self.batch_size, n), replace=False)
        idx = idx[np.argsort(self.lengths[idx], kind="stable")]
        out = []
        for i in range(0, len(idx), LENGTH_GROUP):
            group = idx[i : i + LENGTH_GROUP]
            rows = [
                mask_tokens(self.inputs[j], self.sp, self.mask_prob, rng, (self.sp.mask,))
                for j in group
            ]
            if not any(len(pos) for _, pos, _ in rows):
                continue
            b = pad_batch([ids for ids, _, _ in rows], None, self.sp.pad)
            T = b["input_ids"].size(1)  # type: ignore[union-attr]
            b["mlm_positions"] = torch.from_numpy(
                np.concatenate([pos + r * T for r, (_, pos, _) in enumerate(rows)])
            )  # (M,) flat indices into B*T
            b["mlm_labels"] = torch.from_numpy(np.concatenate([lab for _, _, lab in rows]))
            b["rows"] = torch.from_numpy(group)
            out.append(b)
        return out

    def loss(
        self, model: nn.Module, batch: dict[str, Any], total: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``weight`` times the micro-batch's share of the step's mean masked-LM
        cross-entropy (``total``: the step's masked tokens)."""
        out = model(
            batch["input_ids"], None, batch["attention_mask"], mlm_positions=batch["mlm_positions"]
        )
        mlm = F.cross_entropy(out.mlm_logits.float(), batch["mlm_labels"], reduction="sum")
        mlm = mlm / max(total, 1.0)
        part = float(mlm.detach())
        return self.weight * mlm, {"loss": self.weight * part, "mlm_loss": part}


class ClozeBatches(_Stream):
    """The few-shot step's data and loss: labelled examples put into one pattern; the loss is
    the cross-entropy of the softmax over the labels' verbalizer scores at the mask. With
    ``aux`` (PET's auxiliary language modelling), each step also holds ``aux``'s masked
    micro-batches and the loss is ``(1 - a) * cloze + a * mlm`` (``a``: ``aux.weight``), both
    parts logged (``cloze_loss``, ``mlm_loss``)."""

    def __init__(
        self,
        inputs: list[np.ndarray],
        positions: list[int],
        labels: np.ndarray,
        pieces: Sequence[int],
        owner: Sequence[int],
        batch_size: int,
        seed: int,
        pad_id: int,
        aux: AuxiliaryMLM | None = None,
    ) -> None:
        super().__init__(inputs, batch_size, seed)
        self.inputs, self.positions, self.labels = inputs, positions, labels
        self.pieces = torch.tensor(list(pieces))
        self.owner = torch.tensor(list(owner))
        self.pad_id, self.aux = pad_id, aux

    def batches(self, step: int) -> list[dict[str, Any]]:
        labelled = super().batches(step)
        return labelled + (self.aux.batches(step) if self.aux is not None else [])

    def micro_batch(self, rows: np.ndarray) -> dict[str, Any]:
        b = pad_batch([self.inputs[i] for i in rows], None, self.pad_id)
        T = b["input_ids"].size(1)  # type: ignore[union-attr]
        b["positions"] = torch.tensor([r * T + self.positions[i] for r, i in enumerate(rows)])
        b["labels"] = torch.from_numpy(self.labels[rows])
        b["rows"] = torch.from_numpy(rows)
        return b

    def counts(self, batch: dict[str, Any]) -> list[float]:
        if self.aux is None:
            return [float(len(batch["labels"]))]
        if "mlm_labels" in batch:
            return [0.0, float(batch["mlm_labels"].numel())]
        return [float(len(batch["labels"])), 0.0]

    def loss(
        self, model: nn.Module, batch: dict[str, Any], totals: list[float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        if "mlm_labels" in batch:
            assert self.aux is not None
            return self.aux.loss(model, batch, totals[1])
        out = model(
            batch["input_ids"], None, batch["attention_mask"], mlm_positions=batch["positions"]
        )
        device = out.mlm_logits.device
        scores = label_logits(out.mlm_logits.float(), self.pieces.to(device), self.owner.to(device))
        ce = F.cross_entropy(scores, batch["labels"], reduction="sum")
        total = max(totals[0], 1.0)
        right = float((scores.detach().argmax(-1) == batch["labels"]).sum())
        part = float(ce.detach()) / total
        if self.aux is None:
            return ce / total, {"loss": part, "accuracy": right / total}
        keep = 1.0 - self.aux.weight
        logs = {"loss": keep * part, "cloze_loss": part, "accuracy": right / total}
        return keep * (ce / total), logs


class SoftLabelBatches(_Stream):
    """The distillation step's data and loss: texts with target distributions (the pool's
    soft labels, the labelled examples' one-hot rows); the loss is the cross-entropy of the
    classifier's softmax against the targets."""

    def __init__(
        self,
        ids: list[np.ndarray],
        targets: np.ndarray,
        batch_size: int,
        seed: int,
        pad_id: int,
    ) -> None:
        super().__init__(ids, batch_size, seed)
        self.ids, self.targets = ids, targets.astype(np.float32)
        self.pad_id = pad_id

    def micro_batch(self, rows: np.ndarray) -> dict[str, Any]:
        b = pad_batch(
            [self.ids[i] for i in rows], [np.zeros_like(self.ids[i]) for i in rows], self.pad_id
        )
        b["targets"] = torch.from_numpy(self.targets[rows])
        return b

    def counts(self, batch: dict[str, Any]) -> list[float]:
        return [float(len(batch["targets"]))]

    def loss(
        self, model: nn.Module, batch: dict[str, Any], totals: list[float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        logp = logits.float().log_softmax(-1)
        ce = -(batch["targets"] * logp).sum()
        total = max(totals[0], 1.0)
        agree = float((logp.detach().argmax(-1) == batch["targets"].argmax(-1)).sum())
        return ce / total, {"loss": float(ce.detach()) / total, "agreement": agree / total}


def pseudo_labelled(
    scores: np.ndarray, per_label: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """iPET's new training examples: for each label c, ``per_label[c]`` pool rows the
    ensemble assigns to c (``scores``: (n, K) log-probabilities), drawn without replacement
    with probability proportional to its confidence (all of them when there are fewer).

    Returns:
        (pool row indexes, their labels).
    """
    rng = np.random.default_rng(seed)
    probs = softmax(scores)
    best = probs.argmax(-1)
    rows, labels = [], []
    for c, want in enumerate(per_label.tolist()):
        mine = np.flatnonzero(best == c)
        if want <= 0 or not len(mine):
            continue
        if len(mine) <= want:
            take = mine
        else:
            p = probs[mine, c] / probs[mine, c].sum()
            take = rng.choice(mine, size=int(want), replace=False, p=p)
        rows.extend(take.tolist())
        labels.extend([c] * len(take))
    return np.array(rows, dtype=np.int64), np.array(labels, dtype=np.int64)
