"""``llmos compress prune``: what to prune, on which data, and the recovery fine-tune."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmos.errors import ConfigError


@dataclass
class PruneConfig:
    """Prune a fine-tuned encoder (classifier or tagger) and report what it cost and saved.

    ``heads`` and ``ffn`` are the fractions of all attention heads and of all feed-forward
    neurons to remove (chosen globally by lowest importance). Importance is measured on
    ``importance_examples`` training examples of ``data`` (default: the dataset in the
    checkpoint's ``task.json``). ``recover_steps`` > 0 fine-tunes the pruned model that many
    steps with the shared training loop (best step by validation). ``out_dir`` defaults to
    ``runs/<run name>-pruned`` beside the checkpoint's run. The speed-up is timed on the test
    split: the best of at least ``bench_repeats`` passes per model, and at least
    ``bench_seconds`` of passes in all.
    """

    checkpoint: str
    out_dir: str | None = None
    heads: float = 0.4
    ffn: float = 0.0
    data: str | None = None
    label_key: str | None = None
    importance_examples: int = 2048
    normalize: bool = True
    recover_steps: int = 0
    recover_lr: float = 1e-4
    batch_size: int = 32
    seed: int = 42
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    num_threads: int | None = None
    bench_repeats: int = 3
    bench_seconds: float = 5.0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("heads", "ffn"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(
                    f"--{name} is the fraction to remove, in [0, 1); got {getattr(self, name)}"
                )
        if self.heads == 0.0 and self.ffn == 0.0:
            raise ConfigError("nothing to prune: give --heads and/or --ffn above 0")
        for name in ("importance_examples", "batch_size", "bench_repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.recover_steps < 0:
            raise ConfigError(f"--recover-steps must be >= 0, got {self.recover_steps}")
        if self.recover_lr <= 0:
            raise ConfigError(f"--recover-lr must be positive, got {self.recover_lr}")
        if self.bench_seconds < 0:
            raise ConfigError(f"--bench-seconds must be >= 0, got {self.bench_seconds}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ConfigError(f"--threads must be positive, got {self.num_threads}")
