"""GPT-2 decoder with a key/value cache.

Module names follow Hugging Face ``GPT2LMHeadModel`` one to one (``transformer.h.{i}.attn.c_attn``
...), so its weights map by name; HF's ``Conv1D`` stores weights as (in, out), ``nn.Linear`` as
(out, in), hence the transpose in :mod:`llmos.checkpoint.hf`. Attention is PyTorch SDPA: causal
without a cache, and with an explicit mask when new tokens attend to cached ones or to padding.

Vocabulary of shape comments (as in :mod:`llmos.models.bert`): B batch, T new tokens, S keys
(cached + new), C hidden size, nh heads, hs head size, V vocabulary size.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from llmos.config.model import GPTConfig


class KVCache:
    """Keys and values of every layer, (B, nh, S, hs) each, in buffers allocated ahead: a step
    writes its new entries in place instead of copying everything cached so far (a buffer
    that runs out of room doubles). ``length`` positions are filled."""

    def __init__(self, capacity: int = 0) -> None:
        self.capacity = capacity
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.length = 0

    def __len__(self) -> int:
        return self.length

    def append(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store a layer's new keys and values (B, nh, T, hs) after the cached ones; return all
        of them. The cache's ``length`` moves on once every layer is done (:meth:`advance`)."""
        start, end = self.length, self.length + k.size(2)
        if layer == len(self.keys) and start == 0 and self.capacity <= end:
            # Nothing cached and no room asked for ahead (training, a plain forward): keep the
            # tensors as they are, no copy; a later step reallocates with room.
            self.keys.append(k)
            self.values.append(v)
            return k, v
        if layer == len(self.keys):
            cap = max(end, self.capacity)
            self.keys.append(k.new_empty(*k.shape[:2], cap, k.size(3)))
            self.values.append(v.new_empty(*v.shape[:2], cap, v.size(3)))
        elif self.keys[layer].size(2) < end:
            cap = max(end, 2 * self.keys[layer].size(2))
            for bufs in (self.keys, self.values):
                old = bufs[layer]
                bufs[layer] = old.new_empty(*old.shape[:2], cap, old.size(3))
                bufs[layer][:, :, :start] = old[:, :, :start]
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, steps: int) -> None:
        self.length += steps

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep batch rows ``rows`` (in that order): beam search follows each beam's parent."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]


def project(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``linear(x)``; at inference, through a cached (in, out) contiguous copy of the weight.

    A matrix-vector product against the (out, in) layout of ``nn.Linear`` runs up to ~1.5-2x
    slower on CPU than against (in, out) (HF's ``Conv1D`` layout) for the small batches of
    token-by-token decoding. The copy is made once per weight version, so it follows any update.
    """
    if torch.is_grad_enabled() or linear.training:
        return linear(x)
    w = linear.weight
    key = (w.data_ptr(), w._version)
    if getattr(linear, "_wt_key", None) != key:
        linear._wt = w.detach().t().contiguous()
        linear._wt_key = key
    flat = x.reshape(-1, x.size(-1))
    out = flat @ linear._wt if linear.bias is None else torch.addmm(linear.bias, flat, linear._wt)
    out = out.view(*x.shape[:-1], out.size(-1))
    delta = linear.lora_delta(x) if hasattr(linear, "lora_delta") else None  # models/lora.py
    return out if delta is None else out + delta


class Attention(nn.Module):
    """Causal multi-head self-attention with a fused q/k/v projection."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.num_heads, self.head_size = cfg.num_heads, cfg.head_size
        self.c_attn = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.c_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.attn_dropout = cfg.attention_dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, cache: KVCache, layer: int
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (
            project(self.c_attn, x)
            .view(B, T, 3, self.num_heads, self.head_size)
            .permute(2, 0, 3, 1, 4)
        )  # each (B, nh, T, hs)
        first = len(cache) == 0
        k, v = cache.append(layer, k, v)  # (B, nh, S, hs): cached and new
        dropout = self.attn_dropout if self.training else 0.0
        if mask is None:
            # No padding: plain causal attention over a fresh sequence, or one new token that
            # sees everything cached (the fast paths).
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=first)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, nh, T, hs) -> (B, T, C)
        return self.resid_dropout(project(self.c_proj, y))


class MLP(nn.Module):
    """Position-wise feed-forward: linear -> GELU (tanh approximation) -> linear."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.c_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(project(self.c_fc, x), approximate="tanh")
        return self.dropout(project(self.c_proj, h))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, cache: KVCache, layer: int
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask, cache, layer)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """Embeddings, blocks and the final LayerNorm (HF ``GPT2Model``)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.wpe = nn.Embedding(cfg.max_position, cfg.hidden_size)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.ln_f = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


class GPT(nn.Module):
    """GPT-2 language model: (B, T) token ids -> (B, T, V) next-token logits."""

    # The output projection is the token embedding matrix (saved once, under its source).
    tied_weights: ClassVar[dict[str, str]] = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.transformer = Transformer(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied
        self.apply(self._init)
        # GPT-2: residual projections scaled by 1/sqrt(2 * layers).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, cfg.initializer_range / math.sqrt(2 * cfg.num_layers))

    def _init(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, self.cfg.initializer_range)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, 0.0, self.cfg.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past: KVCache | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """Next-token logits for new tokens, and the cache extended by them.

        Args:
            input_ids: (B, T) the new tokens.
            attention_mask: (B, S) 1 for real tokens, 0 for padding, covering the cached tokens
                and the new ones (S = cached + T); None when nothing is padded.
            past: the cache returned by the previous call (extended in place and returned), a
                new :class:`KVCache` sized ahead for generation, or None.
            position_ids: (B, T) positions of the new tokens; by default they continue from the
                cache (0..T-1 without one). With left padding, pass positions that skip the pads.

        Returns:
            (B, T, V) logits and the cache, one (key, value) pair per layer.
        """
        B, T = input_ids.shape
        cache = past if past is not None else KVCache(T)
        cached = len(cache)
        if cached + T > self.cfg.max_position:
            raise ValueError(
                f"{cached + T} tokens exceed the model's context window of {self.cfg.max_position}"
            )
        if position_ids is None:
            position_ids = torch.arange(cached, cached + T, device=input_ids.device)[None, :]
        mask = self._mask(attention_mask, B, T, cached, input_ids.device)
        tf = self.transformer
        x = tf.drop(tf.wte(input_ids) + tf.wpe(position_ids))  # (B, T, C)
        for i, block in enumerate(tf.h):
            x = block(x, mask, cache, i)
        cache.advance(T)
        return project(self.lm_head, tf.ln_f(x)), cache

    @staticmethod
    def _mask(
        attention_mask: torch.Tensor | None, B: int, T: int, cached: int, device: torch.device
    ) -> torch.Tensor | None:
        """(B, 1, T, S) boolean mask (True = attend), or None for the plain causal path."""
        if attention_mask is None and (cached == 0 or T == 1):
            return None  # causal SDPA, or one new token that may see everything cached
        S = cached + T
        # New token t sits at absolute position cached + t and sees keys up to it.
        causal = torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=cached)
        mask = causal[None, None]  # (1, 1, T, S)
        if attention_mask is not None:
            mask = mask & attention_mask.bool()[:, None, None, :]  # (B, 1, T, S)
            # A query row with nothing to attend to (a pad attending only to pads) would be
            # NaN; let it see itself, its output is never used.
            own = torch.zeros(T, S, dtype=torch.bool, device=device)
            own[torch.arange(T), cached + torch.arange(T)] = True
            mask = mask | own[None, None]
        return mask.expand(B, 1, T, S) if mask.size(0) == 1 else mask
