"""Recipe: prune a fine-tuned encoder's attention heads (and feed-forward neurons).

setup (checkpoint, task.json, the task's data) -> importance on training examples with the task
loss -> remove the lowest-scoring heads and neurons -> evaluate before and after on the valid and
test splits -> optional recovery fine-tune (the shared loop, best step by validation) -> save an
ordinary llmos checkpoint -> report (``report.json``, ``head_importance.png``).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmos.checkpoint.io import (
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    load_state_dict_strict,
    read_config,
    read_task,
    read_weights,
    save_checkpoint,
    write_json_atomic,
)
from llmos.compress.prune import (
    Batch,
    Importance,
    LossFn,
    Selection,
    count_parameters,
    count_to_remove,
    importance,
    lowest,
    normalize_by_layer,
    plot_head_importance,
    prune_heads,
    prune_neurons,
)
from llmos.config.model import BertConfig, GPTConfig
from llmos.config.prune import PruneConfig
from llmos.config.run import FinetuneConfig, FinetuneDataConfig, OptimConfig, TrainConfig
from llmos.data.batching import EpochBatches, pad_batch
from llmos.data.datasets import dataset_files
from llmos.data.readers import read_classification, read_spans
from llmos.errors import CheckpointError, DataError
from llmos.inference.pipeline import Pipeline, build_model
from llmos.inference.tag import SpanDecoder
from llmos.text.tokenizer import load_tokenizer, special_ids
from llmos.train.runs import Init, train_head
from llmos.train.tasks.classify import ClassifyTask, encode_split, evaluate_encoded
from llmos.train.tasks.tag import (
    IGNORE,
    TagTask,
    encode_tagging,
    evaluate_tagging,
    training_windows,
)

log = logging.getLogger("llmos.recipes")


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


@dataclass
class PruneResult:
    """Where the pruned checkpoint and the report are, and the report itself."""

    out_dir: Path
    checkpoint: Path
    report: dict[str, Any]

    def format_report(self) -> str:
        """What ``llmos compress prune`` prints: what was removed, the metric before and after,
        parameters, speed-up and where the files are."""
        r = self.report
        removed = f"heads removed: {r['heads']['removed']} of {r['heads']['total']}"
        if "ffn" in r:
            removed += f", FFN neurons removed: {r['ffn']['removed']} of {r['ffn']['total']}"
        lines = [removed]
        metric = r["metric"]
        for split in ("valid", "test"):
            if split in r:
                stages = ", ".join(f"{stage} {m[metric]:.4f}" for stage, m in r[split].items())
                lines.append(f"{split} {metric}: {stages}")
        n, t = r["params"], r["throughput"]
        lines += [
            f"parameters: {n['original']:,} -> {n['pruned']:,}",
            f"speed-up:   {t['speedup']:.2f}x on {t['examples']} {t['split']} examples, "
            f"{t['threads']} threads",
            f"checkpoint: {self.checkpoint}",
            f"report:     {self.out_dir / 'report.json'}",
            f"heatmap:    {self.out_dir / 'head_importance.png'}",
        ]
        return "\n".join(lines)


def _length_batches(idx: np.ndarray, lengths: np.ndarray, size: int) -> list[np.ndarray]:
    """``idx`` sorted by length (little padding), cut into batches of ``size``."""
    idx = idx[np.argsort(lengths[idx], kind="stable")]
    return [idx[s : s + size] for s in range(0, len(idx), size)]


def _sample(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])


def _inputs(ids: list[np.ndarray], types: list[np.ndarray] | None, pad: int, size: int):
    lengths = np.array([len(x) for x in ids])
    out = []
    for b in _length_batches(np.arange(len(ids)), lengths, size):
        out.append(pad_batch([ids[i] for i in b], [types[i] for i in b] if types else None, pad))
    return out


def classification_data(
    cfg: PruneConfig, task: dict[str, Any], config: BertConfig, tokenizer: Any, dataset: str
) -> TaskData:
    files = dataset_files(dataset)
    label_key = cfg.label_key or task.get("label_key", "label")
    try:
        read = {s: read_classification(f, label_key=label_key) for s, f in files.items()}
    except DataError as e:
        if repr(label_key) not in str(e):
            raise
        raise DataError(f"{e} (--label-key names the label field)") from None
    labels = list(task["labels"])  # the checkpoint's order, not the data's
    max_length = min(int(task.get("max_length", config.max_position)), config.max_position)
    enc = {
        s: encode_split(tokenizer, r.rows, labels, max_length, str(files[s]))
        for s, r in read.items()
    }
    pad = special_ids(tokenizer)["pad"] or 0
    train = ClassifyTask(enc["train"], enc["valid"], labels, cfg.batch_size, cfg.seed, pad)
    idx = _sample(len(enc["train"].labels), cfg.importance_examples, cfg.seed)
    batches = [train.collate(b) for b in _length_batches(idx, train.lengths, cfg.batch_size)]

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
        importance_batches=batches,
        loss_fn=loss_fn,
        evaluate=evaluate,
        splits=[s for s in ("valid", "test") if s in enc],
        bench_batches=_inputs(bench.ids, bench.types, pad, cfg.batch_size),
        extra_meta={"label_key": label_key},
    )


def tagging_data(
    cfg: PruneConfig, task: dict[str, Any], config: BertConfig, tokenizer: Any, dataset: str
) -> TaskData:
    files = dataset_files(dataset)
    scheme, view, spans_key = task["scheme"], task.get("view"), task.get("spans_key", "spans")
    read = {s: read_spans(f, view=view, spans_key=spans_key) for s, f in files.items()}
    labels = list(task["labels"])
    max_length = min(int(task.get("max_length", config.max_position)), config.max_position)
    enc = {
        s: encode_tagging(tokenizer, r.rows, labels, scheme, str(files[s])) for s, r in read.items()
    }
    special = special_ids(tokenizer)
    if special["cls"] is None or special["sep"] is None:
        raise CheckpointError("the checkpoint's tokenizer has no [CLS]/[SEP] tokens")
    ids, tags = training_windows(enc["train"], max_length, special["cls"], special["sep"])
    decoder = SpanDecoder(labels, scheme)
    train = TagTask(ids, tags, enc["valid"], decoder, special, max_length, cfg.batch_size, cfg.seed)
    idx = _sample(len(ids), cfg.importance_examples, cfg.seed)
    batches = [train.collate(b) for b in _length_batches(idx, train.lengths, cfg.batch_size)]

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
        importance_batches=batches,
        loss_fn=loss_fn,
        evaluate=evaluate,
        splits=[s for s in ("valid", "test") if s in enc],
        bench_batches=_inputs(bench_ids, None, special["pad"] or 0, cfg.batch_size),
        extra_meta={},
    )


def load_prunable(path: Path) -> tuple[BertConfig, dict[str, Any]]:
    """The config and task of a checkpoint that can be pruned, or a clear error."""
    config = read_config(path)
    if isinstance(config, GPTConfig):
        raise CheckpointError(
            f"{path}: pruning covers fine-tuned BERT encoders (classifiers, taggers); this is a GPT"
        )
    task = read_task(path)
    if task is None or task.get("task") not in ("classification", "tagging"):
        raise CheckpointError(
            f"{path}: no classification or tagging task.json; pruning needs a fine-tuned model "
            "(importance is measured with its task loss on its task data)"
        )
    if config.share_layers:
        raise CheckpointError(
            f"{path}: this encoder shares one set of layer weights (share_layers); a head "
            "removed there would vanish from every layer, so it is not pruned"
        )
    return config, task


@torch.inference_mode()
def throughput(
    models: dict[str, nn.Module], batches: list[Batch], repeats: int, min_seconds: float = 5.0
) -> dict[str, float]:
    """Seconds for one pass over ``batches`` per model: the best of at least ``repeats`` timed
    passes (more for short passes, so that each model is timed ``min_seconds`` in all), the
    models taking turns after one warm-up pass each, so that both see the same machine load."""

    def one_pass(model: nn.Module) -> float:
        start = time.perf_counter()
        for b in batches:
            model(b["input_ids"], b["token_type_ids"], b["attention_mask"])
        return time.perf_counter() - start

    for model in models.values():
        model.eval()
    warm = max(one_pass(model) for model in models.values())
    rounds = max(repeats, math.ceil(min_seconds / max(warm, 1e-6)))
    best = dict.fromkeys(models, float("inf"))
    for _ in range(rounds):
        for name, model in models.items():
            best[name] = min(best[name], one_pass(model))
    return best


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
    recovered = Pipeline.from_checkpoint(result.checkpoint).model.eval()
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


def choose(cfg: PruneConfig, scores: Importance) -> tuple[list[torch.Tensor], Selection, Selection]:
    """Head scores as ranked (normalized per layer unless ``cfg.normalize`` is off), and the
    heads and neurons to remove: the lowest-ranked ``cfg.heads`` / ``cfg.ffn`` of all."""
    head_scores = normalize_by_layer(scores.heads) if cfg.normalize else scores.heads
    heads = lowest(head_scores, count_to_remove(sum(map(len, head_scores)), cfg.heads))
    neurons: Selection = {}
    if scores.neurons is not None:
        units = normalize_by_layer(scores.neurons) if cfg.normalize else scores.neurons
        neurons = lowest(units, count_to_remove(sum(map(len, units)), cfg.ffn))
    return head_scores, heads, neurons


def default_out_dir(checkpoint: Path) -> Path:
    """``runs/<run>-pruned`` for ``runs/<run>/checkpoint``."""
    run = checkpoint.resolve().parent
    return run.parent / f"{run.name}-pruned"


def prune(cfg: PruneConfig) -> PruneResult:
    """Prune ``cfg.checkpoint``; returns where the pruned checkpoint and the report are."""
    path = Path(cfg.checkpoint).expanduser()
    config, task = load_prunable(path)
    out = Path(cfg.out_dir).expanduser() if cfg.out_dir else default_out_dir(path)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(path / TOKENIZER_FILE)
    model = build_model(config, task, path)
    load_state_dict_strict(model, read_weights(path))
    dataset = cfg.data or task.get("dataset")
    if not dataset:
        raise CheckpointError(f"{path}/task.json names no dataset; give one with --data")
    setup = classification_data if task["task"] == "classification" else tagging_data
    data = setup(cfg, task, config, tokenizer, dataset)

    t0 = time.perf_counter()
    scores = importance(model, data.importance_batches, data.loss_fn, neurons=cfg.ffn > 0)
    head_scores, heads, neurons = choose(cfg, scores)
    log.info(
        "importance on %d examples in %.1fs; removing %d of %d heads and %d FFN neurons",
        scores.examples,
        time.perf_counter() - t0,
        _removed(heads),
        sum(map(len, head_scores)),
        _removed(neurons),
    )
    original = copy.deepcopy(model).eval()
    pruned, pruned_cfg = prune_heads(model, config, heads)
    if neurons:
        pruned, pruned_cfg = prune_neurons(pruned, pruned_cfg, neurons)
    pruned.eval()
    metrics = {
        split: {"original": data.evaluate(original, split), "pruned": data.evaluate(pruned, split)}
        for split in data.splits
    }
    meta = {k: v for k, v in task.items() if k not in ("init", "dataset")}
    meta |= data.extra_meta | {
        "pruned_from": str(path),
        # Per layer, the heads removed, numbered as in the checkpoint pruned from.
        "pruned_heads": [heads.get(i, []) for i in range(config.num_layers)],
    }
    if neurons:
        meta["pruned_neurons"] = [len(neurons.get(i, [])) for i in range(config.num_layers)]
    final, recovery = pruned, None
    if cfg.recover_steps:
        final, recovery = recover(
            cfg, out, path, pruned, pruned_cfg, tokenizer, data, meta, metrics
        )
    meta |= {"init": str(path), "dataset": dataset}
    ckpt = save_checkpoint(out / "checkpoint", final, pruned_cfg, tokenizer, meta)
    seconds = throughput(
        {"original": original, "pruned": final},
        data.bench_batches,
        cfg.bench_repeats,
        cfg.bench_seconds,
    )
    plot_head_importance(
        head_scores,
        heads,
        config.num_heads,
        out / "head_importance.png",
        f"{path.parent.name}/{path.name}: {_removed(heads)} of {sum(map(len, head_scores))} "
        "heads removed (×)",
    )
    report = {
        "checkpoint": str(path),
        "pruned_checkpoint": str(ckpt),
        "task": data.kind,
        "dataset": dataset,
        "metric": data.metric,
        "heads": {
            "fraction": cfg.heads,
            "total": sum(map(len, head_scores)),
            "removed": _removed(heads),
            "removed_per_layer": meta["pruned_heads"],
            "kept_per_layer": pruned_cfg.layer_heads,
            "importance": [s.tolist() for s in head_scores],
            "normalized_by_layer": cfg.normalize,
            "importance_examples": scores.examples,
        },
        **({"ffn": ffn_report(cfg, scores, neurons, pruned_cfg)} if neurons else {}),
        "params": {
            "original": count_parameters(original),
            "pruned": count_parameters(final),
            "original_layers": count_parameters(original.bert.layers),
            "pruned_layers": count_parameters(final.bert.layers),
        },
        "file_bytes": {
            "original": (path / WEIGHTS_FILE).stat().st_size,
            "pruned": (ckpt / WEIGHTS_FILE).stat().st_size,
            "original_checkpoint": _bytes(path),
            "pruned_checkpoint": _bytes(ckpt),
        },
        **metrics,
        "recovery": recovery,
        "throughput": throughput_report(seconds, data, cfg),
    }
    write_json_atomic(out / "report.json", report)
    return PruneResult(out, ckpt, report)


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def _removed(selection: Selection) -> int:
    return sum(map(len, selection.values()))


def ffn_report(
    cfg: PruneConfig, scores: Importance, neurons: Selection, pruned_cfg: BertConfig
) -> dict[str, Any]:
    return {
        "fraction": cfg.ffn,
        "total": sum(map(len, scores.neurons or [])),
        "removed": _removed(neurons),
        "removed_per_layer": [neurons.get(i, []) for i in range(pruned_cfg.num_layers)],
        "kept_per_layer": pruned_cfg.layer_intermediate,
    }


def throughput_report(seconds: dict[str, float], data: TaskData, cfg: PruneConfig) -> dict:
    n = sum(int(b["input_ids"].size(0)) for b in data.bench_batches)
    return {
        "split": "test" if "test" in data.splits else "valid",
        "examples": n,
        "tokens": sum(int(b["num_tokens"]) for b in data.bench_batches),
        "batch_size": cfg.batch_size,
        "threads": torch.get_num_threads(),
        "timing": f"best of >= {cfg.bench_repeats} passes each (>= {cfg.bench_seconds:g} s in "
        "all), the models taking turns after a warm-up pass",
        "original_s": seconds["original"],
        "pruned_s": seconds["pruned"],
        "original_examples_per_s": n / seconds["original"],
        "pruned_examples_per_s": n / seconds["pruned"],
        "speedup": seconds["original"] / seconds["pruned"],
    }
