"""Model architecture configs. Saved as ``config.json`` in every checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from llmos.errors import ConfigError

# Written to config.json only when set, so that an unpruned, unquantized checkpoint's config.json
# stays as it was (and llmos versions without pruning keep reading it).
UNSET_NOT_SAVED = ("layer_heads", "layer_intermediate", "quantization")

SIZES = (
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "max_position",
)


def _check_sizes(cfg: BertConfig | GPTConfig | XLNetConfig) -> None:
    """Positive sizes, heads that divide the width, dropout rates in [0, 1) (those the config
    has: XLNet has one rate for all its dropout)."""
    for name in SIZES:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"model.{name} must be positive, got {getattr(cfg, name)}")
    if cfg.hidden_size % cfg.num_heads:
        raise ConfigError(
            f"model.hidden_size ({cfg.hidden_size}) must be divisible by "
            f"model.num_heads ({cfg.num_heads})"
        )
    for name in ("dropout", "attention_dropout"):
        if hasattr(cfg, name) and not 0.0 <= getattr(cfg, name) < 1.0:
            raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(cfg, name)}")


@dataclass
class BertConfig:
    """A BERT encoder (the architecture of Hugging Face ``BertModel``).

    ``vocab_size`` is taken from the tokenizer when a model is built for training.
    ``model_type`` ``roberta`` is the same architecture imported from (and exported to) HF
    RoBERTa: one token type, positions counted from 0 here (HF's offset of ``pad_token_id +
    1`` is applied when converting). ``heads`` are the pretraining heads a checkpoint carries
    (``mlm+nsp`` as BERT, ``mlm`` as RoBERTa, ``none`` for a bare encoder such as
    all-MiniLM-L6-v2); ``pooler`` whether it has the tanh pooler over ``[CLS]``.

    ALBERT-style options (Lan et al., 2019): ``embedding_size`` E < ``hidden_size`` factorizes
    the embeddings (V x E, then an E -> H projection; the MLM decoder maps back through E);
    ``share_layers`` runs one set of layer weights ``num_layers`` times (stored once).

    ``quantization`` is set by ``llmos compress quantize``: ``int8-dynamic`` (int8 weights in
    ``model.safetensors``) or ``onnx-int8`` (an ONNX Runtime graph in ``model.onnx``). Such
    checkpoints are for inference only.
    Pruned encoders (``llmos compress prune``): ``layer_heads`` is the number of attention heads
    each layer keeps and ``layer_intermediate`` its feed-forward width (None: all layers keep
    ``num_heads`` / ``intermediate_size``). The head size stays ``hidden_size // num_heads``. A
    layer may keep no head at all (Michel et al., 2019 allow it): its attention block then adds
    only its output bias.
    """

    model_type: Literal["bert", "roberta"] = "bert"
    vocab_size: int = 21128
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    max_position: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    heads: Literal["mlm+nsp", "mlm", "none"] = "mlm+nsp"
    pooler: bool = True
    embedding_size: int | None = None
    share_layers: bool = False
    quantization: Literal["int8-dynamic", "onnx-int8"] | None = None
    layer_heads: list[int] | None = None
    layer_intermediate: list[int] | None = None

    def __post_init__(self) -> None:
        _check_sizes(self)
        if self.embedding_size is not None and not 0 < self.embedding_size <= self.hidden_size:
            raise ConfigError(
                f"model.embedding_size must be in [1, hidden_size={self.hidden_size}] "
                f"(or null for none), got {self.embedding_size}"
            )
        if self.heads == "mlm+nsp" and not self.pooler:
            raise ConfigError("model.heads 'mlm+nsp' needs the pooler (NSP reads it)")
        for name, most in (
            ("layer_heads", self.num_heads),
            ("layer_intermediate", self.intermediate_size),
        ):
            sizes = getattr(self, name)
            if sizes is None:
                continue
            if self.share_layers:
                raise ConfigError(
                    f"model.{name} (a pruned encoder) cannot be combined with share_layers: "
                    "shared layers have one size"
                )
            if len(sizes) != self.num_layers:
                raise ConfigError(
                    f"model.{name} needs one entry per layer ({self.num_layers}), got {len(sizes)}"
                )
            if any(not 0 <= n <= most for n in sizes):
                raise ConfigError(f"model.{name} entries must be in [0, {most}], got {sizes}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    def heads_of(self, layer: int) -> int:
        """Attention heads of layer ``layer`` (fewer than ``num_heads`` once pruned)."""
        return self.num_heads if self.layer_heads is None else self.layer_heads[layer]

    def intermediate_of(self, layer: int) -> int:
        """Feed-forward width of layer ``layer`` (below ``intermediate_size`` once pruned)."""
        if self.layer_intermediate is None:
            return self.intermediate_size
        return self.layer_intermediate[layer]

    @property
    def pruned(self) -> bool:
        """Sizes vary per layer (``layer_heads`` or ``layer_intermediate`` is set)."""
        return self.layer_heads is not None or self.layer_intermediate is not None

    @property
    def factorized(self) -> bool:
        """True when the embeddings are narrower than the hidden states (ALBERT)."""
        return self.embedding_size is not None and self.embedding_size != self.hidden_size

    @property
    def albert(self) -> bool:
        """Uses an option that no BERT/RoBERTa checkpoint of Hugging Face has."""
        return self.factorized or self.share_layers


@dataclass
class GPTConfig:
    """A GPT-2 decoder (the architecture of Hugging Face ``GPT2LMHeadModel``): pre-LayerNorm
    blocks, learned positions, tanh-approximated GELU, output projection tied to the token
    embeddings. ``max_position`` is the context window.
    """

    model_type: Literal["gpt"] = "gpt"
    vocab_size: int = 16000
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    max_position: int = 256
    dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        _check_sizes(self)

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass
class XLNetConfig:
    """An XLNet encoder (the architecture of Hugging Face ``XLNetModel``, Yang et al. 2019):
    post-LayerNorm layers with Transformer-XL relative attention (sinusoidal relative positions,
    content/position/segment biases ``r_w_bias``/``r_r_bias``/``r_s_bias``, relative segment
    encodings), two-stream attention for permutation LM pretraining, and a memory of the
    previous segment.

    There are no absolute positions: ``max_position`` is only the longest input fine-tuning and
    inference accept. ``mem_len`` is how many hidden states per layer a memory keeps (0: the
    whole previous segment). ``clamp_len`` caps relative distances (-1: no cap). HF options
    this file does not build (``attn_type`` uni, ``bi_data``, ``same_length``) are refused on
    import. ``dropout`` is also applied to attention probabilities, as in XLNet. The sequence
    summary of a classifier is HF's default: the last real token (XLNet's ``<cls>`` sits at the
    end), a tanh projection, then dropout.
    """

    model_type: Literal["xlnet"] = "xlnet"
    vocab_size: int = 21128
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    max_position: int = 512
    dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    mem_len: int = 0
    clamp_len: int = -1
    ff_activation: Literal["gelu", "relu", "gelu_new"] = "gelu"

    def __post_init__(self) -> None:
        _check_sizes(self)
        if self.hidden_size % 2:
            raise ConfigError(
                f"model.hidden_size must be even (sinusoidal relative positions), got "
                f"{self.hidden_size}"
            )
        if self.mem_len < 0:
            raise ConfigError(f"model.mem_len must be >= 0, got {self.mem_len}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads


@dataclass
class ViTConfig:
    """A Vision Transformer (the architecture of Hugging Face ``ViTModel``, Dosovitskiy et al.
    2021, https://arxiv.org/abs/2010.11929): square ``image_size`` images of ``num_channels``
    channels cut into (``image_size`` / ``patch_size``)^2 patches, a [CLS] token, learned
    positions, pre-LayerNorm layers with exact GELU, a final LayerNorm, and (``pooler``) HF's
    tanh pooler over the [CLS] state.

    Standalone for now (issue 22): it is not in :data:`ModelConfig`, so no checkpoint's
    ``config.json`` loads as a ViT yet; an image encoder is built from this config directly
    (``llmos.models.vision.ViTModel``) and HF weights map with
    ``llmos.checkpoint.hf_vit``. The defaults fit the 64 px emoji images of
    ``llmos data prepare --with-emoji``: 8 px patches, 64 patches + [CLS].
    """

    model_type: Literal["vit"] = "vit"
    image_size: int = 64
    patch_size: int = 8
    num_channels: int = 3
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 1024
    dropout: float = 0.0
    attention_dropout: float = 0.0
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pooler: bool = True

    def __post_init__(self) -> None:
        for name in (
            "image_size",
            "patch_size",
            "num_channels",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"model.image_size ({self.image_size}) must be divisible by "
                f"model.patch_size ({self.patch_size})"
            )
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"model.hidden_size ({self.hidden_size}) must be divisible by "
                f"model.num_heads ({self.num_heads})"
            )
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_patches(self) -> int:
        """N, the patches of one image: (image_size / patch_size)^2."""
        return (self.image_size // self.patch_size) ** 2


@dataclass
class CLIPConfig:
    """An image-text model trained contrastively (CLIP, Radford et al. 2021,
    https://arxiv.org/abs/2103.00020) whose text tower is a frozen sentence encoder: only the
    image encoder (``vision``, a :class:`ViTConfig` trained from scratch), the two linear
    projections into a shared space of ``projection_dim`` and the temperature learn.

    ``text_encoder`` is the checkpoint of the frozen text tower (its unit vectors of
    ``text_dim`` are computed once and cached); ``text_kind`` the prefix kind it embeds
    captions with (``query``/``passage`` for multilingual-e5). ``logit_scale_init`` is
    log(1 / 0.07), CLIP's start; the scale exp(logit_scale) is clamped at ``logit_scale_max``
    (100, as CLIP) so training cannot sharpen the softmax without bound.

    Not in :data:`ModelConfig`: a CLIP checkpoint has no tokenizer and is read apart from
    the text checkpoints (the checkpoint layer's CLIP reader; ``llmos.load`` gives an image
    pipeline).
    """

    model_type: Literal["clip"] = "clip"
    vision: ViTConfig = field(default_factory=lambda: ViTConfig(pooler=False))
    text_encoder: str = "runs/e5-zh"
    text_kind: Literal["query", "passage"] = "query"
    text_dim: int = 384
    projection_dim: int = 128
    logit_scale_init: float = 2.6592
    logit_scale_max: float = 100.0

    def __post_init__(self) -> None:
        for name in ("text_dim", "projection_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if not 1.0 < self.logit_scale_max <= 1000.0:
            raise ConfigError(
                f"model.logit_scale_max must be in (1, 1000], got {self.logit_scale_max}"
            )


# Any architecture a checkpoint's config.json can name (``model_type`` tells them apart).
ModelConfig = BertConfig | GPTConfig | XLNetConfig

# Named sizes, as in the BERT "compact models" family (Turc et al., 2019).
MODEL_PRESETS: dict[str, BertConfig] = {
    "bert-tiny": BertConfig(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512),
    "bert-mini": BertConfig(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024),
    "bert-small": BertConfig(hidden_size=512, num_layers=4, num_heads=8, intermediate_size=2048),
    "bert-medium": BertConfig(hidden_size=512, num_layers=8, num_heads=8, intermediate_size=2048),
    "bert-base": BertConfig(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
}


def model_preset(name: str, **overrides: object) -> BertConfig:
    """A copy of a named preset with some fields replaced."""
    if name not in MODEL_PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {sorted(MODEL_PRESETS)}")
    return replace(MODEL_PRESETS[name], **overrides)  # type: ignore[arg-type]
