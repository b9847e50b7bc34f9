"""What a checkpoint was trained to do: ``task.json`` read into a typed :data:`TaskSpec`.

A ``TaskSpec`` is one of eight frozen dataclasses, matched with ``isinstance`` or ``match``:

==================  =====================================================================
``Classification``  sequence classifier: ``labels``, ``max_length``, ``label_key``,
                    ``pooling`` (cls | mean; written only when mean), ``text_prefix``
                    and ``temperature`` (each written only when set)
``Tagging``         sequence labeller: ``labels``, ``scheme`` (bio | bmes), ``max_length``,
                    ``view``, ``spans_key``, ``crf``, ``char_tags`` (each written only
                    when true)
``MultiTask``       one encoder, several heads read from the same pass: ``heads`` (name ->
                    its ``Classification`` or ``Tagging``, each head's ``task.json`` dict
                    nested), ``max_length``; classifier heads and embeddings read the mean
                    of the last layer
``Embedding``       sentence-embedding encoder: ``pooling``, ``normalize``, ``max_length``,
                    ``query_prefix``, ``passage_prefix``
``Spelling``        spelling corrector (detection + correction heads over characters):
                    ``chars`` (how many output characters), ``max_length``,
                    ``detect_weight``, ``threshold``, ``mask_correct``
``Instruct``        instruction-tuned GPT: ``template``, ``template_with_input``,
                    ``max_length``
``MaskedLM``        a pretrained encoder (no ``task.json``): fill-mask, embeddings
``Generation``      a pretrained GPT (no ``task.json``): text continuation
==================  =====================================================================

Keys a spec does not model (``init``, ``dataset``, ``distilled_from``, ``quantized_from``,
``pruned_heads``, ...) are kept in ``extra``, in their order, so that
``parse_task(d).to_json() == d`` for every file llmos writes: the on-disk format stays as it is.
Validation names the file and the field: ``runs/x/task.json: field 'scheme' must be 'bio' or
'bmes', got 'iob'``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from llmos.errors import CheckpointError

POOLINGS = ("mean", "cls", "max")
SCHEMES = ("bio", "bmes")


class _Spec:
    """What every spec shares: its ``kind`` (the ``task`` key) and :meth:`to_json`."""

    kind: ClassVar[str]

    def to_json(self) -> dict[str, Any]:
        """The ``task.json`` dict: ``task``, the set fields in order, then ``extra``."""
        return to_json(self)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Classification(_Spec):
    """A sequence classifier (intent, sentiment, sentence pairs)."""

    kind: ClassVar[str] = "classification"
    labels: tuple[str, ...]
    max_length: int | None = None  # None: the model's max_position
    label_key: str | None = None  # the dataset's label column it was trained on
    pooling: Literal["cls", "mean"] = "cls"  # the head's input (written only when mean)
    # Put before every input text (the first of a pair), as in training: E5's "query: ".
    text_prefix: str | None = None
    # The logits are divided by it before the softmax (temperature scaling, fitted on held-out
    # data by ``llmos calibrate``: llmos.train.calibration); None: 1, the raw softmax.
    temperature: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Tagging(_Spec):
    """A sequence labeller (word segmentation, POS, NER, slots) under a BIO or BMES scheme."""

    kind: ClassVar[str] = "tagging"
    labels: tuple[str, ...]
    scheme: Literal["bio", "bmes"]
    max_length: int | None = None
    view: str | None = None  # the dataset view it was trained on (e.g. "ner", "pos")
    spans_key: str | None = None
    crf: bool = False  # a linear-chain CRF head (crf.* weights); decoded with its transitions
    # One tag per character, predicted from the tokenizer's own pieces (BertForCharTagging).
    char_tags: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MultiTask(_Spec):
    """One shared encoder with several heads (intent, slots, sentiment), all read from one
    forward pass; its mean-pooled last layer is also the sentence vector (``embed``).

    ``heads`` maps each head's name to its spec, a :class:`Classification` (``pooling``
    ``mean``) or a :class:`Tagging`; ``heads[name].to_json()`` is nested under ``heads`` in
    ``task.json``. Every head reads the same tokens, so CJK characters are split when a
    tagging head needs them and no head has a ``text_prefix``."""

    kind: ClassVar[str] = "multitask"
    heads: Mapping[str, Classification | Tagging]
    max_length: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Embedding(_Spec):
    """A sentence-embedding encoder: how its vectors are pooled and normalized, and the
    prefixes an asymmetric retrieval model (E5: ``query: `` / ``passage: ``) was trained
    with, which ``embed(kind=...)`` puts before each text."""

    kind: ClassVar[str] = "embedding"
    pooling: Literal["mean", "cls", "max"] = "mean"
    normalize: bool = True
    max_length: int | None = None
    query_prefix: str | None = None
    passage_prefix: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SpellingLM:
    """How a spelling checkpoint decodes with its n-gram LM: the file (in the checkpoint
    directory), the weights of the correction log-probability ratio (``alpha``) and of the
    detection logit (``beta``), the least score of an edit in nats (``threshold``), and the
    noisy-channel prior's weights if it decodes with one (``channel``: ``{"weights": {feature:
    nats}, "constant": nats}``, read by the inference layer; its lexicon in the checkpoint's
    ``confusion/``)."""

    file: str
    alpha: float
    beta: float
    threshold: float
    channel: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": self.file,
            "alpha": self.alpha,
            "beta": self.beta,
            "threshold": self.threshold,
        }
        if self.channel is not None:
            out["channel"] = self.channel
        return out


@dataclass(frozen=True)
class Spelling(_Spec):
    """A spelling corrector (:class:`~llmos.models.csc.BertForSpellingCorrection`): every CJK
    character is a token of its own, and each is replaced by the correction head's best of
    ``chars`` characters when the detection head's probability reaches ``threshold``."""

    kind: ClassVar[str] = "spelling"
    chars: int
    max_length: int | None = None
    detect_weight: float = 0.3  # the detection loss's share in training (0.7 correction)
    threshold: float = 0.5  # detection probability from which a character is replaced
    # The share of correct characters masked in training; when > 0 the model has learned to
    # read a masked character from its context, and flagged characters are read again masked.
    mask_correct: float = 0.0
    # Decoding with a character n-gram LM beside the model, fitted by ``llmos write lm``: the
    # LM's file in the checkpoint, the weights of the model's evidence and the score
    # threshold. None: the model alone decodes.
    lm: SpellingLM | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Instruct(_Spec):
    """An instruction-tuned GPT and the prompt template it was tuned with."""

    kind: ClassVar[str] = "instruct"
    template: str | None = None  # None: today's default template (llmos.data.clm)
    template_with_input: str | None = None
    max_length: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MaskedLM(_Spec):
    """A pretrained encoder: no ``task.json`` (fill-mask, or embeddings with the defaults)."""

    kind: ClassVar[str] = "mlm"
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Generation(_Spec):
    """A pretrained GPT: no ``task.json`` (text continuation)."""

    kind: ClassVar[str] = "generation"
    extra: Mapping[str, Any] = field(default_factory=dict)


