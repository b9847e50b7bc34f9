"""Run configs: what a training run reads, trains and writes. YAML sets these values.

Pretraining and fine-tuning, with the ``TrainConfig`` and ``OptimConfig`` that every run nests
(distillation's configs, which nest them too, are ``llmos.config.distill``). The fine-tuning
config's cross-field checks (which task takes which option) read the data, head and
contrastive configs beside it, so those stay in this module together (hence past 500 lines).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from llmos.config.clip import EmojiDataConfig
from llmos.config.model import BertConfig, CLIPConfig, GPTConfig, XLNetConfig
from llmos.errors import ConfigError


def check_pretraining_rates(mask_prob: float, short_seq_prob: float) -> None:
    """The masking rate in (0, 1) and the short-sequence rate in [0, 1] of a ``data:``
    section that builds pretraining examples (a run's, a distillation's)."""
    if not 0.0 < mask_prob < 1.0:
        raise ConfigError(f"data.mask_prob must be in (0, 1), got {mask_prob}")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise ConfigError(f"data.short_seq_prob must be in [0, 1], got {short_seq_prob}")


@dataclass
class DataConfig:
    """Pretraining data.

    ``corpus`` is a name under ``$LLMOS_HOME/data/corpus`` (``zh``, ``en``) or a directory with
    ``train.txt`` and ``valid.txt``: one sentence per line, a blank line between documents.
    ``tokenizer`` is a name under ``$LLMOS_HOME/tokenizers`` or a path to ``tokenizer.json``.

    ``objective``: ``mlm+nsp`` (BERT), ``mlm`` (RoBERTa full sentences), ``clm`` (GPT: whole
    documents, each followed by end-of-text, packed back to back into blocks of
    ``max_length`` tokens) or ``plm`` (XLNet's permutation LM on the same packed stream); by
    default the model's (``mlm+nsp`` for BERT, ``clm`` for GPT, ``plm`` for XLNet).

    ``plm`` options: ``plm_ratio`` of the tokens are predicted (1/K, K = 6 in the paper),
    chosen as spans of 1 to ``plm_max_span`` tokens; ``plm_memory`` tokens of the previous
    segment come before each segment of ``max_length`` tokens, run first (without
    gradient) to give the model its memory (0: no recurrence).
    """

    corpus: str = "zh"
    tokenizer: str = "wordpiece-zh"
    max_length: int = 128
    objective: Literal["mlm+nsp", "mlm", "clm", "plm", "contrastive"] | None = None
    mask_prob: float = 0.15
    short_seq_prob: float = 0.1
    max_valid_examples: int = 1024
    max_train_documents: int | None = None
    plm_ratio: float = 1 / 6
    plm_max_span: int = 5
    plm_memory: int = 0

    def __post_init__(self) -> None:
        if not 8 <= self.max_length <= 4096:
            raise ConfigError(f"data.max_length must be in [8, 4096], got {self.max_length}")
        check_pretraining_rates(self.mask_prob, self.short_seq_prob)
        if not 0.0 < self.plm_ratio < 1.0:
            raise ConfigError(f"data.plm_ratio must be in (0, 1), got {self.plm_ratio}")
        if self.plm_max_span < 1:
            raise ConfigError(f"data.plm_max_span must be >= 1, got {self.plm_max_span}")
        if self.plm_memory < 0:
            raise ConfigError(f"data.plm_memory must be >= 0, got {self.plm_memory}")


@dataclass
class OptimConfig:
    """AdamW with warmup and decay; no weight decay on biases and LayerNorm weights.

    ``head_lr`` (null: ``lr``) is the peak learning rate of the parameters outside the
    pretrained encoder when fine-tuning: the classifier, a CRF's transitions, a fresh pooler.
    They start from random weights and usually want a larger rate than the encoder (CRF
    taggers commonly train their transitions at 10-100x the encoder's). The schedule scales
    both alike.

    ``layer_decay`` (null: off) gives each encoder layer its own peak rate when fine-tuning:
    ``lr`` for the top layer, times ``layer_decay`` for each layer below it, the embeddings one
    step below the first layer (ELECTRA's layer-wise decay, Clark et al., 2020). The lower
    layers, which hold what pretraining learned about words, then move least; 0.8-0.9 is the
    usual range for 12 layers."""

    name: Literal["adamw"] = "adamw"
    lr: float = 5e-4
    head_lr: float | None = None
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-6
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    layer_decay: float | None = None

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        if self.head_lr is not None and self.head_lr <= 0:
            raise ConfigError(f"optim.head_lr must be positive (or null), got {self.head_lr}")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.layer_decay is not None and not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(
                f"optim.layer_decay must be in (0, 1] (null: off), got {self.layer_decay}"
            )


@dataclass
class TrainConfig:
    """The training loop: steps, batches, precision, evaluation and checkpoints.

    ``batch_size`` is the global batch of one optimizer step (over all DDP ranks and
    accumulation micro-steps); ``micro_batch_size`` is what one rank runs in one forward.

    ``eval_every`` validates every N steps and at the last step; ``0`` never validates (no
    best-checkpoint selection, no early stopping: the final checkpoint is the last step), for
    short runs whose one validation pass would cost as much as the training (a tagger reads
    every validation sentence whole).
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
        for name in ("max_steps", "batch_size", "save_every", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise ConfigError(
                f"train.eval_every must be positive (or 0: never validate), got {self.eval_every}"
            )
        if self.micro_batch_size is not None and self.micro_batch_size <= 0:
            raise ConfigError(
                f"train.micro_batch_size must be positive, got {self.micro_batch_size}"
            )
        if self.keep_last < 1:
            raise ConfigError(f"train.keep_last must be >= 1, got {self.keep_last}")


@dataclass
class PretrainConfig:
    """``llmos pretrain``: a BERT encoder trained with MLM (+ NSP), a GPT decoder trained
    with causal LM (``model.model_type: gpt``) or an XLNet trained with permutation LM
    (``model.model_type: xlnet``), on a text corpus; or a CLIP (``model.model_type: clip``),
    a ViT aligned contrastively with a frozen text encoder on the emoji images and captions
    that ``emoji`` describes (the ``data`` section is then not read).

    ``init`` (BERT only) continues from an encoder checkpoint instead of random weights: its
    architecture, weights and tokenizer are taken (``data.tokenizer`` is not read), ``model``
    then only names the pretraining heads (``model.heads``), and a head the checkpoint lacks
    starts fresh. This is how an embedding encoder without an MLM head (multilingual-e5) gets
    one: ``freeze_layers`` as in fine-tuning keeps the embeddings and the first N layers as
    they are (12 of e5's 12: only the head learns, and its decoder is tied to the frozen word
    embeddings), so the encoder still embeds exactly as before. ``data.corpus`` may join
    corpora with ``+`` (``zh+en``)."""

    name: str = "bert-zh"
    out_dir: str = "runs"
    model: BertConfig | GPTConfig | XLNetConfig | CLIPConfig = field(default_factory=BertConfig)
    data: DataConfig = field(default_factory=DataConfig)
    emoji: EmojiDataConfig = field(default_factory=EmojiDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    init: str | None = None
    freeze_layers: int | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"name must be a non-empty run name without '/', got {self.name!r}")
        if self.init is not None and self.model.model_type == "gpt":
            raise ConfigError("init continues a BERT encoder's pretraining; leave it out for a GPT")
        if self.freeze_layers is not None and (self.init is None or self.freeze_layers < 0):
            raise ConfigError(
                f"freeze_layers keeps the first N layers of the init checkpoint: it needs init "
                f"and must be >= 0 (0: the embeddings only), got {self.freeze_layers} "
                f"(init: {self.init})"
            )
        kind = self.model.model_type
        fits = {"gpt": ("clm",), "xlnet": ("plm",), "clip": ("contrastive",)}.get(
            kind, ("mlm+nsp", "mlm")
        )
        if self.data.objective is None:
            self.data.objective = fits[0]
        if self.data.objective not in fits:
            raise ConfigError(
                f"data.objective {self.data.objective!r} does not fit model.model_type "
                f"{kind!r} (bert: mlm+nsp or mlm; gpt: clm; xlnet: plm; clip: contrastive)"
            )
        if self.init is not None and kind in ("xlnet", "clip"):
            raise ConfigError(
                f"init continues a BERT encoder's pretraining; leave it out for {kind}"
            )
        if kind == "clip":
            return  # images and captions: data.max_length and heads do not apply
        need = {"mlm+nsp": ("mlm+nsp",), "mlm": ("mlm", "mlm+nsp"), "clm": (None,), "plm": (None,)}
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
    what to learn from a People's Daily file (``segmentation``, ``pos`` or ``ner``);
    ``split_cjk`` whether every CJK character becomes a token of its own (see
    ``llmos.text.cjk.split_cjk_characters``): null (auto) splits for SentencePiece Unigram
    tokenizers (XLM-R / multilingual-e5), which merge Chinese characters into words, and leaves
    WordPiece and BPE tokenizers as they are. The fine-tuned checkpoint saves the tokenizer it
    was trained with, so it tags the same way with no option at inference. ``char_tags``
    instead reads the text in the tokenizer's own pieces and predicts one tag per character
    from the vector of the piece holding it (``llmos.models.bert.BertForCharTagging``): the
    encoder sees its pretraining input, and a boundary inside a piece is still representable.

    Classification only: ``text_prefix`` is a string put before every input text (the first
    text of a sentence pair), in training and, recorded in task.json, at inference: the
    instruction prefix some encoders are trained to read, such as multilingual-e5's
    ``"query: "`` for classification inputs (Wang et al., 2022). Its tokens count in
    ``max_length``.
    """

    dataset: str = "sentiment-zh"
    label_key: str = "label"
    max_length: int = 128
    skip_bad_rows: bool = False
    scheme: Literal["bio", "bmes"] = "bio"
    spans_key: str = "spans"
    view: Literal["segmentation", "pos", "ner"] | None = None
    split_cjk: bool | None = None
    char_tags: bool = False
    text_prefix: str | None = None

    def __post_init__(self) -> None:
        if not 8 <= self.max_length <= 4096:
            raise ConfigError(f"data.max_length must be in [8, 4096], got {self.max_length}")
        if self.char_tags and self.split_cjk:
            raise ConfigError(
                "data.char_tags reads the tokenizer's own pieces and tags their characters; "
                "data.split_cjk would split them first: set one of the two"
            )
        if self.text_prefix is not None and not isinstance(self.text_prefix, str):
            raise ConfigError(
                f"data.text_prefix must be a string (or null), got {self.text_prefix!r}"
            )
        self.text_prefix = self.text_prefix or None  # "" puts nothing before the texts


@dataclass
class HeadConfig:
    """One head of a multi-task model (``task: multitask``): its ``name`` (the key it has in
    ``task.json`` and in the predictions), what it learns (``task``: ``classification`` or
    ``tagging``) from which data (``data``, as a single-task run's, without ``text_prefix``),
    and ``weight``: its share of the training steps (each step trains one head, drawn with
    probability weight / sum of weights). ``crf``, ``class_weights`` and a tagging head's
    ``data.char_tags`` as in a single-task run (every head reads the same tokens, so the
    tagging heads must agree on ``char_tags`` and ``split_cjk``). ``exclude`` leaves out the
    rows whose JSONL field has one of the listed values, in every split (``{intent:
    [HassVacuumStart]}``): data held out of training, e.g. to measure few-shot intents on
    intents the model never saw; the kept rows are written to the run's ``data/<head>/``
    directory and the head reads them from there. ``calibrate`` (classification heads) fits
    the head's temperature on its validation split after training (see
    :class:`FinetuneConfig`)."""

    name: str = ""
    task: Literal["classification", "tagging"] = "classification"
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    weight: float = 1.0
    crf: bool = False
    class_weights: Literal["none", "balanced"] = "none"
    exclude: dict[str, list[str]] = field(default_factory=dict)
    calibrate: bool = False

    def __post_init__(self) -> None:
        if self.calibrate and self.task != "classification":
            raise ConfigError(f"heads[{self.name}].calibrate needs task: classification")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.name or ""):
            raise ConfigError(
                f"heads[].name must be an identifier (letters, digits, _), got {self.name!r}"
            )
        if not self.weight > 0:
            raise ConfigError(f"heads[{self.name}].weight must be > 0, got {self.weight}")
        if self.crf and self.task != "tagging":
            raise ConfigError(f"heads[{self.name}].crf needs task: tagging")
        if self.data.char_tags and self.task != "tagging":
            raise ConfigError(
                f"heads[{self.name}].data.char_tags is for task: tagging, got task: {self.task}"
            )
        if self.data.text_prefix:
            raise ConfigError(
                f"heads[{self.name}].data.text_prefix: every head of a multi-task model reads "
                "the same tokens; leave text_prefix out"
            )
        for key, values in self.exclude.items():
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ConfigError(
                    f"heads[{self.name}].exclude.{key} must be a list of strings, got {values!r}"
                )


@dataclass
class ContrastiveConfig:
    """How ``task: embedding`` learns from (query, positive) pairs: the in-batch negatives
    loss of sentence-transformers' ``MultipleNegativesRankingLoss`` (van den Oord et al.,
    2018; Henderson et al., 2017). Each query must pick its positive among every passage of
    the batch (the other rows' positives and any hard negatives) by softmax over ``scale`` *
    cosine; ``scale`` 20 is a temperature of 0.05. ``symmetric`` adds the passage -> query
    direction (``MultipleNegativesSymmetricRankingLoss``), averaged with the first."""

    scale: float = 20.0
    symmetric: bool = False

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ConfigError(f"contrastive.scale must be > 0, got {self.scale}")


@dataclass
class FinetuneConfig:
    """``llmos finetune``: a task head on a pretrained encoder checkpoint, instruction tuning
    of a pretrained GPT (``task: instruct``, JSONL {instruction, input, output}), or several
    heads on one encoder (``task: multitask``, ``heads``: see :class:`HeadConfig`), or a
    retrieval embedding trained on (query, positive) pairs (``task: embedding``, JSONL read
    by :func:`~llmos.data.readers.read_pairs`; the loss in :class:`ContrastiveConfig`).

    ``retain`` (multitask only) weighs a term that keeps the encoder's sentence vector (the
    mean of its last layer) where ``init`` had it: 1 - cosine between the trained and the
    frozen initial encoder's vectors of each training batch, so that the vector stays a
    retrieval embedding while the heads are learned (learning without forgetting, Li and
    Hoiem, 2016). It costs one more forward pass (no backward) per step.

    ``crf`` (tagging only) puts a linear-chain CRF on the tagger: learned tag transitions,
    trained by the sequence negative log-likelihood and decoded by Viterbi with them.

    ``pooling`` (classification only) is what the classifier reads: ``cls`` (BERT's tanh
    pooler over the [CLS] state) or ``mean`` (the last layer averaged over the real tokens, no
    pooler: how sentence-embedding encoders such as multilingual-e5 are trained to be read).

    ``init_layers`` keeps only the first N encoder layers of ``init`` (null: all): a smaller,
    faster model that still starts from pretrained weights. Dropping the top layers of a
    pretrained encoder before fine-tuning keeps most of its accuracy (Sajjad et al., 2020,
    "On the Effect of Dropping Layers of Pre-trained Transformer Models").

    ``freeze_layers`` keeps the embeddings and the first N encoder layers (of those kept) as
    ``init`` has them (null: train everything; 0: freeze the embeddings only). Frozen layers
    run forward only: no gradients, no backward pass and no optimizer state for them, so a
    frozen layer costs about a third of a trained one per step, and the pretrained lower layers
    are not disturbed by a few hundred noisy steps (the upper layers adapt most in fine-tuning;
    Lee et al., 2019, "What Would Elsa Do? Freezing Layers During Transformer Fine-Tuning").

    ``calibrate`` (classification only; a multitask head has its own, ``heads[].calibrate``)
    fits the classifier's temperature on the validation split once training is done and records
    it in task.json (``llmos calibrate``, :mod:`llmos.train.calibration`): the labels stay, the
    probabilities become honest, so thresholds on them mean the same from one model to the
    next.

    ``detect_weight`` (spelling only) is the detection loss's share of a spelling corrector's
    loss, the correction loss taking the rest (0.3 / 0.7 as pycorrector's MacBERT4CSC; see
    :mod:`llmos.train.tasks.spelling`). ``mask_correct`` (spelling only) is the share of the
    correct characters of each training sentence replaced by the mask token, their targets
    kept, so that the model learns to read a character from its context rather than copy it
    (Wu et al., 2023, "Rethinking Masked Language Modeling for Chinese Spelling Correction":
    20 %). ``lm_order`` (spelling only) fits, once training is done, the checkpoint's decoding
    with a character n-gram LM of that order trained on ``lm_corpus`` (default: the prepared
    Chinese corpus's train split), as ``llmos write lm`` does (:mod:`llmos.train.spelling_lm`);
    None: the model decodes alone."""

    name: str = "sentiment-zh"
    out_dir: str = "runs"
    init: str = "runs/bert-zh/checkpoint"
    task: Literal["classification", "tagging", "instruct", "multitask", "embedding", "spelling"] = (
        "classification"
    )
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    heads: list[HeadConfig] = field(default_factory=list)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    retain: float = 0.0
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_steps=50))
    train: TrainConfig = field(default_factory=TrainConfig)
    class_weights: Literal["none", "balanced"] = "none"
    select: str | None = None
    patience: int | None = 3
    crf: bool = False
    init_layers: int | None = None
    pooling: Literal["cls", "mean"] = "cls"
    freeze_layers: int | None = None
    calibrate: bool = False
    detect_weight: float = 0.3
    mask_correct: float = 0.2
    lm_order: int | None = None
    lm_corpus: str | None = None

    def __post_init__(self) -> None:
        if self.lm_order is not None and (self.task != "spelling" or not 2 <= self.lm_order <= 8):
            raise ConfigError(
                f"lm_order is a spelling model's n-gram LM order (2-8, task: spelling), got "
                f"{self.lm_order} with task: {self.task}"
            )
        if not 0 <= self.detect_weight <= 1:
            raise ConfigError(f"detect_weight must be in [0, 1], got {self.detect_weight}")
        if not 0 <= self.mask_correct < 1:
            raise ConfigError(f"mask_correct must be in [0, 1), got {self.mask_correct}")
        if self.calibrate and self.task != "classification":
            raise ConfigError(
                f"calibrate fits a classifier's temperature: it needs task: classification, got "
                f"task: {self.task} (a multitask head has heads[].calibrate)"
            )
        if not self.name or "/" in self.name:
            raise ConfigError(f"name must be a non-empty run name without '/', got {self.name!r}")
        if self.task == "multitask":
            if not self.heads:
                raise ConfigError("task: multitask needs heads (a list of {name, task, data})")
            names = [h.name for h in self.heads]
            if len(set(names)) != len(names):
                raise ConfigError(f"heads: names must differ, got {names}")
            if self.crf:
                raise ConfigError("task: multitask: set crf on the tagging head (heads[].crf)")
            taggers = [h for h in self.heads if h.task == "tagging"]
            if len({(h.data.char_tags, h.data.split_cjk) for h in taggers}) > 1:
                raise ConfigError(
                    "heads: every head reads the same tokens, so the tagging heads must agree on "
                    "data.char_tags and data.split_cjk, got "
                    + ", ".join(
                        f"{h.name}: char_tags={h.data.char_tags} split_cjk={h.data.split_cjk}"
                        for h in taggers
                    )
                )
        elif self.heads:
            raise ConfigError(f"heads are for task: multitask, got task: {self.task}")
        if self.retain < 0 or (self.retain and self.task != "multitask"):
            raise ConfigError(
                f"retain must be >= 0 and is for task: multitask, got {self.retain} "
                f"(task: {self.task})"
            )
        if self.pooling != "cls" and self.task not in ("classification", "multitask"):
            raise ConfigError(
                f"pooling chooses a classifier's input: it needs task: classification, got "
                f"task: {self.task} (leave pooling out)"
            )
        if self.data.text_prefix and self.task != "classification":
            # A tagger labels every token; the prefix's tokens would need labels of their own.
            raise ConfigError(
                f"data.text_prefix is put before a classifier's input texts: it needs task: "
                f"classification, got task: {self.task} (leave data.text_prefix out)"
            )
        if self.data.char_tags and self.task != "tagging":
            raise ConfigError(
                f"data.char_tags is for task: tagging, got task: {self.task} "
                "(leave data.char_tags out)"
            )
        if self.init_layers is not None and self.init_layers < 1:
            raise ConfigError(
                f"init_layers must be >= 1 (or null for all layers), got {self.init_layers}"
            )
        if self.freeze_layers is not None and self.freeze_layers < 0:
            raise ConfigError(
                f"freeze_layers must be >= 0 (0: the embeddings only; null: train everything), "
                f"got {self.freeze_layers}"
            )
        if self.crf and self.task != "tagging":
            raise ConfigError(
                f"crf is a sequence-labelling head: it needs task: tagging, got task: "
                f"{self.task} (set crf: false or task: tagging)"
            )
        micro = self.train.micro_batch_size
        if self.task == "embedding" and micro is not None and micro < self.train.batch_size:
            raise ConfigError(
                "train.micro_batch_size: task: embedding takes its negatives from the other "
                "pairs of one forward pass, so accumulating smaller micro-batches would weaken "
                f"them ({micro} < batch_size {self.train.batch_size}); lower batch_size instead"
            )
        if self.select is None:
            self.select = {
                "classification": "macro_f1",
                "tagging": "f1",
                "instruct": "loss",
                "multitask": "score",
                "embedding": "mrr",
                "spelling": "sentence_f1",
            }[self.task]
        if self.patience is not None and self.patience < 1:
            raise ConfigError(
                f"patience must be >= 1 (or null for no early stopping), got {self.patience}"
            )
