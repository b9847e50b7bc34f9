"""PET and iPET: few-shot classifiers from cloze patterns on a masked LM (Schick and Schütze
2021, "Exploiting Cloze Questions for Few Shot Text Classification and Natural Language
Inference", https://arxiv.org/abs/2001.07676).

A pattern–verbalizer pair (PVP) turns classification into the masked LM's own task: the text
goes into a pattern with a mask slot (``{text}。总之很[MASK]。``) and each label has a
verbalizer, a word of one piece (好 / 差), whose score at the mask is the label's (the zero-shot
``cloze`` method of :mod:`llmos.inference.zeroshot`; the same scoring, the same checks). A run
given no verbalizers chooses them from the examples (:mod:`llmos.inference.verbalizers`): the
words the masked LM expects at the mask for one label's examples more than for the others',
which is what a task with forty intents needs.

1. **Few-shot step.** For each pattern (and each of ``models_per_pattern`` seeds) the whole
   masked LM is fine-tuned on the labelled examples: the loss is the cross-entropy of the
   softmax over the labels' verbalizer scores (a label's score is the log of the mean
   probability of its verbalizers, as in zero-shot scoring). Starting from the MLM head's own
   knowledge of 好 and 差 is what lets a few dozen examples go far.
2. **Soft labels.** Each trained model scores the unlabelled pool; the ensemble is the mean
   of the models' label log-probabilities (PET also offers weighting each model by its
   accuracy on the training set before training; with a few examples per label that
   accuracy says little, and the paper's uniform ensemble is within a point of it), and a
   softmax at temperature 2 (PET's) makes soft labels.
3. **Distillation.** A plain sequence classifier from the same encoder (mean pooling, the
   encoder's query prefix: the checkpoint every other tool reads) is trained on the pool's
   soft labels (cross-entropy against them) and the labelled examples (one-hot).

iPET (``generations`` > 0) repeats step 1 in generations: generation g trains each model
again from the original masked LM on the labelled examples plus pool texts that the previous
generation's *other* models labelled, ``growth ** g`` times the labelled set in all, balanced
across labels and drawn with probability proportional to the ensemble's confidence (the
paper's scheme, with all other models as the labelling ensemble instead of a random subset
of them). The last generation's ensemble soft-labels the pool for step 3.

PET's auxiliary language modelling (``mlm_weight`` a > 0; the paper's section 3.1, where
a = 1e-4) guards step 1 against forgetting language modelling on a few examples: each step
also draws ``batch_size`` pool texts (the labelled batch's size, as the reference
implementation's defaults; seeded by the model's seed and the step, so resuming draws the
same), put into the model's pattern as the reference implementation feeds them, masks them
as BERT pretraining does (``mlm_probability``, 15 %, then 80/10/10; the pattern's own [MASK]
stays and is no target), and the loss is ``(1 - a)`` times the cloze cross-entropy plus
``a`` times the mean masked-LM cross-entropy; metrics.jsonl logs both (``cloze_loss``,
``mlm_loss``). The paper reports it helps at 10 examples and hurts at 50 and more. Off by
default (0: the step is exactly the plain one).

Every model trains through the shared loop (:func:`llmos.train.loop.fit`): progress, plots
and exact resume come from it. A run directory holds one sub-run per model and its pool
scores (``pool.npy``, written atomically once the model is done), then ``distill/``; resuming
skips the models whose scores exist and resumes the one that was cut off. Batch ``n`` of a
model is drawn from its seed and ``n`` alone.
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmos.checkpoint.io import (
    Checkpoint,
    load_state_dict_strict,
    read_checkpoint,
    require_unquantized,
    save_checkpoint,
)
from llmos.checkpoint.task import Classification, Embedding, MaskedLM
from llmos.config.pet import PetConfig
from llmos.config.run import OptimConfig, TrainConfig
from llmos.data.batching import pad_batch, run_length_sorted
from llmos.errors import ConfigError, DataError
from llmos.files import atomic_write, atomic_write_json
from llmos.inference import cloze
from llmos.inference.classify import encode_texts
from llmos.inference.verbalizers import VerbalizerSearch, search_verbalizers
from llmos.inference.zeroshot import Cloze, softmax
from llmos.models.bert import BertConfig, BertForPreTraining, BertForSequenceClassification
from llmos.text.tokenizer import special_ids
from llmos.train.loop import fit
from llmos.train.runs import load_encoder
from llmos.train.setfit import check_examples
from llmos.train.tasks.mlm import special_ids_for_mlm
from llmos.train.tasks.pet import (
    AuxiliaryMLM,
    ClozeBatches,
    ModelScorer,
    SoftLabelBatches,
    pseudo_labelled,
)

log = logging.getLogger("llmos.train")


@dataclass
class PetResult:
    """The trained classifier: where it is, its labels, and what the run measured."""

    checkpoint: Path
    labels: tuple[str, ...]
    pool: int
    models: int
    pool_agreement: float  # the distilled classifier against the ensemble's labels of the pool
    seconds: float
    verbalizers: dict[str, list[str]]  # given, or found from the examples
    verbalizers_found: bool = False


def _train_config(steps: int, batch: int, cfg: PetConfig, seed: int) -> TrainConfig:
    return TrainConfig(
        max_steps=steps,
        batch_size=batch,
        eval_every=0,
        save_every=max(steps // 4, 1),
        keep_last=1,
        log_every=max(steps // 10, 1),
        seed=seed,
        device="auto",  # a GPU when there is one
        precision="auto",  # bf16 autocast where the CPU or GPU has it
        num_threads=cfg.num_threads,
        progress=cfg.progress,
    )


class _Setup:
    """What every model of a run shares: the masked LM checkpoint, its tokenizer's ids, the
    examples and the pool."""

    def __init__(
        self,
        path: Path,
        examples: dict[str, list[str]],
        unlabelled: list[str],
        patterns: list[str],
        verbalizers: Mapping[str, Sequence[str]] | None,
        cfg: PetConfig,
    ) -> None:
        self.path, self.cfg = path, cfg
        self.ckpt: Checkpoint = read_checkpoint(path)
        require_unquantized(path, self.ckpt.config, "PET")
        config = self.ckpt.config
        if not isinstance(config, BertConfig) or not isinstance(
            self.ckpt.task, (Embedding, MaskedLM)
        ):
            raise ConfigError(f"{path}: PET needs a BERT-style masked LM (a pretrained encoder)")
        ids = special_ids(self.ckpt.tokenizer)
        if config.heads == "none" or ids["mask"] is None:
            raise ConfigError(
                f"{path}: this encoder has no masked-LM head, which PET's patterns are read "
                "with (give e5-zh one with `llmos pretrain --config "
                "configs/pretrain/e5-zh-mlm.yaml`, then use runs/e5-zh-mlm/checkpoint)"
            )
        self.mask_id, self.pad_id = int(ids["mask"]), int(ids["pad"] or 0)
        self.labels = tuple(examples)
        self.weights = self.ckpt.weights()
        fresh = self._scorer(self.fresh_mlm())  # the masked LM as it is, before any step
        self.found: VerbalizerSearch | None = None
        if verbalizers is None:  # chosen from the examples
            self.found = search_verbalizers(
                fresh,
                self.ckpt.tokenizer,
                examples,
                patterns,
                per_label=cfg.verbalizers_per_label,
            )
            verbalizers = self.found.verbalizers
        unknown = [lab for lab in verbalizers if lab not in examples]
        missing = [lab for lab in self.labels if lab not in verbalizers]
        if unknown or missing:
            raise DataError(
                "every label needs a verbalizer and every verbalizer a label with examples: "
                + (f"no verbalizer for {missing}" if missing else f"no examples of {unknown}")
            )
        self.verbalizers = {lab: list(verbalizers[lab]) for lab in self.labels}
        self.patterns = patterns
        self.texts = [t for lab in self.labels for t in examples[lab]]
        self.y = np.array(
            [i for i, lab in enumerate(self.labels) for _ in examples[lab]], dtype=np.int64
        )
        # The checks of zero-shot cloze (patterns, one-piece verbalizers), on the fresh head.
        self.clozes = [Cloze(fresh, self.verbalizers, p) for p in patterns]
        pool = list(dict.fromkeys(unlabelled))
        if len(pool) > cfg.max_unlabelled:
            keep = np.random.default_rng(cfg.seed).choice(len(pool), cfg.max_unlabelled, False)
            pool = [pool[i] for i in sorted(keep)]
        self.pool = pool

    def fresh_mlm(self) -> BertForPreTraining:
        model = BertForPreTraining(self.ckpt.config)
        load_state_dict_strict(model, self.weights)
        return model

    def _scorer(self, model: BertForPreTraining) -> ModelScorer:
        return ModelScorer(
            model, self.ckpt.tokenizer, self.mask_id, self.pad_id, self.cfg.max_length
        )

    def _auxiliary(self, pattern: int, seed: int) -> AuxiliaryMLM | None:
        """PET's auxiliary masked-LM batches over the pool put into ``pattern`` (None when
        ``mlm_weight`` is 0)."""
        if not self.cfg.mlm_weight:
            return None
        tok = self.ckpt.tokenizer
        filled = [
            cloze.fill(self.patterns[pattern], t, self.clozes[pattern].mask_token)
            for t in self.pool
        ]
        inputs, _, _ = cloze.encode_cloze(tok, filled, self.mask_id, self.cfg.max_length)
        return AuxiliaryMLM(
            inputs,
            special_ids_for_mlm(tok),
            self.cfg.mlm_weight,
            self.cfg.mlm_probability,
            self.cfg.batch_size,
            seed,
        )

    def train_pvp(
        self, pattern: int, texts: list[str], y: np.ndarray, seed: int, run_dir: Path
    ) -> np.ndarray:
        """Fine-tune the masked LM on ``texts`` in pattern ``pattern``; return its (n, K)
        label log-probabilities of the pool (kept in ``run_dir/pool.npy``)."""
        done = run_dir / "pool.npy"
        if done.is_file():
            return np.load(done)
        torch.manual_seed(seed)
        model = self.fresh_mlm()
        c = self.clozes[pattern]
        filled = [cloze.fill(self.patterns[pattern], t, c.mask_token) for t in texts]
        inputs, positions, _ = cloze.encode_cloze(
            self.ckpt.tokenizer, filled, self.mask_id, self.cfg.max_length
        )
        task = ClozeBatches(
            inputs,
            positions,
            y,
            c.piece_ids,
            c.owner,
            self.cfg.batch_size,
            seed,
            self.pad_id,
            self._auxiliary(pattern, seed),
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        counts = np.bincount(y, minlength=len(self.labels)).tolist()
        atomic_write_json(
            run_dir / "examples.json",
            {
                "pattern": self.patterns[pattern],
                "seed": seed,
                "per_label": dict(zip(self.labels, counts, strict=True)),
                "pseudo_labelled": len(y) - len(self.y),
            },
        )
        fit(
            model,
            task,
            _train_config(self.cfg.steps, self.cfg.batch_size, self.cfg, seed),
            OptimConfig(
                lr=self.cfg.lr, warmup_steps=max(self.cfg.steps // 10, 1), weight_decay=0.01
            ),
            run_dir,
            model_config=self.ckpt.config,
            resume=True,
            title=f"PET, pattern {pattern + 1}, seed {seed}",
        )
        model.eval()
        scores = Cloze(self._scorer(model), self.verbalizers, self.patterns[pattern]).scores(
            self.pool
        )
        buf = io.BytesIO()
        np.save(buf, scores)
        atomic_write(done, buf.getvalue())
        # The scores are all the ensemble needs: the model's weights (130 MB and more, with
        # the optimizer's state three times that) go; metrics.jsonl and loss.png stay.
        for kept in ("checkpoint", "checkpoints"):
            shutil.rmtree(run_dir / kept, ignore_errors=True)
        return scores


def train_pet(
    mlm: str | Path,
    examples: Mapping[str, Sequence[str]],
    unlabelled: Sequence[str],
    patterns: str | Sequence[str],
    verbalizers: Mapping[str, Sequence[str]] | None,
    out: str | Path,
    cfg: PetConfig | None = None,
    *,
    resume: bool = False,
    run_dir: str | Path | None = None,
) -> PetResult:
    """Train a PET (``cfg.generations`` 0) or iPET classifier and write it to ``out``.

    Args:
        mlm: a BERT-style checkpoint with a masked-LM head (``runs/e5-zh-mlm/checkpoint``).
        examples: ``{label: [texts]}``, the few labelled examples.
        unlabelled: texts of the same kind without labels (the pool PET soft-labels).
        patterns: one pattern or several, each with ``{text}`` and ``[MASK]`` once.
        verbalizers: each label's verbalizer word(s), one piece each; None chooses
            ``cfg.verbalizers_per_label`` per label from the examples
            (:func:`llmos.inference.verbalizers.search_verbalizers`; the result's
            ``verbalizers`` says which).
        out: where the classifier checkpoint goes (an ordinary classification checkpoint).
        run_dir: keeps each model's steps and pool scores (default: a temporary directory
            removed at the end; give one to ``resume`` an interrupted run).

    Raises:
        DataError: bad examples, a label without a verbalizer (or the reverse), an empty pool.
        ConfigError: a checkpoint without a masked-LM head.
        LlmosError: a bad pattern or a verbalizer of several pieces (named).
    """
    t0 = time.perf_counter()
    examples = check_examples(examples)
    cfg = (cfg or PetConfig()).for_labels(len(examples))
    pool = [t for t in unlabelled if isinstance(t, str) and t.strip()]
    if not pool:
        raise DataError("PET needs unlabelled texts (the pool its ensemble labels): none given")
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    if not patterns:
        raise DataError("PET needs at least one pattern ('{text} All in all, it was [MASK].')")
    if run_dir is not None and not resume and any(Path(run_dir).glob("*")):
        raise ConfigError(f"{run_dir} is not empty: resume it, or give another directory")
    path = Path(mlm).expanduser()
    setup = _Setup(path, examples, pool, patterns, verbalizers, cfg)
    with tempfile.TemporaryDirectory(prefix="llmos-pet-") as tmp:
        root = Path(run_dir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        scores = _generations(setup, root)
        ensemble = np.mean(scores, axis=0)  # (n, K) mean label log-probabilities
        result = _distill(setup, ensemble, root / "distill", Path(out))
    seconds = time.perf_counter() - t0
    log.info("PET: %d models, pool %d, %.1f s -> %s", len(scores), len(setup.pool), seconds, out)
    return PetResult(
        Path(out),
        setup.labels,
        len(setup.pool),
        len(scores),
        result,
        seconds,
        setup.verbalizers,
        setup.found is not None,
    )


def _generations(setup: _Setup, root: Path) -> list[np.ndarray]:
    """Each model of the last generation's pool scores, training every generation."""
    cfg = setup.cfg
    k = len(setup.labels)
    previous: list[np.ndarray] = []
    for gen in range(cfg.generations + 1):
        current = []
        names = [(p, r) for p in range(len(setup.patterns)) for r in range(cfg.models_per_pattern)]
        for j, (p, r) in enumerate(names):
            texts, y = setup.texts, setup.y
            seed = cfg.seed + 1000 * gen + 100 * p + r
            if gen:
                others = [s for i, s in enumerate(previous) if i != j] or previous
                total = len(setup.y) * cfg.growth**gen  # the labelled set grows by `growth`
                per_label = np.maximum(
                    np.round(total / k - np.bincount(setup.y, minlength=k)), 0
                ).astype(np.int64)
                rows, labels = pseudo_labelled(np.mean(others, axis=0), per_label, seed)
                texts = texts + [setup.pool[i] for i in rows]
                y = np.concatenate([setup.y, labels])
                log.info("iPET generation %d, model %d: %d examples", gen, j + 1, len(y))
            current.append(setup.train_pvp(p, texts, y, seed, root / f"g{gen}-p{p}-r{r}"))
        previous = current
    return previous


