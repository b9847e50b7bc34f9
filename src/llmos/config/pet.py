"""How PET / iPET few-shot classifiers are trained (:mod:`llmos.train.pet`); here, with no
torch, so that ``llmos pet``'s flags are built without importing it."""

from __future__ import annotations

from dataclasses import dataclass, replace

from llmos.errors import ConfigError


@dataclass(frozen=True)
class PetConfig:
    """How a PET (or iPET) classifier is trained.

    Stage 1, for each pattern (and each of ``models_per_pattern`` seeds): the masked LM is
    fine-tuned on the labelled examples put into the pattern, ``steps`` steps of
    ``batch_size`` examples at peak rate ``lr`` (linear warm-up over a tenth, then linear
    decay), the loss the cross-entropy of the labels' verbalizer scores at the mask. Texts
    are cut to ``max_length`` tokens around the mask. Each model then scores the unlabelled
    pool (at most ``max_unlabelled`` texts, a seeded sample).

    iPET (``generations`` > 0): generation g trains every pattern's models again from the
    original masked LM, on the labelled examples plus pool texts labelled by the previous
    generation's *other* models, ``growth`` ** g times as many examples per label as the
    labelled set has (the pseudo-labelled ones drawn per label with probability proportional
    to the ensemble's confidence).

    PET's auxiliary language modelling (``mlm_weight`` a > 0; the paper's 1e-4): each step of
    every stage-1 model also draws ``batch_size`` unlabelled texts (put into the pattern, as
    the reference implementation does), masks ``mlm_probability`` of their tokens as BERT
    pretraining does, and the loss is ``(1 - a)`` times the cloze cross-entropy plus ``a``
    times the masked-LM cross-entropy (the reference implementation's ``--alpha`` weighs the
    cloze loss instead: its 0.9999 is a = 1e-4). 0 turns it off.

    Stage 2: the last generation's ensemble (the mean of its models' label log-probabilities)
    soft-labels the pool with a softmax at ``temperature`` (PET's 2), and a sequence
    classifier from the same encoder is trained on those soft labels and on the labelled
    examples (one-hot) for ``distill_steps`` of ``distill_batch`` at ``distill_lr``.

    ``steps``, ``distill_steps`` and ``distill_lr`` left None depend on the number of labels
    (:meth:`for_labels`): 100, 200 and 2e-5 for two, 300, 500 and 1e-4 for more.

    A run given no verbalizers chooses ``verbalizers_per_label`` words for each label from
    the examples, for tasks with more labels than a person would write words for.
    """

    steps: int | None = None
    batch_size: int = 8
    lr: float = 2e-5
    models_per_pattern: int = 1
    max_length: int = 128
    max_unlabelled: int = 2000
    generations: int = 0
    growth: float = 5.0
    temperature: float = 2.0
    distill_steps: int | None = None
    distill_batch: int = 16
    distill_lr: float | None = None
    mlm_weight: float = 0.0
    mlm_probability: float = 0.15
    verbalizers_per_label: int = 1
    seed: int = 42
    num_threads: int | None = None
    progress: bool = True

    def for_labels(self, num_labels: int) -> PetConfig:
        """This config with ``steps``, ``distill_steps`` and ``distill_lr`` that are None set
        by the number of labels: :data:`TWO_LABELS` for two (measured on sentiment),
        :data:`MANY_LABELS` for more (chosen on intent-zh's validation split: a fresh head over
        forty labels learns little in 200 steps at 2e-5)."""
        chosen = TWO_LABELS if num_labels <= 2 else MANY_LABELS
        given = {k: v for k, v in chosen.items() if getattr(self, k) is None}
        return replace(self, **given)

    def __post_init__(self) -> None:
        for name in ("steps", "distill_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"pet {name} must be positive, got {value}")
        if self.distill_steps is not None and self.distill_steps < 0:
            raise ConfigError(f"pet distill_steps must be >= 0, got {self.distill_steps}")
        for name in (
            "batch_size",
            "models_per_pattern",
            "max_length",
            "max_unlabelled",
            "distill_batch",
            "verbalizers_per_label",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"pet {name} must be positive, got {getattr(self, name)}")
        if self.generations < 0:
            raise ConfigError(f"pet generations must be >= 0, got {self.generations}")
        if self.growth < 1:
            raise ConfigError(f"pet growth must be >= 1, got {self.growth}")
        for name in ("lr", "temperature"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"pet {name} must be positive, got {getattr(self, name)}")
        if self.max_length < 8:
            raise ConfigError(f"pet max_length must be >= 8 tokens, got {self.max_length}")
        if not 0 <= self.mlm_weight < 1:
            raise ConfigError(
                f"pet mlm_weight must be in [0, 1) (0: no auxiliary MLM loss; the paper's "
                f"1e-4), got {self.mlm_weight}"
            )
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(
                f"pet mlm_probability must be in (0, 1) (BERT's 0.15), got {self.mlm_probability}"
            )


# PetConfig.for_labels: the schedule of a run that does not set it, by its number of labels.
TWO_LABELS = {"steps": 100, "distill_steps": 200, "distill_lr": 2e-5}
MANY_LABELS = {"steps": 300, "distill_steps": 500, "distill_lr": 1e-4}
