"""Run configs: what a training run reads, trains and writes. YAML sets these values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llmos.config.model import BertConfig, GPTConfig
from llmos.errors import ConfigError


@dataclass
class DataConfig:
    """Pretraining data.

    ``corpus`` is a name under ``$LLMOS_HOME/data/corpus`` (``zh``, ``en``) or a directory with
    ``train.txt`` and ``valid.txt``: one sentence per line, a blank line between documents.
    ``tokenizer`` is a name under ``$LLMOS_HOME/tokenizers`` or a path to ``tokenizer.json``.

    ``objective``: ``mlm+nsp`` (BERT), ``mlm`` (RoBERTa full sentences) or ``clm`` (GPT: whole
    documents, each followed by end-of-text, packed back to back into blocks of
    ``max_length`` tokens); by default the model's (``mlm+nsp`` for BERT, ``clm`` for GPT).
    """

    corpus: str = "zh"
    tokenizer: str = "wordpiece-zh"
    max_length: int = 128
    objective: Literal["mlm+nsp", "mlm", "clm"] | None = None
    mask_prob: float = 0.15
    short_seq_prob: float = 0.1
    max_valid_examples: int = 1024
    max_train_documents: int | None = None

    def __post_init__(self) -> None:
        if not 8 <= self.max_length <= 4096:
            raise ConfigError(f"data.max_length must be in [8, 4096], got {self.max_length}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"data.mask_prob must be in (0, 1), got {self.mask_prob}")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ConfigError(f"data.short_seq_prob must be in [0, 1], got {self.short_seq_prob}")


@dataclass
class OptimConfig:
    """AdamW with warmup and decay; no weight decay on biases and LayerNorm weights."""

    name: Literal["adamw"] = "adamw"
    lr: float = 5e-4
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass
class TrainConfig:
    """The training loop: steps, batches, precision, evaluation and checkpoints.

    ``batch_size`` is the global batch of one optimizer step (over all DDP ranks and
    accumulation micro-steps); ``micro_batch_size`` is what one rank runs in one forward.
    """

    max_steps: int = 1000
    batch_size: int = 32
    micro_batch_size: int | None = None
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    eval_every: int = 200
    eval_batches: int = 32
    save_every: int = 200
    keep_last: int = 2
    log_every: int = 10
    seed: int = 42
    device: str = "auto"
    num_threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "eval_every", "save_every", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.micro_batch_size is not None and self.micro_batch_size <= 0:
            raise ConfigError(
                f"train.micro_batch_size must be positive, got {self.micro_batch_size}"
            )
        if self.keep_last < 1:
            raise ConfigError(f"train.keep_last must be >= 1, got {self.keep_last}")


@dataclass
class PretrainConfig:
    """``llmos pretrain``: a BERT encoder trained with MLM (+ NSP), or a GPT decoder trained
    with causal LM (``model.model_type: gpt``), on a text corpus."""

    name: str = "bert-zh"
    out_dir: str = "runs"
    model: BertConfig | GPTConfig = field(default_factory=BertConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"name must be a non-empty run name without '/', got {self.name!r}")
        decoder = self.model.model_type == "gpt"
        if self.data.objective is None:
            self.data.objective = "clm" if decoder else "mlm+nsp"
        if decoder != (self.data.objective == "clm"):
            raise ConfigError(
                f"data.objective {self.data.objective!r} does not fit model.model_type "
                f"{self.model.model_type!r} (bert: mlm+nsp or mlm; gpt: clm)"
            )
        need = {"mlm+nsp": ("mlm+nsp",), "mlm": ("mlm", "mlm+nsp"), "clm": (None,)}
        heads = getattr(self.model, "heads", None)
        if heads not in need[self.data.objective]:
            raise ConfigError(
                f"data.objective {self.data.objective!r} needs model.heads "
                f"{' or '.join(map(str, need[self.data.objective]))}, got {heads!r}"
            )
        if self.data.max_length > self.model.max_position:
            raise ConfigError(
                f"data.max_length ({self.data.max_length}) exceeds "
                f"model.max_position ({self.model.max_position})"
            )


@dataclass
class FinetuneDataConfig:
    """Labelled data for fine-tuning.

    ``dataset`` is a name under ``$LLMOS_HOME/data/tasks`` (``sentiment-zh``, ``intent-en``) or a
    directory holding ``train`` and ``valid`` (and optionally ``test``) files in ``.tsv``,
    ``.csv`` or ``.jsonl`` (classification), or ``.jsonl`` with character spans, CoNLL
    ``.conll``/``.bio`` or People's Daily ``.txt`` (tagging).

    Tagging only: ``scheme`` is the tag scheme the model learns (``bio`` or ``bmes``);
    ``spans_key`` the JSONL key holding the spans (``slots`` in the intent files); ``view``
    what to learn from a People's Daily file (``segmentation``, ``pos`` or ``ner``).
    """

    dataset: str = "sentiment-zh"
    label_key: str = "label"
    max_length: int = 128
    skip_bad_rows: bool = False
    scheme: Literal["bio", "bmes"] = "bio"
    spans_key: str = "spans"
    view: Literal["segmentation", "pos", "ner"] | None = None

    def __post_init__(self) -> None:
        if not 8 <= self.max_length <= 4096:
            raise ConfigError(f"data.max_length must be in [8, 4096], got {self.max_length}")


@dataclass
class FinetuneConfig:
    """``llmos finetune``: a task head on a pretrained encoder checkpoint, or instruction
    tuning of a pretrained GPT (``task: instruct``, JSONL {instruction, input, output})."""

    name: str = "sentiment-zh"
    out_dir: str = "runs"
    init: str = "runs/bert-zh/checkpoint"
    task: Literal["classification", "tagging", "instruct"] = "classification"
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_steps=50))
    train: TrainConfig = field(default_factory=TrainConfig)
    class_weights: Literal["none", "balanced"] = "none"
    select: str | None = None
    patience: int | None = 3

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"name must be a non-empty run name without '/', got {self.name!r}")
        if self.select is None:
            self.select = {"classification": "macro_f1", "tagging": "f1", "instruct": "loss"}[
                self.task
            ]
        if self.patience is not None and self.patience < 1:
            raise ConfigError(
                f"patience must be >= 1 (or null for no early stopping), got {self.patience}"
            )
