"""How a zero-shot classifier is self-trained on unlabelled text; here, with no torch, so that
``llmos self-train``'s flags are built without importing the trainer."""

from __future__ import annotations

from dataclasses import dataclass

from llmos.errors import ConfigError


@dataclass(frozen=True)
class SelfTrainConfig:
    """How a classifier is self-trained from label descriptions and unlabelled texts.

    Each round the teacher (round 1: the encoder's zero-shot similarity to the label
    descriptions, each label's mean over the pool subtracted; later rounds: the previous
    student's log-probabilities) labels every pool text with its best label. The
    ``fraction`` of the least-predicted label's count is taken of every label, its texts
    with the largest margin between the best and second-best score (the same number per
    label), and a fresh classifier from the encoder is trained on them with one-hot targets:
    ``steps`` steps of ``batch_size`` texts at peak rate ``lr`` (linear warm-up over a tenth,
    then linear decay; weight decay 0.01), texts cut to ``max_length`` tokens (the
    classifier reads longer ones in windows of that length). ``rounds`` rounds in all.

    The defaults are the measured ones (sentiment-zh and -en, 5,000-text pools: the
    trainer's docstring has the numbers); a second round did not help there.
    """

    fraction: float = 0.5
    rounds: int = 1
    steps: int = 300
    batch_size: int = 16
    lr: float = 3e-5
    max_length: int = 128
    seed: int = 0
    num_threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"self-train fraction must be in (0, 1], got {self.fraction}")
        if self.rounds < 1:
            raise ConfigError(f"self-train rounds must be >= 1, got {self.rounds}")
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"self-train {name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"self-train lr must be positive, got {self.lr}")
        if self.max_length < 8:
            raise ConfigError(f"self-train max_length must be >= 8 tokens, got {self.max_length}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"self-train num_threads must be >= 1, got {self.num_threads}")
