"""What pruning needs from a fine-tuned checkpoint's task, and what it does with it besides
the surgery of :mod:`llmos.compress.prune`.

- :func:`load_prunable`: the checkpoint, checked (a BERT classifier or tagger without shared
  layers);
- :func:`task_data`: its dataset read and encoded as it was fine-tuned: importance batches and
  the per-example task loss, evaluation per split, the recovery fine-tune's data, and the test
  batches the speed-up is timed on;
- :func:`recover`: the recovery fine-tune of a pruned model (the shared loop, best step by
  validation);
- :func:`speed_report`: original vs pruned, timed by :func:`~llmos.compress.timing.compare_speed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmos.checkpoint.io import (
    Checkpoint,
    load_state_dict_strict,
    read_checkpoint,
    read_config,
)
from llmos.checkpoint.task import Classification, Tagging
from llmos.compress.prune import Batch, LossFn
from llmos.compress.timing import compare_speed
from llmos.config.model import BertConfig, GPTConfig
from llmos.config.prune import PruneConfig
from llmos.config.run import FinetuneConfig, FinetuneDataConfig, OptimConfig, TrainConfig
from llmos.data.batching import EpochBatches, length_sorted_batches, pad_batch
from llmos.data.datasets import dataset_files
from llmos.data.readers import read_classification, read_spans
from llmos.errors import CheckpointError, DataError
from llmos.inference.load import build_model, load_pipeline
from llmos.inference.tag import SpanDecoder
from llmos.text.tokenizer import special_ids
from llmos.train.runs import Init, train_head
from llmos.train.tasks.classify import ClassifyTask, encode_split, evaluate_encoded
from llmos.train.tasks.tag import (
    IGNORE,
    TagTask,
    encode_tagging,
    evaluate_tagging,
    training_windows,
)


@dataclass
class TaskData:
    """What pruning needs from a task: importance batches and loss, evaluation, recovery."""

    kind: str  # classification | tagging
    metric: str  # the headline metric of the report (accuracy | f1)
    data: FinetuneDataConfig  # how the recovery run reads the dataset
    train_task: EpochBatches  # the recovery fine-tune's data and loss
    importance_batches: list[Batch]
    loss_fn: LossFn  # per-example losses (B,)
    evaluate: Callable[[nn.Module, str], dict[str, float]]  # (model, split) -> flat metrics
    splits: list[str]  # valid, and test when the dataset has one
    bench_batches: list[Batch]  # model inputs of the test split (valid without one)
    extra_meta: dict[str, Any]


def load_prunable(path: Path) -> Checkpoint:
    """The checkpoint at ``path`` if it can be pruned (a BERT classifier or tagger whose layers
    are not shared), else a clear error."""
    # The architecture first: a GPT with an encoder's task.json would otherwise get
    # read_checkpoint's error about the task, not the one that says what pruning covers.
    if isinstance(read_config(path), GPTConfig):
        raise CheckpointError(
            f"{path}: pruning covers fine-tuned BERT encoders (classifiers, taggers); this is a GPT"
        )
    ckpt = read_checkpoint(path)
    assert isinstance(ckpt.config, BertConfig)
    if not isinstance(ckpt.task, Classification | Tagging):
        raise CheckpointError(
            f"{path}: no classification or tagging task.json; pruning needs a fine-tuned model "
            "(importance is measured with its task loss on its task data)"
        )
    if ckpt.config.share_layers:
        raise CheckpointError(
            f"{path}: this encoder shares one set of layer weights (share_layers); a head "
            "removed there would vanish from every layer, so it is not pruned"
        )
    return ckpt


def _sample(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])


def _importance_batches(task: EpochBatches, n: int, cfg: PruneConfig) -> list[Batch]:
    """``cfg.importance_examples`` training examples drawn with ``cfg.seed``, in batches of
    similar length."""
    idx = _sample(n, cfg.importance_examples, cfg.seed)
    return [task.collate(idx[b]) for b in length_sorted_batches(task.lengths[idx], cfg.batch_size)]


def _inputs(
    ids: list[np.ndarray], types: list[np.ndarray] | None, pad: int, size: int
) -> list[Batch]:
    """Model inputs of ``ids`` in batches of similar length (as inference forms them)."""
    return [
        pad_batch([ids[i] for i in b], [types[i] for i in b] if types else None, pad)
        for b in length_sorted_batches([len(x) for x in ids], size)
    ]


def _max_length(spec: Classification | Tagging, config: BertConfig) -> int:
    return min(spec.max_length or config.max_position, config.max_position)


def classification_data(
    cfg: PruneConfig, spec: Classification, config: BertConfig, tokenizer: Any, dataset: str
) -> TaskData:
    """A classifier's dataset, encoded as it was fine-tuned (labels in the checkpoint's order)."""
    files = dataset_files(dataset)
    label_key = cfg.label_key or spec.label_key or "label"
    try:
        read = {s: read_classification(f, label_key=label_key) for s, f in files.items()}
    except DataError as e:
        if repr(label_key) not in str(e):
            raise
        raise DataError(f"{e} (--label-key names the label field)") from None
    labels = list(spec.labels)  # the checkpoint's order, not the data's
    max_length = _max_length(spec, config)
    enc = {
        s: encode_split(tokenizer, r.rows, labels, max_length, str(files[s]), spec.text_prefix)
        for s, r in read.items()
    }
    pad = special_ids(tokenizer)["pad"] or 0
    train = ClassifyTask(enc["train"], enc["valid"], labels, cfg.batch_size, cfg.seed, pad)

    def loss_fn(model: nn.Module, b: Batch) -> torch.Tensor:
        logits = model(b["input_ids"], b["token_type_ids"], b["attention_mask"])
        return F.cross_entropy(logits.float(), b["labels"], reduction="none")

    def evaluate(model: nn.Module, split: str) -> dict[str, float]:
        model.eval()
        return evaluate_encoded(model, enc[split], labels, pad)[0]

    bench = enc.get("test", enc["valid"])
    return TaskData(
        kind="classification",
        metric="accuracy",
        data=FinetuneDataConfig(dataset=dataset, label_key=label_key, max_length=max_length),
        train_task=train,
        importance_batches=_importance_batches(train, len(enc["train"].labels), cfg),
        loss_fn=loss_fn,
        evaluate=evaluate,
        splits=[s for s in ("valid", "test") if s in enc],
        bench_batches=_inputs(bench.ids, bench.types, pad, cfg.batch_size),
        extra_meta={"label_key": label_key},
    )


def tagging_data(
    cfg: PruneConfig, spec: Tagging, config: BertConfig, tokenizer: Any, dataset: str
) -> TaskData:
    """A tagger's dataset, encoded as it was fine-tuned (text windows of its max_length)."""
    if spec.char_tags:
        raise CheckpointError(
            "pruning covers token taggers; this one tags characters from the tokenizer's "
            "pieces (task.json char_tags: true)"
        )
    files = dataset_files(dataset)
    scheme, view, spans_key = spec.scheme, spec.view, spec.spans_key or "spans"
    read = {s: read_spans(f, view=view, spans_key=spans_key) for s, f in files.items()}
    labels = list(spec.labels)
    max_length = _max_length(spec, config)
    enc = {
        s: encode_tagging(tokenizer, r.rows, labels, scheme, str(files[s])) for s, r in read.items()
    }
    special = special_ids(tokenizer)
    if special["cls"] is None or special["sep"] is None:
        raise CheckpointError("the checkpoint's tokenizer has no [CLS]/[SEP] tokens")
    ids, tags = training_windows(enc["train"], max_length, special["cls"], special["sep"])
    decoder = SpanDecoder(labels, scheme)
    train = TagTask(ids, tags, enc["valid"], decoder, special, max_length, cfg.batch_size, cfg.seed)

    def loss_fn(model: nn.Module, b: Batch) -> torch.Tensor:
        """Mean token loss of each text window."""
        logits = model(b["input_ids"], None, b["attention_mask"])  # (B, T, K)
        ce = F.cross_entropy(
            logits.float().transpose(1, 2), b["labels"], ignore_index=IGNORE, reduction="none"
        )  # (B, T)
        return ce.sum(1) / (b["labels"] != IGNORE).sum(1).clamp(min=1)

    def evaluate(model: nn.Module, split: str) -> dict[str, float]:
        return evaluate_tagging(model, enc[split], decoder, special, max_length)[0]

    bench_split = enc.get("test", enc["valid"])
    bench_ids, _ = training_windows(bench_split, max_length, special["cls"], special["sep"])
    data = FinetuneDataConfig(
        dataset=dataset, max_length=max_length, scheme=scheme, spans_key=spans_key, view=view
    )
    return TaskData(
        kind="tagging",
        metric="f1",
        data=data,
        train_task=train,
        importance_batches=_importance_batches(train, len(ids), cfg),
        loss_fn=loss_fn,
        evaluate=evaluate,
        splits=[s for s in ("valid", "test") if s in enc],
        bench_batches=_inputs(bench_ids, None, special["pad"] or 0, cfg.batch_size),
        extra_meta={},
    )


