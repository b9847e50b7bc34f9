"""``llmos compress prune``: what to prune, on which data, and the recovery fine-tune."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmos.errors import ConfigError


@dataclass
class PruneConfig:
    """Prune a fine-tuned encoder (classifier or tagger) and report what it cost and saved.

    Attention heads and feed-forward neurons are removed globally by lowest importance. The
    recovery fine-tune uses the shared training loop (best step by validation); the speed-up is
    timed on the test split. The fields are the ``llmos compress prune`` flags, in the order its
    help lists them.

    Attributes:
        checkpoint: fine-tuned classifier or tagger checkpoint.
        heads: fraction of all heads to remove, in [0, 1).
        ffn: fraction of all FFN neurons to remove, in [0, 1).
        recover_steps: fine-tune the pruned model N steps.
        recover_lr: peak learning rate.
        out_dir: output directory (default: runs/<run>-pruned beside the run).
        data: dataset name or directory (default: the one in the checkpoint's task.json).
        label_key: label column/key (intent files: intent).
        importance_examples: training examples the importance is measured on.
        normalize: divide each layer's scores by their L2 norm before ranking (Michel et al.).
        batch_size: examples per batch.
        seed: seed of the importance examples' sample and of the recovery fine-tune.
        precision: weights of the recovery fine-tune (auto: bf16 where the device has it).
        num_threads: torch CPU threads (default: torch's).
        bench_repeats: time each model at least this many passes for the speed-up.
        bench_seconds: time each model at least this long for the speed-up (the median over
            interleaved rounds counts).
        progress: show a progress bar.
    """

    checkpoint: str
    heads: float = 0.4
    ffn: float = 0.0
    recover_steps: int = 0
    recover_lr: float = 1e-4
    out_dir: str | None = None
    data: str | None = None
    label_key: str | None = None
    importance_examples: int = 2048
    normalize: bool = True
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
