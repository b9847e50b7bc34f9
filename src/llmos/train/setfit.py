"""SetFit-style few-shot classifiers: contrastive fine-tuning of a sentence encoder on the few
labelled examples, then a logistic-regression head on its vectors (Tunstall et al. 2022,
https://arxiv.org/abs/2209.11055).

Stage 1 moves the encoder so that texts of one label point the same way and texts of
different labels do not: SetFit's ``CosineSimilarityLoss``, the squared error between the
cosine of two texts' vectors and 1 (same label) or 0 (different labels). SetFit samples
explicit pairs (each pair two forward passes); here every pair *inside* a batch counts, and
batches are drawn P labels x K examples so that each holds positives for every label in it:
a batch of 32 texts gives 496 pairs for 32 forward passes, which is what makes a few-shot
run take a minute on a laptop CPU. Stage 2 fits scikit-learn's logistic regression on the
tuned encoder's mean-pooled vectors of the same examples.

The result is an ordinary classification checkpoint (``task.json`` ``classification``,
``pooling: mean``, the encoder's query prefix as ``text_prefix``): the logistic regression
becomes the linear ``classifier`` over the mean of the last layer, so ``llmos classify``, the
server's ``/v1/classify``, calibration and quantization read it like any fine-tuned model.
The regression is fitted on the mean vectors divided by their average length (unit-scale
features, so its ``C`` means what it means on normalised vectors) and that scale is folded
into the weights.

Training runs through the shared loop (:func:`llmos.train.loop.fit`): progress, plots and
exact resume come from it. The data state is the step number: batch ``n`` is drawn from
``seed`` and ``n`` alone.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from torch import nn

from llmos.checkpoint.io import read_checkpoint, require_unquantized, save_checkpoint
from llmos.checkpoint.task import Classification, Embedding, MaskedLM
from llmos.config.run import OptimConfig, TrainConfig
from llmos.config.setfit import SetFitConfig
from llmos.data.batching import pad_batch
from llmos.errors import ConfigError, DataError
from llmos.inference.classify import encode_texts
from llmos.inference.embed import embed_ids, pool
from llmos.models.bert import BertConfig, BertForSequenceClassification
from llmos.text.tokenizer import special_ids
from llmos.train.loop import fit
from llmos.train.runs import load_encoder

log = logging.getLogger("llmos.train")


def check_examples(examples: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The examples as ``{label: [texts]}``, or a DataError naming what is wrong."""
    if not isinstance(examples, Mapping) or len(examples) < 2:
        raise DataError("setfit needs examples of at least 2 labels ({label: [texts]})")
    out: dict[str, list[str]] = {}
    for label, texts in examples.items():
        if not isinstance(label, str) or not label.strip():
            raise DataError(f"a label must be a non-empty string, got {label!r}")
        if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
            raise DataError(f"label {label!r}: expected a non-empty list of example texts")
        bad = [t for t in texts if not isinstance(t, str) or not t.strip()]
        if bad:
            raise DataError(f"label {label!r}: an example is not a non-empty string: {bad[0]!r}")
        out[label] = list(texts)
    return out


