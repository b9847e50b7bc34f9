"""``llmos compress distill``: the student, how it starts, the data and the losses.

Split from ``llmos.config.run`` (which keeps the shared ``TrainConfig`` and ``OptimConfig``
that every run nests), as ``prune.py`` and ``quantize.py`` are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from llmos.config.run import OptimConfig, TrainConfig, check_pretraining_rates
from llmos.errors import ConfigError


@dataclass
class StudentConfig:
    """The student's architecture, as changes to the teacher's: a field left null is the
    teacher's. The vocabulary, tokenizer, positions and heads always come from the teacher
    (the student reads the same token ids); ``vocab_size``, if set, must equal the teacher's."""

    num_layers: int | None = None
    hidden_size: int | None = None
    num_heads: int | None = None
    intermediate_size: int | None = None
    dropout: float | None = None
    attention_dropout: float | None = None
    vocab_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden_size", "num_heads", "intermediate_size"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"student.{name} must be positive (or null), got {value}")


@dataclass
class StudentInitConfig:
    """DistilBERT-style initialisation from the teacher. ``init_layers`` lists, per student
    layer, the teacher layer whose weights it starts from (e.g. ``[0, 2]``); the embeddings
    and the heads (pooler, classifier, MLM/NSP) are copied too. Needs the teacher's hidden and
    intermediate sizes. Null: the student starts from random weights."""

    init_layers: list[int] | None = None

    def __post_init__(self) -> None:
        for i, j in enumerate(self.init_layers or []):
            if j < 0:
                raise ConfigError(f"student_init.init_layers[{i}] must be >= 0, got {j}")


@dataclass
class DistillDataConfig:
    """What the student learns from.

    classification: ``dataset`` as in ``llmos finetune`` (null: the dataset named in the
    teacher's task.json), ``label_key``, ``max_length`` (null: the teacher's). mlm: ``corpus``
    as in ``llmos pretrain`` (masked with the pretraining collator, tokenized with the teacher's
    tokenizer), ``objective`` (null: ``mlm+nsp`` when the teacher has an NSP head, else ``mlm``),
    ``mask_prob``, ``short_seq_prob``, ``max_valid_examples``, ``max_train_documents``.
    """

    dataset: str | None = None
    label_key: str = "label"
    skip_bad_rows: bool = False
    max_length: int | None = None
    corpus: str = "zh"
    objective: Literal["mlm+nsp", "mlm"] | None = None
    mask_prob: float = 0.15
    short_seq_prob: float = 0.1
    max_valid_examples: int = 1024
    max_train_documents: int | None = None

    def __post_init__(self) -> None:
        if self.max_length is not None and not 8 <= self.max_length <= 4096:
            raise ConfigError(f"data.max_length must be in [8, 4096], got {self.max_length}")
        check_pretraining_rates(self.mask_prob, self.short_seq_prob)


@dataclass
class DistillConfig:
    """``llmos compress distill``: train a smaller student on a teacher's outputs.

    Loss = ``alpha`` * KL(teacher || student) of the logits softened by ``temperature`` (times
    T^2, Hinton et al.) + (1 - ``alpha``) * cross-entropy on the labels + ``hidden_mse`` * MSE of
    hidden states + ``attention_mse`` * MSE of attention probabilities (TinyBERT), the last two
    at the embeddings and at mapped layers: student layer i -> teacher layer ``layer_map[i]``
    (null: uniform, i -> (i + 1) * Lt / Ls - 1). ``teacher`` is a checkpoint (``--teacher``
    overrides it): a classifier for ``task: classification``, a pretrained encoder for ``mlm``.
    """

    name: str = "distill"
    out_dir: str = "runs"
    teacher: str = ""
    task: Literal["classification", "mlm"] = "classification"
    student: StudentConfig = field(default_factory=StudentConfig)
    student_init: StudentInitConfig = field(default_factory=StudentInitConfig)
    data: DistillDataConfig = field(default_factory=DistillDataConfig)
    temperature: float = 2.0
    alpha: float = 0.5
    hidden_mse: float = 0.0
    attention_mse: float = 0.0
    layer_map: list[int] | None = None
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_steps=50))
    train: TrainConfig = field(default_factory=TrainConfig)
    select: str | None = None
    patience: int | None = 3

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"name must be a non-empty run name without '/', got {self.name!r}")
        if not self.teacher:
            raise ConfigError(
                "teacher: no teacher checkpoint; pass --teacher CHECKPOINT or set teacher: PATH"
            )
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(
                f"alpha (weight of the soft KL; 1 - alpha weighs the labels) must be in [0, 1], "
                f"got {self.alpha}"
            )
        for name in ("hidden_mse", "attention_mse"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} (a loss weight) must be >= 0, got {getattr(self, name)}")
        for i, j in enumerate(self.layer_map or []):
            if j < 0:
                raise ConfigError(f"layer_map[{i}] must be a teacher layer index >= 0, got {j}")
        n = self.student.num_layers
        for key, value in (
            ("layer_map", self.layer_map),
            ("student_init.init_layers", self.student_init.init_layers),
        ):
            if n is not None and value is not None and len(value) != n:
                raise ConfigError(
                    f"{key} has {len(value)} entries; it needs one per student layer "
                    f"(student.num_layers = {n})"
                )
        if self.select is None:
            self.select = {"classification": "macro_f1", "mlm": "loss"}[self.task]
        if self.patience is not None and self.patience < 1:
            raise ConfigError(
                f"patience must be >= 1 (or null for no early stopping), got {self.patience}"
            )