def _distill(setup: _Setup, ensemble: np.ndarray, run_dir: Path, out: Path) -> float:
    """Train the final sequence classifier on the pool's soft labels and the labelled
    examples; write it to ``out``; return its agreement with the ensemble on the pool."""
    cfg, ckpt = setup.cfg, setup.ckpt
    k = len(setup.labels)
    soft = softmax(ensemble / cfg.temperature)
    hard = np.eye(k, dtype=np.float32)[setup.y]
    spec = ckpt.task
    prefix = spec.query_prefix if isinstance(spec, Embedding) else None
    texts = setup.pool + setup.texts
    ids, _, _ = encode_texts(ckpt.tokenizer, texts, None, cfg.max_length, prefix)
    torch.manual_seed(cfg.seed)
    model = BertForSequenceClassification(ckpt.config, k, pooling="mean")
    load_encoder(model, setup.weights, setup.path)
    if cfg.distill_steps:
        task = SoftLabelBatches(
            ids, np.concatenate([soft, hard]), cfg.distill_batch, cfg.seed, setup.pad_id
        )
        fit(
            model,
            task,
            _train_config(cfg.distill_steps, cfg.distill_batch, cfg, cfg.seed),
            OptimConfig(
                lr=cfg.distill_lr, warmup_steps=max(cfg.distill_steps // 10, 1), weight_decay=0.01
            ),
            run_dir,
            model_config=ckpt.config,
            resume=True,
            title="PET: the final classifier on the ensemble's soft labels",
        )
    model.eval()
    agreement = _agreement(model, ids[: len(setup.pool)], ensemble.argmax(-1), setup.pad_id)
    read_length = (spec.max_length if isinstance(spec, Embedding) else None) or (
        ckpt.config.max_position
    )
    meta = Classification(
        labels=setup.labels, max_length=read_length, pooling="mean", text_prefix=prefix
    ).to_json() | {
        "init": str(setup.path),
        "pet": {
            "examples": {lab: int((setup.y == i).sum()) for i, lab in enumerate(setup.labels)},
            "patterns": setup.patterns,
            "verbalizers": setup.verbalizers,
            "verbalizers_found": setup.found is not None,
            "unlabelled": len(setup.pool),
            "models": len(setup.patterns) * cfg.models_per_pattern,
            "generations": cfg.generations,
            "steps": cfg.steps,
            "lr": cfg.lr,
            "distill_steps": cfg.distill_steps,
            "distill_lr": cfg.distill_lr,
            "temperature": cfg.temperature,
            "mlm_weight": cfg.mlm_weight,
            "seed": cfg.seed,
            "pool_agreement": agreement,
        },
    }
    save_checkpoint(out, model, ckpt.config, ckpt.tokenizer, meta)
    return agreement


@torch.inference_mode()
def _agreement(
    model: BertForSequenceClassification, ids: list[np.ndarray], want: np.ndarray, pad_id: int
) -> float:
    """Share of ``ids`` the classifier labels as ``want`` does."""
    if not ids:
        return 0.0
    device = next(model.parameters()).device

    def pad(idx: np.ndarray) -> dict[str, Any]:
        return pad_batch([ids[j] for j in idx], None, pad_id)

    def forward(b: dict[str, Any]) -> list[int]:
        mask = b["attention_mask"]
        logits = model(
            b["input_ids"].to(device), None, mask.to(device) if mask is not None else None
        )
        return logits.argmax(-1).cpu().tolist()

    got = np.array(run_length_sorted(ids, 64, pad, forward))
    return float((got == want).mean())
