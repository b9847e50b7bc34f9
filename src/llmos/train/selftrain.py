"""Zero-shot classification with self-training: a classifier from label descriptions and
unlabelled texts, with no labelled example at all (Gera et al. 2022, "Zero-Shot Text
Classification with Self-Training", https://arxiv.org/abs/2210.17541).

1. **Teacher.** The encoder's zero-shot ``similarity+prior`` scores of every pool text
   (:class:`~llmos.inference.zeroshot.ZeroShotClassifier`'s math): the cosine between the text
   (an E5 *query*) and each label's description direction (descriptions as *passages*), less
   that label's mean cosine over the pool.
2. **Selection.** Each text's pseudo-label is its best-scored label, its margin the gap between
   the best and second-best score. Every label gets the same number of texts, ``fraction``
   times the count of the least-predicted label, its texts of largest margin: the paper's
   balanced choice of the teacher's surest predictions (a label the teacher rarely picks is not
   drowned by the others, and texts near the boundary, where the teacher is wrong most, are
   left out).
3. **Student.** A fresh sequence classifier from the same encoder (mean pooling, the encoder's
   query prefix: the checkpoint every other tool reads) is fine-tuned on the selected texts
   with one-hot targets, through the shared loop (:func:`llmos.train.loop.fit`), as PET's final
   classifier is (:mod:`llmos.train.pet`; the same batches and loss).
4. **More rounds** (``rounds`` > 1): the student's log-probabilities of the pool replace the
   teacher's scores, texts are selected again the same way, and a fresh student is trained from
   the encoder. The paper's entailment teacher is replaced by E5 similarity, the teacher llmos
   has; the paper's token masking of the selected texts is left out.

The student reads texts up to ``max_length`` (128) tokens (or the encoder's own length, if
shorter), as it was trained: its checkpoint records that length, and ``classify`` reads a
longer text in windows of it, where PET's and SetFit's classifiers read up to the encoder's
length; 128 is what was measured.

Measured (scratch runs of exactly these defaults, runs/e5-zh, on an Intel Xeon with AVX-512,
2 cores shared, 1 thread; a pool of ``random.Random(0).sample`` of 5,000 training texts with
their labels dropped; ``bench/zero_selftrain.py`` reruns it):

============  ===========================  ==============  =========  ==============
dataset       teacher (similarity+prior)    student          selected   pseudo-labels
============  ===========================  ==============  =========  ==============
sentiment-zh  valid 80.86, test 81.41 %     82.96, 82.99 %  2,338      90.5 % right
sentiment-en  valid 75.68, test 77.33 %     76.67, 78.59 %  1,564      89.6 % right
============  ===========================  ==============  =========  ==============

(sentiment-zh 400 steps, sentiment-en 300.) A second round on sentiment-en gave valid 78.66,
test 77.83 %: better on valid, worse on test than one round, so ``rounds`` defaults to 1.

Resume: a run directory holds the teacher's pool scores (``teacher.npy``) and one sub-run per
round (``round-1/``, ...). A finished round that is not the last keeps its student's pool
scores (``pool.npy``, written atomically) and drops its weights; resuming skips what is done
and continues the cut-off round from its last step checkpoint. Batch ``n`` of a round is drawn
from the seed and ``n`` alone.
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmos.checkpoint.io import Checkpoint, read_checkpoint, require_unquantized, save_checkpoint
from llmos.checkpoint.task import Classification, Embedding, MaskedLM
from llmos.config.run import OptimConfig, TrainConfig
from llmos.config.selftrain import SelfTrainConfig
from llmos.errors import ConfigError, DataError
from llmos.files import atomic_write, atomic_write_json
from llmos.inference.classify import batched_logits, encode_texts, encode_windows, mean_over_windows
from llmos.inference.load import load_pipeline
from llmos.inference.zeroshot import Embedder, ZeroShotClassifier, unit_rows
from llmos.models.bert import BertConfig, BertForSequenceClassification
from llmos.text.tokenizer import special_ids
from llmos.train.loop import fit
from llmos.train.runs import load_encoder
from llmos.train.tasks.pet import SoftLabelBatches

log = logging.getLogger("llmos.train")

METHOD = "zero-shot self-training"


@dataclass
class SelfTrainResult:
    """The trained classifier: where it is, its labels, and what the run measured."""

    checkpoint: Path
    labels: tuple[str, ...]
    pool: int
    selected: dict[str, int]  # the last round's training texts per label
    teacher_agreement: float  # the student against the zero-shot teacher's labels of the pool
    rounds: int
    seconds: float


def check_descriptions(descriptions: Mapping[str, str | Sequence[str]]) -> dict[str, list[str]]:
    """The labels' descriptions as ``{label: [descriptions]}``, or a DataError naming what is
    wrong (fewer than two labels, a label without a description)."""
    if not isinstance(descriptions, Mapping) or len(descriptions) < 2:
        raise DataError(
            "self-training needs at least 2 labels, each with a description "
            "({'pos': '正面评价', 'neg': '负面评价'})"
        )
    out: dict[str, list[str]] = {}
    for label, value in descriptions.items():
        if not isinstance(label, str) or not label.strip():
            raise DataError(f"a label must be a non-empty string, got {label!r}")
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
            raise DataError(f"label {label!r}: expected a description or a list of them")
        texts = [t.strip() for t in texts if t.strip()]
        if not texts:
            raise DataError(f"label {label!r} has no description (the teacher goes by it)")
        out[label] = texts
    return out


def teacher_scores(
    pipe: Embedder, descriptions: Mapping[str, Sequence[str]], pool: list[str], batch_size: int = 64
) -> np.ndarray:
    """(n, K) the zero-shot teacher's scores of the pool: each text's cosine to each label's
    description direction, less that label's mean cosine over the pool (``similarity`` with
    ``unlabelled=pool``, the pool embedded once)."""
    clf = ZeroShotClassifier(pipe, descriptions, method="similarity", batch_size=batch_size)
    assert clf.prototypes is not None
    x = np.asarray(pipe.embed(pool, kind="query", batch_size=batch_size), dtype=np.float32)
    # E5's vectors come unit-length from embed; normalising them again would move their last
    # bits, and with them the order of near-equal margins, away from the measured runs'
    # (float32 throughout, as there).
    if not np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5):
        x = unit_rows(x)
    cosines = x @ clf.prototypes.T  # (n, K)
    return cosines - cosines.mean(axis=0)


def select_confident(
    scores: np.ndarray, fraction: float, labels: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The balanced selection: each pool text's pseudo-label is its best-scored label and its
    margin the best score less the second best; every label gets ``int(fraction * m)`` texts
    (at least one), ``m`` the number of texts of the least-predicted label, its texts of
    largest margin first, in the order of numpy's default sort, as in the measured runs.
    (Equal margins occur in float32 scores, a few in 5,000 texts; that sort's order of them
    may differ between CPUs, which changes which batch a text falls in, not which texts are
    chosen: a stable sort would have put 6 of sentiment-zh's 2,338 texts and 2 of
    sentiment-en's 1,564 in another order than the measured runs.)

    Args:
        scores: (n, K) any scores whose larger is better (cosines, log-probabilities).
        fraction: in (0, 1].
        labels: the labels' names, for the error message.

    Returns:
        (pool rows, their pseudo-labels), label by label, each label's rows by falling margin.

    Raises:
        DataError: a label that no pool text is given (naming it).
    """
    n, k = scores.shape
    names = list(labels) if labels is not None else [str(c) for c in range(k)]
    pred = scores.argmax(axis=1)
    ranked = np.sort(scores, axis=1)
    margin = ranked[:, -1] - ranked[:, -2]
    counts = np.bincount(pred, minlength=k)
    never = [names[c] for c in range(k) if counts[c] == 0]
    if never:
        raise DataError(
            f"the teacher labels none of the {n} unlabelled texts as {', '.join(map(repr, never))}:"
            " describe that label in other words, or give more texts (some of that label)"
        )
    n_each = max(int(fraction * counts.min()), 1)
    rows, ys = [], []
    for c in range(k):
        mine = np.flatnonzero(pred == c)
        take = mine[np.argsort(-margin[mine])[:n_each]]
        rows.append(take)
        ys.append(np.full(len(take), c, dtype=np.int64))
    return np.concatenate(rows), np.concatenate(ys)