TaskSpec = (
    Classification | Tagging | MultiTask | Embedding | Spelling | Instruct | MaskedLM | Generation
)
KINDS: dict[str, type] = {
    c.kind: c
    for c in (
        Classification,
        Tagging,
        MultiTask,
        Embedding,
        Spelling,
        Instruct,
        MaskedLM,
        Generation,
    )
}
# Specs of pretrained checkpoints: without extra keys they are the absence of task.json.
PRETRAINED = (MaskedLM, Generation)
ENCODER_TASKS = (Classification, Tagging, MultiTask, Embedding, Spelling, MaskedLM)
DECODER_TASKS = (Instruct, Generation)
XLNET_TASKS = (Classification, Tagging, MaskedLM)  # MaskedLM: a pretrained XLNet, no task

# The fields each kind models, in the order llmos writes them (``extra`` follows).
_FIELDS: dict[str, tuple[str, ...]] = {
    "classification": (
        "labels",
        "max_length",
        "label_key",
        "pooling",
        "text_prefix",
        "temperature",
    ),
    "tagging": ("labels", "scheme", "max_length", "view", "spans_key", "crf", "char_tags"),
    "multitask": ("heads", "max_length"),
    "embedding": ("pooling", "normalize", "max_length", "query_prefix", "passage_prefix"),
    "spelling": ("chars", "max_length", "detect_weight", "threshold", "mask_correct", "lm"),
    "instruct": ("template", "template_with_input", "max_length"),
    "mlm": (),
    "generation": (),
}


