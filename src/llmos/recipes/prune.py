"""Recipe: prune a fine-tuned encoder's attention heads (and feed-forward neurons).

setup (checkpoint, task.json, the task's data) -> importance on training examples with the task
loss -> remove the lowest-scoring heads and neurons -> evaluate before and after on the valid and
test splits -> optional recovery fine-tune (the shared loop, best step by validation) -> save an
ordinary llmos checkpoint -> report (``report.json``, ``head_importance.png``).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmos.checkpoint.io import WEIGHTS_FILE, load_state_dict_strict, save_checkpoint
from llmos.compress.prune import (
    Importance,
    Selection,
    choose,
    count_parameters,
    count_removed,
    importance,
    plot_head_importance,
    prune_heads,
    prune_neurons,
)
from llmos.compress.prune_task import load_prunable, recover, speed_report, task_data
from llmos.config.model import BertConfig
from llmos.config.prune import PruneConfig
from llmos.errors import CheckpointError
from llmos.files import atomic_write_json
from llmos.inference.load import build_model

log = logging.getLogger("llmos.recipes")


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


def default_out_dir(checkpoint: Path) -> Path:
    """``runs/<run>-pruned`` for ``runs/<run>/checkpoint``."""
    run = checkpoint.resolve().parent
    return run.parent / f"{run.name}-pruned"


def prune(cfg: PruneConfig) -> PruneResult:
    """Prune ``cfg.checkpoint``; returns where the pruned checkpoint and the report are."""
    path = Path(cfg.checkpoint).expanduser()
    ckpt = load_prunable(path)
    config, spec = ckpt.config, ckpt.task
    assert isinstance(config, BertConfig)
    out = Path(cfg.out_dir).expanduser() if cfg.out_dir else default_out_dir(path)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    tokenizer = ckpt.tokenizer
    model = build_model(config, spec, path)
    load_state_dict_strict(model, ckpt.weights())
    dataset = cfg.data or spec.extra.get("dataset")
    if not dataset:
        raise CheckpointError(f"{path}/task.json names no dataset; give one with --data")
    data = task_data(cfg, ckpt, tokenizer, dataset)

    t0 = time.perf_counter()
    scores = importance(model, data.importance_batches, data.loss_fn, neurons=cfg.ffn > 0)
    head_scores, heads, neurons = choose(scores, cfg.heads, cfg.ffn, cfg.normalize)
    log.info(
        "importance on %d examples in %.1fs; removing %d of %d heads and %d FFN neurons",
        scores.examples,
        time.perf_counter() - t0,
        count_removed(heads),
        sum(map(len, head_scores)),
        count_removed(neurons),
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
    # task.json of the pruned model: the original's (where it started from comes last).
    meta = {k: v for k, v in spec.to_json().items() if k not in ("init", "dataset")}
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
    saved = save_checkpoint(out / "checkpoint", final, pruned_cfg, tokenizer, meta)
    plot_head_importance(
        head_scores,
        heads,
        config.num_heads,
        out / "head_importance.png",
        f"{path.parent.name}/{path.name}: {count_removed(heads)} of {sum(map(len, head_scores))} "
        "heads removed (×)",
    )
    report = {
        "checkpoint": str(path),
        "pruned_checkpoint": str(saved),
        "task": data.kind,
        "dataset": dataset,
        "metric": data.metric,
        "heads": {
            "fraction": cfg.heads,
            "total": sum(map(len, head_scores)),
            "removed": count_removed(heads),
            "removed_per_layer": meta["pruned_heads"],
            "kept_per_layer": pruned_cfg.layer_heads,
            "importance": [s.tolist() for s in head_scores],
            "normalized_by_layer": cfg.normalize,
            "importance_examples": scores.examples,
        },
        **({"ffn": _ffn_report(cfg, scores, neurons, pruned_cfg)} if neurons else {}),
        "params": {
            "original": count_parameters(original),
            "pruned": count_parameters(final),
            "original_layers": count_parameters(original.bert.layers),
            "pruned_layers": count_parameters(final.bert.layers),
        },
        "file_bytes": {
            "original": (path / WEIGHTS_FILE).stat().st_size,
            "pruned": (saved / WEIGHTS_FILE).stat().st_size,
            "original_checkpoint": _bytes(path),
            "pruned_checkpoint": _bytes(saved),
        },
        **metrics,
        "recovery": recovery,
        "throughput": speed_report(original, final, data, cfg),
    }
    atomic_write_json(out / "report.json", report)
    return PruneResult(out, saved, report)


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def _ffn_report(
    cfg: PruneConfig, scores: Importance, neurons: Selection, pruned_cfg: BertConfig
) -> dict[str, Any]:
    return {
        "fraction": cfg.ffn,
        "total": sum(map(len, scores.neurons or [])),
        "removed": count_removed(neurons),
        "removed_per_layer": [neurons.get(i, []) for i in range(pruned_cfg.num_layers)],
        "kept_per_layer": pruned_cfg.layer_intermediate,
    }