class PairBatches:
    """Endless P x K batches of the examples for :func:`~llmos.train.loop.fit` (one
    micro-batch per step: the loss pairs every text of the batch with every other)."""

    def __init__(
        self,
        ids: list[np.ndarray],
        labels: np.ndarray,
        cfg: SetFitConfig,
        pad_id: int,
    ) -> None:
        self.ids, self.labels, self.cfg, self.pad_id = ids, labels, cfg, pad_id
        self.by_label = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
        self.position = {"step": 0}

    def batch(self, step: int) -> dict[str, Any]:
        """The examples of batch ``step`` (a function of the seed and the step alone)."""
        rng = np.random.default_rng([self.cfg.seed, step])
        n = len(self.by_label)
        chosen = rng.choice(n, size=min(self.cfg.labels_per_batch, n), replace=False)
        rows = []
        for c in chosen:
            pool_ = self.by_label[c]
            take = rng.choice(
                pool_, size=self.cfg.per_label, replace=len(pool_) < self.cfg.per_label
            )
            rows.extend(take.tolist())
        idx = np.asarray(rows, dtype=np.int64)
        b = pad_batch(
            [self.ids[i] for i in idx], [np.zeros_like(self.ids[i]) for i in idx], self.pad_id
        )
        b["labels"] = torch.from_numpy(self.labels[idx])
        b["example"] = torch.from_numpy(idx)
        return b

    def steps(self, info: Any, micro_batch: int) -> Iterator[list[dict[str, Any]]]:
        if info.world > 1:
            raise ConfigError("setfit trains on one process (a few-shot run is one machine's)")
        while True:
            step = self.position["step"]
            self.position = {"step": step + 1}
            yield [self.batch(step)]

    def counts(self, batch: dict[str, Any]) -> list[float]:
        ex = batch["example"]
        distinct = ex[:, None] != ex[None, :]
        return [float(torch.triu(distinct, 1).sum())]

    def loss(
        self, model: nn.Module, batch: dict[str, Any], totals: list[float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        mask = batch["attention_mask"]
        h = model.bert(batch["input_ids"], batch["token_type_ids"], mask)
        v = F.normalize(pool(h, mask, "mean").float(), dim=-1)
        cos = v @ v.T
        same = (batch["labels"][:, None] == batch["labels"][None, :]).float()
        ex = batch["example"]
        pairs = torch.triu(ex[:, None] != ex[None, :], 1)
        err = (cos - same)[pairs]
        loss = (err**2).sum() / max(totals[0], 1.0)
        pos = same[pairs] > 0
        return loss, {
            "loss": float((err.detach() ** 2).sum()),
            "pairs": float(pairs.sum()),
            "cos_same": float(cos.detach()[pairs][pos].sum()),
            "n_same": float(pos.sum()),
        }

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {}

    def state(self) -> dict[str, int]:
        return dict(self.position)

    def load_state(self, state: dict[str, Any]) -> None:
        self.position = {"step": int(state["step"])}


@dataclass
class SetFitResult:
    """The trained classifier: where it is, its labels, and what the run measured."""

    checkpoint: Path
    labels: tuple[str, ...]
    train_accuracy: float
    seconds: float


def train_setfit(
    encoder: str | Path,
    examples: Mapping[str, Sequence[str]],
    out: str | Path,
    cfg: SetFitConfig | None = None,
    *,
    resume: bool = False,
    run_dir: str | Path | None = None,
) -> SetFitResult:
    """Fine-tune ``encoder`` (a sentence-embedding or pretrained BERT checkpoint) on
    ``examples`` ({label: [texts]}) and write the classifier checkpoint to ``out``.

    ``run_dir`` keeps the loop's step checkpoints and metrics (default: a temporary directory
    removed at the end; give one to ``resume`` an interrupted run).
    """
    cfg = cfg or SetFitConfig()
    examples = check_examples(examples)
    t0 = time.perf_counter()
    path = Path(encoder).expanduser()
    ckpt = read_checkpoint(path)
    require_unquantized(path, ckpt.config, "SetFit fine-tuning")
    if not isinstance(ckpt.config, BertConfig):
        raise ConfigError(f"{path}: SetFit needs a BERT-style encoder, not a GPT")
    spec = ckpt.task
    if not isinstance(spec, (Embedding, MaskedLM)):
        raise ConfigError(
            f"{path}: SetFit starts from a sentence encoder or a pretrained encoder, "
            f"not a {spec.kind} model"
        )
    prefix = spec.query_prefix if isinstance(spec, Embedding) else None
    tok = ckpt.tokenizer
    labels = tuple(examples)
    texts = [t for lab in labels for t in examples[lab]]
    y = np.array([i for i, lab in enumerate(labels) for _ in examples[lab]], dtype=np.int64)
    ids, _, _ = encode_texts(tok, texts, None, cfg.max_length, prefix)
    # The head is fitted on the vectors the classifier will compute: texts read up to the
    # encoder's own length, not the shorter length the contrastive stage trains on.
    read_length = (spec.max_length if isinstance(spec, Embedding) else None) or (
        ckpt.config.max_position
    )
    full_ids, _, _ = encode_texts(tok, texts, None, read_length, prefix)
    pad_id = special_ids(tok)["pad"] or 0

    torch.manual_seed(cfg.seed)
    model = BertForSequenceClassification(ckpt.config, len(labels), pooling="mean")
    load_encoder(model, ckpt.weights(), path)
    task = PairBatches(ids, y, cfg, pad_id)
    train_cfg = TrainConfig(
        max_steps=cfg.steps,
        batch_size=min(cfg.labels_per_batch, len(labels)) * cfg.per_label,
        eval_every=0,
        save_every=max(cfg.steps // 4, 1),
        log_every=max(cfg.steps // 10, 1),
        seed=cfg.seed,
        device="auto",  # a GPU when there is one
        precision="fp32",
        num_threads=cfg.num_threads,
        progress=cfg.progress,
    )
    optim = OptimConfig(lr=cfg.lr, warmup_steps=max(cfg.steps // 10, 1), weight_decay=0.01)
    with tempfile.TemporaryDirectory(prefix="llmos-setfit-") as tmp:
        fit(
            model,
            task,
            train_cfg,
            optim,
            run_dir or tmp,
            model_config=ckpt.config,
            resume=resume,
            title="SetFit contrastive stage",
        )
    model.eval()
    types = [np.zeros_like(i) for i in full_ids]
    vectors = embed_ids(model.bert, full_ids, types, pad_id, "mean", False)
    scale = float(np.linalg.norm(vectors, axis=1).mean())
    head = LogisticRegression(C=cfg.C, max_iter=2000)
    head.fit(vectors / scale, y)
    train_accuracy = float((head.predict(vectors / scale) == y).mean())
    with torch.no_grad():
        w, b = linear_weights(head, len(labels))
        model.classifier.weight.copy_(torch.from_numpy(w / scale))
        model.classifier.bias.copy_(torch.from_numpy(b))
    meta = Classification(
        labels=labels, max_length=read_length, pooling="mean", text_prefix=prefix
    ).to_json() | {
        "init": str(path),
        "setfit": {
            "examples": {lab: len(examples[lab]) for lab in labels},
            "steps": cfg.steps,
            "batch": f"{train_cfg.batch_size} ({cfg.labels_per_batch} labels x {cfg.per_label})",
            "lr": cfg.lr,
            "C": cfg.C,
            "seed": cfg.seed,
            "train_accuracy": train_accuracy,
        },
    }
    out = save_checkpoint(out, model, ckpt.config, tok, meta)
    seconds = time.perf_counter() - t0
    log.info("SetFit: %d examples, %d labels, %.1f s -> %s", len(texts), len(labels), seconds, out)
    return SetFitResult(Path(out), labels, train_accuracy, seconds)


def linear_weights(head: LogisticRegression, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, C) weights and (K,) biases of a fitted logistic regression as K logits whose
    softmax is its ``predict_proba``: a binary one's single logit ``w.x + b`` is the pair
    ``(0, w.x + b)``."""
    coef, bias = head.coef_.astype(np.float32), head.intercept_.astype(np.float32)
    if k == 2 and coef.shape[0] == 1:
        return np.stack([np.zeros_like(coef[0]), coef[0]]), np.array([0.0, bias[0]], np.float32)
    return coef, bias