# Fields added after files without them were written: absent means this default, and the
# default is not written, so older files round-trip unchanged.
_NEWER_DEFAULTS: dict[tuple[str, str], Any] = {
    ("tagging", "crf"): False,
    ("tagging", "char_tags"): False,
    ("classification", "pooling"): "cls",
}


def to_json(spec: TaskSpec) -> dict[str, Any]:
    """The ``task.json`` dict of ``spec``: ``task``, the set fields in order, then ``extra``.

    Fields left at None are not written (the file never had them); an embedding's ``pooling``
    and ``normalize`` have defaults and are always written; fields newer than the format
    (``_NEWER_DEFAULTS``) only when set otherwise, so files from before them round-trip
    unchanged."""
    out: dict[str, Any] = {"task": spec.kind}
    for name in _FIELDS[spec.kind]:
        value = getattr(spec, name)
        newer = (spec.kind, name) in _NEWER_DEFAULTS
        if value is not None and not (newer and value == _NEWER_DEFAULTS[spec.kind, name]):
            if name == "heads":
                value = {head: to_json(sub) for head, sub in value.items()}
            elif isinstance(value, SpellingLM):
                value = value.to_json()
            out[name] = list(value) if isinstance(value, tuple) else value
    out.update(spec.extra)
    return out


def task_json(spec: TaskSpec | None) -> dict[str, Any] | None:
    """What ``task.json`` holds for ``spec``: None (no file) for a pretrained checkpoint."""
    if spec is None or (isinstance(spec, PRETRAINED) and not spec.extra):
        return None
    return to_json(spec)


def _field_error(source: str, name: str, expected: str, got: Any) -> CheckpointError:
    return CheckpointError(f"{source}: field {name!r} must be {expected}, got {got!r}")


def _labels(d: Mapping[str, Any], source: str) -> tuple[str, ...]:
    labels = d.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise _field_error(source, "labels", "a non-empty list of strings", labels)
    return tuple(labels)


def _optional(d: Mapping[str, Any], name: str, source: str, kind: type, expected: str) -> Any:
    value = d.get(name)
    if value is None:
        return None
    # bool is an int in Python; a max_length of true is still wrong.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _field_error(source, name, expected, value)
    return value


def _max_length(d: Mapping[str, Any], source: str) -> int | None:
    value = _optional(d, "max_length", source, int, "a positive integer")
    if value is not None and value < 1:
        raise _field_error(source, "max_length", "a positive integer", value)
    return value


def _temperature(d: Mapping[str, Any], source: str) -> float | None:
    value = d.get("temperature")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e4:
        raise _field_error(source, "temperature", "a number > 0", value)
    return float(value)


def _fraction(d: Mapping[str, Any], name: str, default: float, source: str) -> float:
    value = d.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise _field_error(source, name, "a number in [0, 1]", value)
    return float(value)


def _number(value: Any) -> bool:
    """A JSON number (not a bool) of magnitude at most 1e6."""
    return not isinstance(value, bool) and isinstance(value, int | float) and abs(value) <= 1e6


def _spelling_lm(d: Any, source: str) -> SpellingLM | None:
    if d is None:
        return None
    if not isinstance(d, dict):
        raise _field_error(source, "lm", "an object", d)
    name = d.get("file")
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name[0] == ".":
        raise _field_error(source, "lm.file", "a file name in the checkpoint directory", name)
    numbers = {}
    for key in ("alpha", "beta", "threshold"):
        value = d.get(key)
        if not _number(value):
            raise _field_error(source, f"lm.{key}", "a number", value)
        numbers[key] = float(value)
    return SpellingLM(name, **numbers, channel=_channel(d.get("channel"), source))


def _channel(d: Any, source: str) -> dict[str, Any] | None:
    """``lm.channel``: ``{"weights": {name: number}, "constant": number}`` (the names are
    checked where the prior is built)."""
    if d is None:
        return None
    weights = d.get("weights") if isinstance(d, dict) else None
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and _number(v) for k, v in weights.items()
    ):
        raise _field_error(source, "lm.channel.weights", "an object of numbers", weights)
    if not _number(d.get("constant")):
        raise _field_error(source, "lm.channel.constant", "a number", d.get("constant"))
    return {"weights": {k: float(v) for k, v in weights.items()}, "constant": float(d["constant"])}