def _train_config(cfg: SelfTrainConfig) -> TrainConfig:
    return TrainConfig(
        max_steps=cfg.steps,
        batch_size=cfg.batch_size,
        eval_every=0,
        save_every=max(cfg.steps // 4, 1),
        keep_last=1,
        log_every=max(cfg.steps // 10, 1),
        seed=cfg.seed,
        device="auto",  # a GPU when there is one
        precision="auto",  # bf16 autocast where the CPU or GPU has it
        num_threads=cfg.num_threads,
        progress=cfg.progress,
    )


class _Setup:
    """What every round shares: the encoder checkpoint, its tokenizer's ids, the pool."""

    def __init__(self, path: Path, labels: tuple[str, ...], pool: list[str], cfg: SelfTrainConfig):
        self.path, self.labels, self.pool, self.cfg = path, labels, pool, cfg
        self.ckpt: Checkpoint = read_checkpoint(path)
        require_unquantized(path, self.ckpt.config, "self-training")
        if not isinstance(self.ckpt.config, BertConfig):
            raise ConfigError(f"{path}: self-training needs a BERT-style encoder, not a GPT")
        spec = self.ckpt.task
        if not isinstance(spec, (Embedding, MaskedLM)):
            raise ConfigError(
                f"{path}: self-training starts from a sentence encoder (runs/e5-zh), "
                f"not a {spec.kind} model"
            )
        self.prefix = spec.query_prefix if isinstance(spec, Embedding) else None
        own = (spec.max_length if isinstance(spec, Embedding) else None) or (
            self.ckpt.config.max_position
        )
        self.max_length = min(cfg.max_length, own)  # what the student is trained on and reads
        self.pad_id = int(special_ids(self.ckpt.tokenizer)["pad"] or 0)
        self.weights = self.ckpt.weights()
        # The pool as the student's checkpoint reads it (classify: windows of max_length).
        self.windows = encode_windows(self.ckpt.tokenizer, pool, self.max_length, self.prefix)

    def train(
        self, rows: np.ndarray, y: np.ndarray, run_dir: Path, title: str
    ) -> BertForSequenceClassification:
        """A fresh student from the encoder, trained on pool ``rows`` with one-hot ``y``."""
        cfg = self.cfg
        texts = [self.pool[i] for i in rows]
        ids, _, _ = encode_texts(self.ckpt.tokenizer, texts, None, self.max_length, self.prefix)
        targets = np.eye(len(self.labels), dtype=np.float32)[y]
        torch.manual_seed(cfg.seed)
        model = BertForSequenceClassification(self.ckpt.config, len(self.labels), pooling="mean")
        load_encoder(model, self.weights, self.path)
        task = SoftLabelBatches(ids, targets, cfg.batch_size, cfg.seed, self.pad_id)
        fit(
            model,
            task,
            _train_config(cfg),
            OptimConfig(lr=cfg.lr, warmup_steps=max(cfg.steps // 10, 1), weight_decay=0.01),
            run_dir,
            model_config=self.ckpt.config,
            resume=True,
            title=title,
        )
        return model.eval()

    def pool_log_probs(self, model: BertForSequenceClassification) -> np.ndarray:
        """(n, K) the student's label log-probabilities of the pool, as its checkpoint's
        ``classify`` computes them (long texts: the mean of their windows' logits)."""
        w = self.windows
        logits = batched_logits(model, w.ids, w.types, self.pad_id, 64)
        return mean_over_windows(logits, w.windows).double().log_softmax(-1).numpy()


def train_self_training(
    encoder: str | Path,
    descriptions: Mapping[str, str | Sequence[str]],
    unlabelled: Sequence[str],
    out: str | Path,
    cfg: SelfTrainConfig | None = None,
    *,
    resume: bool = False,
    run_dir: str | Path | None = None,
) -> SelfTrainResult:
    """Self-train a classifier from label descriptions and unlabelled texts; write it to ``out``.

    Args:
        encoder: a sentence encoder checkpoint (``runs/e5-zh``): the teacher's embeddings and
            the student's initial weights.
        descriptions: each label's description(s), ``{"pos": "正面评价", "neg": "负面评价"}``
            (several: their directions are averaged, as zero-shot ``similarity`` does).
        unlabelled: texts of the kind to classify, without labels (a few thousand; repeated
            texts count as often as they appear, as in the measured runs).
        out: where the classifier checkpoint goes (an ordinary classification checkpoint).
        run_dir: keeps the teacher's scores and each round's steps (default: a temporary
            directory removed at the end; give one to ``resume`` an interrupted run).

    Raises:
        DataError: fewer than two labels, a label without a description, no unlabelled text,
            a label the teacher (or a round's student) gives no pool text.
        ConfigError: a checkpoint that is not a BERT-style encoder, a non-empty ``run_dir``
            without ``resume``, or one that holds another run.
    """
    cfg = cfg or SelfTrainConfig()
    t0 = time.perf_counter()
    descriptions = check_descriptions(descriptions)
    labels = tuple(descriptions)
    pool = [t for t in unlabelled if isinstance(t, str) and t.strip()]
    if not pool:
        raise DataError("self-training needs unlabelled texts (the pool the teacher labels): none")
    if run_dir is not None and not resume and any(Path(run_dir).glob("*")):
        raise ConfigError(f"{run_dir} is not empty: resume it, or give another directory")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)  # the teacher's embedding too, not only fit's
    setup = _Setup(Path(encoder).expanduser(), labels, pool, cfg)
    with tempfile.TemporaryDirectory(prefix="llmos-selftrain-") as tmp:
        root = Path(run_dir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        teacher = _cached(root / "teacher.npy", lambda: _teacher(setup, descriptions))
        if teacher.shape != (len(pool), len(labels)):
            raise ConfigError(
                f"{root} holds another run (its teacher scored {teacher.shape[0]} texts "
                f"x {teacher.shape[1]} labels): give another directory"
            )
        scores, history = teacher, []
        model: BertForSequenceClassification | None = None
        for r in range(1, cfg.rounds + 1):
            rows, y = select_confident(scores, cfg.fraction, labels)
            sub = root / f"round-{r}"
            selected = {lab: int((y == c).sum()) for c, lab in enumerate(labels)}
            if r == cfg.rounds or not (sub / "pool.npy").is_file():
                sub.mkdir(parents=True, exist_ok=True)
                atomic_write_json(sub / "selected.json", {"per_label": selected})
                model = setup.train(rows, y, sub, f"self-training, round {r} of {cfg.rounds}")
                student = _cached(sub / "pool.npy", lambda m=model: setup.pool_log_probs(m))
                if r < cfg.rounds:  # the scores are all the next round needs
                    for kept in ("checkpoint", "checkpoints"):
                        shutil.rmtree(sub / kept, ignore_errors=True)
            else:
                student = np.load(sub / "pool.npy")
            agreement = float((student.argmax(1) == scores.argmax(1)).mean())
            history.append({"selected": selected, "agreement": agreement})
            log.info("self-training round %d: %s selected, agreement %.3f", r, selected, agreement)
            scores = student
        teacher_agreement = float((scores.argmax(1) == teacher.argmax(1)).mean())
        assert model is not None  # the last round always trains (or resumes) its student
        meta = _meta(setup, descriptions, history, teacher_agreement)
        save_checkpoint(out, model, setup.ckpt.config, setup.ckpt.tokenizer, meta)
    seconds = time.perf_counter() - t0
    log.info("self-training: pool %d, %d rounds, %.1f s -> %s", len(pool), cfg.rounds, seconds, out)
    return SelfTrainResult(
        Path(out), labels, len(pool), selected, teacher_agreement, cfg.rounds, seconds
    )


def _teacher(setup: _Setup, descriptions: dict[str, list[str]]) -> np.ndarray:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = load_pipeline(setup.ckpt, device=device)
    return teacher_scores(pipe, descriptions, setup.pool)  # type: ignore[arg-type]


def _cached(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``path``'s array, or ``compute()``'s, written there atomically (a resumed run's)."""
    if path.is_file():
        return np.load(path)
    value = compute()
    buf = io.BytesIO()
    np.save(buf, value)
    atomic_write(path, buf.getvalue())
    return value


def _meta(
    setup: _Setup,
    descriptions: dict[str, list[str]],
    history: list[dict[str, Any]],
    teacher_agreement: float,
) -> dict[str, Any]:
    cfg = setup.cfg
    return Classification(
        labels=setup.labels, max_length=setup.max_length, pooling="mean", text_prefix=setup.prefix
    ).to_json() | {
        "init": str(setup.path),
        "self_training": {
            "method": METHOD,
            "descriptions": descriptions,
            "unlabelled": len(setup.pool),
            "selected": history[-1]["selected"],
            "fraction": cfg.fraction,
            "rounds": cfg.rounds,
            "steps": cfg.steps,
            "lr": cfg.lr,
            "seed": cfg.seed,
            "teacher_agreement": teacher_agreement,
            "per_round": history,
        },
    }
