"""Several heads on one encoder (``task: multitask``): intent, slots and sentiment learned
together, read at inference from one forward pass (:class:`~llmos.models.bert.BertMultiTask`).

Each head is set up exactly as its single-task run would be (``setup_classification``,
``setup_tagging``: the same encoding, windows, losses and validation), over the shared
model seen through a :class:`~llmos.models.bert.HeadView`. Training interleaves them as
MT-DNN does (Liu et al., 2019): every optimizer step trains one head, drawn with probability
proportional to its ``weight`` from a generator seeded by (seed, step), so every DDP rank
draws the same head and a resumed run draws the same sequence. Each head keeps its own epoch
position; the trainer's state is the step count and those positions.

With ``retain`` > 0 a frozen copy of the initial encoder reads every training batch too, and
1 - cosine(trained vector, initial vector) per example, times ``retain``, is added to the
loss: the mean-pooled vector, which the customer-service app uses for retrieval, stays close
to the pretrained embedding space while the heads are learned.

Validation reports every head's metrics as ``<head>_<metric>``, their ``loss`` (mean over
heads), ``retain_cosine`` (the mean cosine between the trained and the initial encoder's
vectors on the first classification head's validation texts) and ``score``: the mean of the
heads' own selection metrics (macro-F1 for a classifier, span F1 for a tagger), which picks
the best checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmos.checkpoint.io import load_state_dict_strict
from llmos.checkpoint.task import parse_task
from llmos.config.model import BertConfig
from llmos.config.run import FinetuneConfig, HeadConfig
from llmos.data.datasets import dataset_files
from llmos.errors import CheckpointError, DataError
from llmos.files import atomic_write
from llmos.inference.embed import embed_ids
from llmos.inference.tag import tagging_crf
from llmos.models.bert import BertModel
from llmos.models.multitask import BertMultiTask, HeadShape, HeadView
from llmos.text.tokenizer import special_ids
from llmos.train.loop import FitResult, TrainTask
from llmos.train.metrics import plot_confusion, plot_span_scores
from llmos.train.runs import FinetuneSetup, Init
from llmos.train.tasks.classify import ClassifyTask, score_classifier, setup_classification
from llmos.train.tasks.tag import score_tagger, setup_tagging

log = logging.getLogger("llmos.train")

SELECT = {"classification": "macro_f1", "tagging": "f1"}


def write_excluded(files: dict[str, Path], exclude: dict[str, list[str]], out: Path) -> Path:
    """Copy a JSONL dataset's splits to ``out`` without the rows whose field ``key`` holds one
    of ``exclude[key]``; returns ``out`` (a dataset directory)."""
    out.mkdir(parents=True, exist_ok=True)
    for split, path in files.items():
        if path.suffix != ".jsonl":
            raise DataError(f"{path}: exclude needs JSONL files (a field to filter on)")
        kept, dropped = [], 0
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if any(row.get(key) in values for key, values in exclude.items()):
                dropped += 1
                continue
            kept.append(line)
        atomic_write(out / f"{split}.jsonl", "\n".join(kept) + "\n")
        log.info("%s: %d rows left out (exclude), %d kept in %s", path, dropped, len(kept), out)
    return out


class MultiTaskTrainer:
    """The heads' single-task training tasks interleaved over one model (module docstring)."""

    def __init__(
        self,
        tasks: dict[str, TrainTask],
        kinds: dict[str, str],
        weights: dict[str, float],
        seed: int,
        teacher: nn.Module | None = None,
        retain: float = 0.0,
        pad_id: int = 0,
    ) -> None:
        self.tasks, self.kinds, self.seed = tasks, kinds, seed
        self.names = list(tasks)
        w = np.array([weights[n] for n in self.names], dtype=np.float64)
        self.p = w / w.sum()
        self.teacher, self.retain, self.pad_id = teacher, retain, pad_id
        self.position = {"step": 0}

    def head_at(self, step: int) -> str:
        """The head that optimizer step ``step`` trains."""
        rng = np.random.default_rng([self.seed, step])
        return self.names[int(rng.choice(len(self.names), p=self.p))]

    def steps(self, info: Any, micro_batch: int) -> Iterator[list[dict[str, Any]]]:
        streams = {n: t.steps(info, micro_batch) for n, t in self.tasks.items()}
        while True:
            name = self.head_at(self.position["step"])
            batches = next(streams[name])
            self.position["step"] += 1
            yield [b | {"head": name} for b in batches]

    def counts(self, batch: dict[str, Any]) -> list[float]:
        # [what the head's loss is normalised by, examples (for the retention term)]
        head = self.tasks[batch["head"]].counts(batch)
        return [head[0], float(batch["input_ids"].shape[0])]

    def loss(
        self, model: nn.Module, batch: dict[str, Any], totals: list[float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        name = batch["head"]
        view = HeadView(model, name)
        loss, logs = self.tasks[name].loss(view, batch, totals[:1])
        logs = {f"{name}_{k}": v for k, v in logs.items()}
        if self.teacher is not None and self.retain > 0:
            assert view.pooled is not None
            mask = batch["attention_mask"]
            teacher = self.teacher.to(batch["input_ids"].device)
            with torch.no_grad():
                h = teacher(batch["input_ids"], batch.get("token_type_ids"), mask)  # (B, T, C)
                m = torch.ones(h.shape[:2], device=h.device) if mask is None else mask.float()
                target = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1.0)
            cos = F.cosine_similarity(view.pooled.float(), target.float(), dim=-1)  # (B,)
            retained = self.retain * (1.0 - cos).sum() / max(totals[1], 1.0)
            loss = loss + retained
            logs["retain"] = retained.item()
        logs["loss"] = loss.item()
        return loss, logs

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, task in self.tasks.items():
            for k, v in task.evaluate(HeadView(model, name)).items():
                out[f"{name}_{k}"] = v
        out["loss"] = float(np.mean([out[f"{n}_loss"] for n in self.names]))
        out["score"] = float(np.mean([out[f"{n}_{SELECT[self.kinds[n]]}"] for n in self.names]))
        if self.teacher is not None:
            out["retain_cosine"] = self.retained_cosine(model)
        return out

    def retained_cosine(self, model: nn.Module, limit: int = 512) -> float:
        """Mean cosine between the trained and the initial encoder's vectors of (up to
        ``limit``) validation texts of the first classification head."""
        first = next((n for n in self.names if isinstance(self.tasks[n], ClassifyTask)), None)
        if first is None or self.teacher is None:
            return float("nan")
        valid = cast(ClassifyTask, self.tasks[first]).valid
        ids, types = valid.ids[:limit], valid.types[:limit]
        inner = getattr(model, "module", model)
        a = embed_ids(inner.bert, ids, types, self.pad_id, "mean", True)
        b = embed_ids(self.teacher, ids, types, self.pad_id, "mean", True)
        return float((a * b).sum(1).mean())

    def state(self) -> dict[str, Any]:
        return {
            "step": self.position["step"],
            "heads": {n: t.state() for n, t in self.tasks.items()},
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.position = {"step": int(state["step"])}
        for name, task in self.tasks.items():
            task.load_state(state["heads"][name])


def load_multitask(model: nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
    """Copy a BERT checkpoint's encoder (``bert.*``, no pooler) into a new multi-task model;
    the heads (``heads.*``, ``crfs.*``, ``chars.*``) stay fresh."""
    encoder = {
        k: v
        for k, v in weights.items()
        if k.startswith("bert.") and not k.startswith("bert.pooler.")
    }
    missing, unexpected = model.load_state_dict(encoder, strict=False)
    if unexpected or any(not k.startswith(("heads.", "crfs.", "chars.")) for k in missing):
        raise CheckpointError(
            f"{path}: not a BERT encoder checkpoint "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def frozen_encoder(config: BertConfig, weights: dict[str, torch.Tensor]) -> BertModel:
    """The initial encoder, frozen, in eval mode: the retention term's reference."""
    encoder = BertModel(config, pooler=False)
    own = {
        k.removeprefix("bert."): v
        for k, v in weights.items()
        if k.startswith("bert.") and not k.startswith("bert.pooler.")
    }
    load_state_dict_strict(encoder, own)
    encoder.requires_grad_(False)
    return encoder.eval()


def head_config(cfg: FinetuneConfig, head: HeadConfig, dataset: str) -> FinetuneConfig:
    """The single-task config a head is set up from."""
    return FinetuneConfig(
        name=cfg.name,
        out_dir=cfg.out_dir,
        init=cfg.init,
        task=head.task,
        data=replace(head.data, dataset=dataset),
        optim=cfg.optim,
        train=cfg.train,
        class_weights=head.class_weights,
        crf=head.crf,
        pooling="mean" if head.task == "classification" else "cls",
        patience=None,
    )


def setup_multitask(cfg: FinetuneConfig, init: Init) -> FinetuneSetup:
    """Every head set up as its single-task run, the interleaving trainer over them, the
    multi-task model, its ``task.json`` (each head's nested) and a report that scores every
    head of the best checkpoint on its test split."""
    if not isinstance(init.config, BertConfig):
        raise CheckpointError(f"{init.path}: task: multitask needs a BERT encoder checkpoint")
    config = init.config
    run_dir = Path(cfg.out_dir).expanduser() / cfg.name
    setups: dict[str, FinetuneSetup] = {}
    test_files: dict[str, Path | None] = {}
    for head in cfg.heads:
        dataset = head.data.dataset
        if head.exclude:
            dataset = str(
                write_excluded(dataset_files(dataset), head.exclude, run_dir / "data" / head.name)
            )
        setup = (setup_classification if head.task == "classification" else setup_tagging)(
            head_config(cfg, head, dataset), init
        )
        setups[head.name] = setup
        test_files[head.name] = dataset_files(dataset).get("test")
    kinds = {h.name: h.task for h in cfg.heads}
    # Each head's task.json as its single-task run writes it (None fields dropped), plus the
    # data it learned from.
    metas = {
        h.name: parse_task(setups[h.name].meta, f"heads.{h.name}").to_json()
        | {"dataset": h.data.dataset}
        | ({"exclude": h.exclude} if h.exclude else {})
        for h in cfg.heads
    }
    teacher = frozen_encoder(config, init.weights) if cfg.retain > 0 else None
    trainer = MultiTaskTrainer(
        {n: s.task for n, s in setups.items()},
        kinds,
        {h.name: h.weight for h in cfg.heads},
        cfg.train.seed,
        teacher,
        cfg.retain,
        special_ids(init.tokenizer)["pad"] or 0,
    )
    meta = {
        "task": "multitask",
        "heads": metas,
        "max_length": max(m["max_length"] for m in metas.values()),
    }

    def build() -> BertMultiTask:
        shapes = {}
        for h in cfg.heads:
            labels = metas[h.name]["labels"]
            crf = tagging_crf(labels, metas[h.name]["scheme"]) if h.crf else None
            shapes[h.name] = HeadShape(h.task, len(labels), crf, h.data.char_tags)
        return BertMultiTask(config, shapes)

    def report(result: FitResult) -> dict[str, Any]:
        from llmos.inference.load import load_pipeline

        out: dict[str, Any] = {"best": result.best, "heads": {}}
        best = load_pipeline(result.checkpoint)
        for h in cfg.heads:
            test = test_files[h.name]
            if test is None:
                continue
            pipe = best.head(h.name)
            png = result.run_dir / f"{h.name}_test.png"
            if h.task == "classification":
                scores = score_classifier(pipe, test, label_key=h.data.label_key)
                plot_confusion(
                    scores["confusion"], metas[h.name]["labels"], png, f"{cfg.name}: {h.name}"
                )
            else:
                scores = score_tagger(pipe, test, spans_key=h.data.spans_key)
                plot_span_scores(scores["per_type"], png, f"{cfg.name}: {h.name}")
            out["heads"][h.name] = scores
        return out

    return FinetuneSetup(trainer, build, meta, report, load_multitask)