def parse_task(d: Any, source: str = "task.json") -> TaskSpec:
    """Validate a ``task.json`` dict into its :data:`TaskSpec`.

    Args:
        d: the decoded JSON.
        source: the file, named in error messages.

    Raises:
        CheckpointError: naming ``source``, the field, what was expected and what was found.
    """
    if not isinstance(d, dict):
        raise CheckpointError(f"{source}: expected a JSON object, got {type(d).__name__}")
    kind = d.get("task")
    if kind not in KINDS:
        raise _field_error(source, "task", f"one of {', '.join(map(repr, KINDS))}", kind)
    extra = {k: v for k, v in d.items() if k != "task" and k not in _FIELDS[kind]}
    if kind == "classification":
        pooling = d.get("pooling", "cls")
        if pooling not in ("cls", "mean"):
            raise _field_error(source, "pooling", "'cls' or 'mean'", pooling)
        return Classification(
            labels=_labels(d, source),
            max_length=_max_length(d, source),
            label_key=_optional(d, "label_key", source, str, "a string"),
            pooling=pooling,
            text_prefix=_optional(d, "text_prefix", source, str, "a string"),
            temperature=_temperature(d, source),
            extra=extra,
        )
    if kind == "tagging":
        labels = _labels(d, source)
        scheme = d.get("scheme")
        if scheme not in SCHEMES:
            raise _field_error(source, "scheme", "'bio' or 'bmes'", scheme)
        crf, char_tags = d.get("crf", False), d.get("char_tags", False)
        if not isinstance(crf, bool):
            raise _field_error(source, "crf", "true or false", crf)
        if not isinstance(char_tags, bool):
            raise _field_error(source, "char_tags", "true or false", char_tags)
        return Tagging(
            labels=labels,
            scheme=scheme,
            max_length=_max_length(d, source),
            view=_optional(d, "view", source, str, "a string"),
            spans_key=_optional(d, "spans_key", source, str, "a string"),
            crf=crf,
            char_tags=char_tags,
            extra=extra,
        )
    if kind == "multitask":
        heads = d.get("heads")
        if not isinstance(heads, dict) or not heads:
            raise _field_error(source, "heads", "a non-empty mapping of head name -> task", heads)
        parsed: dict[str, Classification | Tagging] = {}
        for name, sub in heads.items():
            spec = parse_task(sub, f"{source} (heads.{name})")
            if not isinstance(spec, Classification | Tagging):
                raise _field_error(
                    source, f"heads.{name}.task", "'classification' or 'tagging'", spec.kind
                )
            if isinstance(spec, Classification) and (
                spec.pooling != "mean" or spec.text_prefix is not None
            ):
                raise _field_error(
                    source,
                    f"heads.{name}",
                    "a classifier reading the mean (pooling: mean, no text_prefix)",
                    sub,
                )
            parsed[name] = spec
        return MultiTask(heads=parsed, max_length=_max_length(d, source), extra=extra)
    if kind == "embedding":
        pooling = d.get("pooling", "mean")
        if pooling not in POOLINGS:
            raise _field_error(source, "pooling", f"one of {', '.join(POOLINGS)}", pooling)
        normalize = d.get("normalize", True)
        if not isinstance(normalize, bool):
            raise _field_error(source, "normalize", "true or false", normalize)
        return Embedding(
            pooling,
            normalize,
            _max_length(d, source),
            _optional(d, "query_prefix", source, str, "a string"),
            _optional(d, "passage_prefix", source, str, "a string"),
            extra,
        )
    if kind == "spelling":
        chars = _optional(d, "chars", source, int, "a positive integer")
        if chars is None or chars < 1:
            raise _field_error(source, "chars", "a positive integer", d.get("chars"))
        return Spelling(
            chars=chars,
            max_length=_max_length(d, source),
            detect_weight=_fraction(d, "detect_weight", 0.3, source),
            threshold=_fraction(d, "threshold", 0.5, source),
            mask_correct=_fraction(d, "mask_correct", 0.0, source),
            lm=_spelling_lm(d.get("lm"), source),
            extra=extra,
        )
    if kind == "instruct":
        template = _optional(d, "template", source, str, "a string")
        if template is not None and "{instruction}" not in template:
            raise _field_error(source, "template", "a string with '{instruction}'", template)
        return Instruct(
            template=template,
            template_with_input=_optional(d, "template_with_input", source, str, "a string"),
            max_length=_max_length(d, source),
            extra=extra,
        )
    return KINDS[kind](extra=extra)  # mlm, generation: nothing else to check
