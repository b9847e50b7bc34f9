"""What every training recipe does around :func:`~llmos.train.loop.fit`: the run directory,
the checkpoint a fine-tune starts from, and the fine-tuning call itself."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tokenizers import Tokenizer
from torch import nn

from llmos.checkpoint.digest import weights_digest
from llmos.checkpoint.io import read_checkpoint, require_unquantized
from llmos.config.loader import to_dict
from llmos.config.model import BertConfig, GPTConfig, ModelConfig, XLNetConfig
from llmos.config.run import FinetuneConfig, PretrainConfig
from llmos.data.corpus import TokenizedCorpus
from llmos.errors import CheckpointError, ConfigError
from llmos.text.cjk import split_cjk_characters, splits_cjk_by_default
from llmos.train.loop import FitResult, TrainTask, fit

log = logging.getLogger("llmos.train")

LoadWeights = Callable[[nn.Module, dict[str, torch.Tensor], Path], None]


def start_run(cfg: Any) -> Path:
    """Create ``out_dir/name``, save the run's config there as ``config.yaml``, and seed torch
    with ``train.seed`` so the model starts from the same weights on every rank and every
    resume. Returns the run directory."""
    run_dir = Path(cfg.out_dir).expanduser() / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)
    )
    torch.manual_seed(cfg.train.seed)
    return run_dir


@dataclass
class PretrainSetup:
    """What a model family gives the pretraining recipe (``train.tasks.mlm`` for encoders,
    ``train.tasks.clm`` for decoders).

    Attributes:
        cfg: the run's config, its model's vocabulary (and pad id) set from the tokenizer.
        tokenizer: the tokenizer the corpus was tokenized with; saved with the checkpoints
            (None: a model that reads no text, CLIP's image tower).
        task: the data stream and loss for :func:`~llmos.train.loop.fit`.
        build: a fresh model (called after :func:`start_run` seeded torch).
        train: the tokenized training corpus (None: no text corpus, no unigram baseline).
        valid_targets: every validation target (for the unigram baseline; None with
            ``train``).
        describe: what the model trains on, for the log (``corpus: N documents, ...``).
        extra_report: more fields for the report from the fit result (main rank only).
        meta: ``task.json`` of the checkpoints (None: none, a pretrained model's).
    """

    cfg: PretrainConfig
    tokenizer: Tokenizer | None
    task: TrainTask
    build: Callable[[], nn.Module]
    train: TokenizedCorpus | None
    valid_targets: np.ndarray | None
    describe: str
    extra_report: Callable[[FitResult], dict[str, Any]] | None = None
    meta: dict[str, Any] | None = None


@dataclass
class Init:
    """The checkpoint a fine-tuning run starts from.

    Attributes:
        digest: :func:`~llmos.checkpoint.digest.weights_digest` of ``path`` when the weights
            are that checkpoint's (None when they were changed in memory, as pruning does).
    """

    path: Path
    config: ModelConfig
    weights: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    digest: str | None = None


def load_init(cfg: FinetuneConfig) -> Init:
    """The checkpoint ``cfg.init`` (unquantized), its weights, tokenizer and digest.

    The tokenizer is the one the task trains and saves. For spelling correction every CJK
    character is a token of its own (:func:`~llmos.text.cjk.split_cjk_characters`). For
    tagging (or a multitask run with a tagging head, every head then reading the same tokens),
    CJK characters are split when ``cfg.data.split_cjk`` says so, or by default for tokenizers
    that merge them into words. Encoding and the saved ``tokenizer.json`` then agree, and the
    fine-tuned checkpoint reads text the same way.
    """
    path = Path(cfg.init).expanduser()
    ckpt = read_checkpoint(path)
    require_unquantized(path, ckpt.config, "fine-tuning")
    tokenizer = ckpt.tokenizer
    taggers = [h.data for h in cfg.heads if h.task == "tagging"]  # a multitask run's
    if cfg.task == "spelling":
        # A spelling corrector reads and replaces one character per token, whatever the tokenizer.
        tokenizer = split_cjk_characters(tokenizer)
        log.info("spelling: every CJK character is a token of its own")
    elif cfg.task == "tagging" or taggers:
        data = taggers[0] if taggers else cfg.data
        split = False if data.char_tags else data.split_cjk
        if split is None:
            split = splits_cjk_by_default(tokenizer)
        if split:
            tokenizer = split_cjk_characters(tokenizer)
            log.info("tagging: every CJK character is a token of its own (data.split_cjk)")
    if cfg.init_layers is None:
        return Init(path, ckpt.config, ckpt.weights(), tokenizer, weights_digest(path))
    config, weights = first_layers(ckpt.config, ckpt.weights(), cfg.init_layers, path)
    return Init(path, config, weights, tokenizer)


def first_layers(
    config: BertConfig | GPTConfig, weights: dict[str, torch.Tensor], n: int, path: Path
) -> tuple[BertConfig, dict[str, torch.Tensor]]:
    """The encoder's first ``n`` layers: the config with ``num_layers`` n (per-layer pruning
    sizes cut to match) and the weights without the layers above."""
    if not isinstance(config, BertConfig):
        raise ConfigError(f"init_layers: {path} is not a BERT encoder checkpoint")
    if n > config.num_layers:
        raise ConfigError(f"init_layers: {path} has {config.num_layers} layers, asked for {n}")
    if config.share_layers:
        raise ConfigError(f"init_layers: {path} shares one layer's weights (share_layers)")
    cut = {
        name: getattr(config, name)[:n]
        for name in ("layer_heads", "layer_intermediate")
        if getattr(config, name) is not None
    }
    kept = {
        k: v
        for k, v in weights.items()
        if not (m := re.match(r"bert\.layers\.(\d+)\.", k)) or int(m.group(1)) < n
    }
    log.info("init_layers: the first %d of %d layers of %s", n, config.num_layers, path)
    return replace(config, num_layers=n, **cut), kept


def freeze_bottom(model: nn.Module, n: int, config: BertConfig | GPTConfig, path: Path) -> int:
    """Stop training the encoder's embeddings and its first ``n`` layers (``freeze_layers``):
    their parameters no longer require gradients, so autograd records nothing below layer
    ``n`` and the optimizer (built from the parameters that do) holds no state for them.
    Returns the number of parameters frozen."""
    if not isinstance(config, BertConfig):
        raise ConfigError(f"freeze_layers: {path} is not a BERT encoder checkpoint")
    if n > config.num_layers:
        raise ConfigError(
            f"freeze_layers: {n} is more than the {config.num_layers} layers the model has "
            f"(of {path})"
        )
    if config.share_layers and n:
        raise ConfigError(f"freeze_layers: {path} shares one layer's weights (share_layers)")
    frozen = 0
    for name, p in model.named_parameters():
        m = re.match(r"bert\.layers\.(\d+)\.", name)
        if name.startswith("bert.embeddings.") or (m and int(m.group(1)) < n):
            p.requires_grad_(False)
            frozen += p.numel()
    log.info(
        "freeze_layers: the embeddings and the first %d of %d layers (%d parameters) are "
        "not trained",
        n,
        config.num_layers,
        frozen,
    )
    return frozen


def load_encoder(model: nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
    """Copy the encoder weights of a checkpoint (``bert.*``, or an XLNet's ``transformer.*``)
    into a new task model; the head (classifier, a tagger's CRF, a character tagger's
    ``char_*`` layers, an XLNet's sequence summary) stays fresh.

    A model without a pooler (token classification) leaves the checkpoint's pooler out.
    """
    prefix = "transformer." if isinstance(getattr(model, "cfg", None), XLNetConfig) else "bert."
    has_pooler = any(k.startswith("bert.pooler.") for k in model.state_dict())
    encoder = {
        k: v
        for k, v in weights.items()
        if k.startswith(prefix) and (has_pooler or not k.startswith("bert.pooler."))
    }
    missing, unexpected = model.load_state_dict(encoder, strict=False)
    fresh = ("classifier.", "crf.", "char_", "bert.pooler.", "sequence_summary.", "logits_proj.")
    if unexpected or not encoder or any(not k.startswith(fresh) for k in missing):
        kind = "an XLNet" if prefix == "transformer." else "a BERT encoder"
        raise CheckpointError(
            f"{path}: not {kind} checkpoint (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    if any(k.startswith("bert.pooler.") for k in missing):
        log.warning("%s has no pooler weights: the pooler starts from random weights", path)


@dataclass
class FinetuneSetup:
    """What a task family gives the fine-tuning recipe (built by ``train.tasks.*.setup_*``).

    Attributes:
        task: the data stream and loss for :func:`~llmos.train.loop.fit`.
        build: a fresh task model (called after :func:`start_run` seeded torch).
        meta: ``task.json`` of the fine-tuned checkpoint.
        report: the run's report (test-split scores, plots written), from the fit result; called
            on the main rank only.
        load: copies the initial weights into the model (default: the encoder of a BERT
            checkpoint; the head stays fresh).
    """

    task: TrainTask
    build: Callable[[], nn.Module]
    meta: dict[str, Any]
    report: Callable[[FitResult], dict[str, Any]]
    load: LoadWeights | None = None


def train_head(
    cfg: FinetuneConfig,
    init: Init,
    build: Callable[[], nn.Module],
    task: TrainTask,
    meta: dict[str, Any],
    resume: bool,
    load: LoadWeights | None = None,
) -> FitResult:
    """Build the task model (seeded), copy in the initial weights (``load``: by default the
    encoder of a BERT checkpoint, the head stays fresh), save the run config and train it with
    the shared loop; ``task.json`` gets ``meta`` plus where the run started from (its path and,
    when known, its weights' digest)."""
    run_dir = start_run(cfg)
    model = build()
    (load or load_encoder)(model, init.weights, init.path)
    if cfg.freeze_layers is not None:
        freeze_bottom(model, cfg.freeze_layers, init.config, init.path)
    started = {"init": str(init.path)}
    if cfg.task != "multitask":  # a multitask run names each head's dataset
        started["dataset"] = cfg.data.dataset
    if init.digest is not None:
        started["init_digest"] = init.digest
    return fit(
        model,
        task,
        cfg.train,
        cfg.optim,
        run_dir,
        model_config=init.config,
        tokenizer=init.tokenizer,
        task_meta=meta | started,
        resume=resume,
        title=cfg.name,
        select=cfg.select,
        patience=cfg.patience,
    )
