"""Vision Transformer, bottom-up: patch embeddings -> pre-LN layer -> model.

The architecture is Hugging Face ``ViTModel`` (Dosovitskiy et al. 2021,
https://arxiv.org/abs/2010.11929), so that its weights map one to one
(``llmos.checkpoint.hf_vit``): a convolution with kernel = stride = the patch size cuts the
image into patches and projects each to the hidden size, a learned [CLS] token goes first,
learned position embeddings are added, then the layers, a final LayerNorm, and optionally
HF's tanh pooler over the [CLS] state.

Its layer is not BERT's :class:`~llmos.models.bert.EncoderLayer`: ViT is *pre-LN*
(``x = x + f(LN(x))``, then one LayerNorm after the last layer) where BERT is post-LN
(``x = LN(x + f(x))``), so the same weights give other outputs. What is the same math is
reused: the attention (:class:`~llmos.models.bert.SelfAttention`, one fused ``qkv`` projection
and ``scaled_dot_product_attention``) and the exact-GELU feed-forward
(:class:`~llmos.models.bert.FeedForward`); they read only sizes and dropout rates, handed to
them as the :class:`~llmos.config.model.BertConfig` they take (:func:`block_config`).

Vocabulary of shape comments: B batch, H and W image height and width, P patch size,
N = (H / P) * (W / P) patches, T = 1 + N tokens ([CLS] first), C hidden size, nh heads,
hs head size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llmos.config.model import BertConfig, ViTConfig
from llmos.models.bert import FeedForward, SelfAttention
from llmos.models.dropout import Dropout


def block_config(cfg: ViTConfig) -> BertConfig:
    """The sizes and dropout rates :class:`SelfAttention` and :class:`FeedForward` read, as
    the ``BertConfig`` they take. Its vocabulary and token types are placeholders (1): the
    blocks never read them."""
    return BertConfig(
        vocab_size=1,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position=1 + cfg.num_patches,
        type_vocab_size=1,
        dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout,
        layer_norm_eps=cfg.layer_norm_eps,
        heads="none",
        pooler=False,
    )


class PatchEmbeddings(nn.Module):
    """Patches projected by a P x P convolution of stride P, [CLS] first, plus positions."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        C = cfg.hidden_size
        self.patch = nn.Conv2d(
            cfg.num_channels, C, kernel_size=cfg.patch_size, stride=cfg.patch_size
        )
        self.cls = nn.Parameter(torch.zeros(1, 1, C))
        self.pos = nn.Parameter(torch.zeros(1, 1 + cfg.num_patches, C))
        self.drop = Dropout(cfg.dropout)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if pixel_values.dim() != 4 or pixel_values.size(1) != cfg.num_channels:
            raise ValueError(
                f"expected images of shape (B, {cfg.num_channels}, {cfg.image_size}, "
                f"{cfg.image_size}), got {tuple(pixel_values.shape)}"
            )
        B, _, H, W = pixel_values.shape
        if pixel_values.shape[2:] != (cfg.image_size, cfg.image_size):
            # HF refuses it too (unless it interpolates the positions, which this ViT does not).
            raise ValueError(
                f"image size {H}x{W} does not match the model's {cfg.image_size}x"
                f"{cfg.image_size}: resize the images to {cfg.image_size} px first"
            )
        x = self.patch(pixel_values.to(self.patch.weight.dtype))  # (B, C, H/P, W/P)
        x = x.flatten(2).transpose(1, 2)  # (B, N, C), patches in row-major order
        x = torch.cat([self.cls.expand(B, -1, -1), x], dim=1)  # (B, T, C)
        return self.drop(x + self.pos)  # (B, T, C)


class PreLNLayer(nn.Module):
    """Pre-LN transformer layer, as in ViT: ``x = x + drop(f(LN(x)))`` for attention, then for
    the feed-forward. ``attn_norm`` / ``ffn_norm`` are the LayerNorms *before* each block (HF's
    ``layernorm_before`` / ``layernorm_after``)."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        sizes = block_config(cfg)
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = SelfAttention(sizes)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(sizes)
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), None))  # (B, T, C), no padding: no mask
        return x + self.drop(self.ffn(self.ffn_norm(x)))  # (B, T, C)


@dataclass
class ViTOutput:
    """What :class:`ViTModel` returns.

    Attributes:
        hidden: (B, T, C) last hidden states after the final LayerNorm, [CLS] first (HF's
            ``last_hidden_state``).
        cls: (B, C) the [CLS] state, ``hidden[:, 0]``: the image's representation without
            the pooler.
        pooled: (B, C) HF's pooler, ``tanh(dense(cls))`` (its ``pooler_output``); None when
            the model has no pooler (``cfg.pooler`` false).
    """

    hidden: torch.Tensor
    cls: torch.Tensor
    pooled: torch.Tensor | None


class ViTModel(nn.Module):
    """The image encoder: patch embeddings, ``num_layers`` pre-LN layers, the final LayerNorm
    and (``cfg.pooler``) the tanh pooler."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = PatchEmbeddings(cfg)
        self.layers = nn.ModuleList(PreLNLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size) if cfg.pooler else None
        init_weights(self, cfg)

    def forward(self, pixel_values: torch.Tensor) -> ViTOutput:
        """Encode a batch of images.

        Args:
            pixel_values: (B, num_channels, H, W) images, H = W = ``cfg.image_size``,
                normalised as the model was trained (HF's image processors: (x / 255 - 0.5) /
                0.5 per channel).

        Returns:
            :class:`ViTOutput`: hidden (B, T, C), cls (B, C), pooled (B, C) or None.

        Raises:
            ValueError: the images are not (B, num_channels, image_size, image_size).
        """
        x = self.embeddings(pixel_values)  # (B, T, C)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)  # (B, T, C)
        cls = x[:, 0]  # (B, C)
        pooled = torch.tanh(self.pooler(cls)) if self.pooler is not None else None
        return ViTOutput(hidden=x, cls=cls, pooled=pooled)


def init_weights(model: nn.Module, cfg: ViTConfig) -> None:
    """HF ViT's initialisation: truncated N(0, ``initializer_range``) for the projections,
    the [CLS] token and the positions; zero biases, unit LayerNorms."""
    std = cfg.initializer_range
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            nn.init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, PatchEmbeddings):
            nn.init.trunc_normal_(module.cls, std=std)
            nn.init.trunc_normal_(module.pos, std=std)
