"""How a SetFit-style few-shot classifier is trained (:mod:`llmos.train.setfit`); here, with no
torch, so that ``llmos setfit``'s flags are built without importing it."""

from __future__ import annotations

from dataclasses import dataclass

from llmos.errors import ConfigError


@dataclass(frozen=True)
class SetFitConfig:
    """How a SetFit classifier is trained.

    ``steps`` batches of ``labels_per_batch`` labels x ``per_label`` examples (examples drawn
    with replacement when a label has fewer; a pair of one example with itself is not
    counted), texts cut at ``max_length`` tokens for this stage only (the head and the
    checkpoint read them up to the encoder's own length). ``lr`` is the encoder's peak rate
    (linear warm-up over a tenth of the steps, then linear decay), ``C`` the logistic
    regression's inverse regularisation on unit-scale vectors (the zero-shot classifier's
    ``logreg`` method uses the same value, 10).
    """

    steps: int = 60
    labels_per_batch: int = 8
    per_label: int = 4
    lr: float = 2e-5
    max_length: int = 64
    C: float = 10.0
    seed: int = 42
    num_threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "labels_per_batch", "max_length"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"setfit {name} must be positive, got {getattr(self, name)}")
        if self.per_label < 2:
            raise ConfigError(
                f"setfit per_label must be >= 2 (a batch needs pairs of one label), "
                f"got {self.per_label}"
            )
        if self.lr <= 0 or self.C <= 0:
            raise ConfigError(f"setfit lr and C must be positive, got {self.lr}, {self.C}")