def task_data(cfg: PruneConfig, ckpt: Checkpoint, tokenizer: Any, dataset: str) -> TaskData:
    """The :class:`TaskData` of a checkpoint from :func:`load_prunable`."""
    assert isinstance(ckpt.config, BertConfig)
    match ckpt.task:
        case Classification():
            return classification_data(cfg, ckpt.task, ckpt.config, tokenizer, dataset)
        case Tagging():
            return tagging_data(cfg, ckpt.task, ckpt.config, tokenizer, dataset)
    raise AssertionError(f"load_prunable let a {ckpt.task.kind} checkpoint through")


def recover(
    cfg: PruneConfig,
    out: Path,
    path: Path,
    pruned: nn.Module,
    config: BertConfig,
    tokenizer: Any,
    data: TaskData,
    meta: dict[str, Any],
    metrics: dict[str, dict[str, Any]],
) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune the pruned model ``cfg.recover_steps`` steps with the shared loop, in
    ``out/recover`` (metrics, loss plot, checkpoints), and evaluate its best checkpoint into
    ``metrics``. Returns the better model by validation (the pruned model before recovery
    included) and what the report says about the run."""
    steps = cfg.recover_steps
    every = max(steps // 5, 1)
    ft = FinetuneConfig(
        name="recover",
        out_dir=str(out),
        init=str(path),
        task=data.kind,  # type: ignore[arg-type]
        data=data.data,
        optim=OptimConfig(lr=cfg.recover_lr, warmup_steps=steps // 10),
        train=TrainConfig(
            max_steps=steps,
            batch_size=cfg.batch_size,
            eval_every=every,
            save_every=every,
            keep_last=1,
            log_every=min(10, steps),
            seed=cfg.seed,
            precision=cfg.precision,
            num_threads=cfg.num_threads,
            progress=cfg.progress,
        ),
        patience=None,
    )
    weights = {k: v.detach().clone() for k, v in pruned.state_dict().items()}
    result = train_head(
        ft,
        Init(path, config, weights, tokenizer),
        lambda: build_model(config, meta, path),
        data.train_task,
        meta,
        resume=False,
        load=lambda m, w, _: load_state_dict_strict(m, w),
    )
    recovered = load_pipeline(result.checkpoint).model.eval()
    for split in data.splits:
        metrics[split]["recovered"] = data.evaluate(recovered, split)
    select = ft.select or "macro_f1"
    valid = metrics["valid"]
    kept = "recovered" if valid["recovered"][select] >= valid["pruned"][select] else "pruned"
    return recovered if kept == "recovered" else pruned, {
        "steps": steps,
        "lr": cfg.recover_lr,
        "batch_size": cfg.batch_size,
        "run_dir": str(result.run_dir),
        "best_step": result.best["step"] if result.best else None,
        "selected_by": f"valid {select}",
        "kept": kept,
    }


def speed_report(
    original: nn.Module, pruned: nn.Module, data: TaskData, cfg: PruneConfig
) -> dict[str, Any]:
    """Original vs pruned on the same test batches: seconds per pass over them, examples per
    second and the speed-up, the median over interleaved rounds after a warm-up pass each
    (:func:`~llmos.compress.timing.compare_speed`): at least ``cfg.bench_repeats`` rounds, more
    (up to 20, or bench_repeats if higher) until each model is timed about
    ``cfg.bench_seconds`` in all."""
    batches = data.bench_batches

    def one_pass(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            for b in batches:
                model(b["input_ids"], b["token_type_ids"], b["attention_mask"])

        return run

    original.eval()
    pruned.eval()
    with torch.inference_mode():
        timed = compare_speed(
            {"original": one_pass(original), "pruned": one_pass(pruned)},
            min_rounds=cfg.bench_repeats,
            max_rounds=max(20, cfg.bench_repeats),
            min_seconds=2 * cfg.bench_seconds,  # both models together
        )
    seconds = timed.seconds
    n = sum(int(b["input_ids"].size(0)) for b in batches)
    return {
        "split": "test" if "test" in data.splits else "valid",
        "examples": n,
        "tokens": sum(int(b["num_tokens"]) for b in batches),
        "batch_size": cfg.batch_size,
        "threads": torch.get_num_threads(),
        "timing": f"median of {timed.rounds} rounds (>= {cfg.bench_repeats}, about "
        f"{cfg.bench_seconds:g} s per model), the models taking turns after a warm-up pass",
        "original_s": seconds["original"],
        "pruned_s": seconds["pruned"],
        "original_examples_per_s": n / seconds["original"],
        "pruned_examples_per_s": n / seconds["pruned"],
        "speedup": timed.speedup,
    }
