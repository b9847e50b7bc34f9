"""BERT encoder, bottom-up: embeddings -> attention -> feed-forward -> layer -> model -> heads.

The architecture is Hugging Face ``BertModel`` / ``BertForPreTraining`` (post-LN layers, exact
GELU, a tanh pooler, an MLM head whose decoder is tied to the word embeddings, an NSP head), so
that its weights map one-to-one (``llmos.checkpoint.hf``). Two choices differ for speed, not for
results: query/key/value are one fused ``qkv`` projection, and the MLM head can run on the masked
positions only, which removes most of the head's cost (at a 21k vocabulary and hidden 256 the
head over every position is ~70 % of the forward FLOPs).

Vocabulary of shape comments: B batch, T sequence length, C hidden size, nh heads, hs head size,
V vocabulary, M number of selected (masked) positions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmos.config.model import BertConfig
from llmos.models.crf import CRF
from llmos.models.dropout import Dropout

# Rows per attention group on the padding-free path: the rows of a batch, sorted by length, are
# attended in groups of this many, each padded only to its own longest row. On a 2-core AVX2
# CPU (sentiment-zh test batches of 32, hidden 256) groups of 8 took 0.16 s where one padded
# batch took 0.27 s, one row at a time 0.28 s, groups of 4 0.19 s and of 16 0.23 s.
ATTENTION_GROUP = 8


@dataclass
class Packing:
    """Where the real tokens of a padded (B, T) batch are, for inference without padding.

    Layers that act on each token alone (projections, feed-forward, LayerNorm) run on (N, C),
    N the real tokens only. Attention runs on groups of rows of similar length: ``gather``
    lays the packed tokens out as the groups' padded (g, T_g) blocks one after another,
    ``groups`` holds (rows g, length T_g, key mask or None when all g rows are T_g long) per
    group, and ``back`` picks each packed token's row out of those blocks again.
    """

    index: torch.Tensor  # (N,) int64 flat indices into B*T of the real tokens
    B: int
    T: int
    gather: torch.Tensor  # (M,) int64 indices into N, M = sum of g * T_g
    back: torch.Tensor  # (N,) int64 indices into M
    groups: list[tuple[int, int, torch.Tensor | None]]

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor) -> Packing | None:
        """The packing of a (B, T) 0/1 mask, or None when it has no padding."""
        B, T = attention_mask.shape
        flat = attention_mask.reshape(-1).bool()
        index = flat.nonzero().squeeze(1)  # (N,)
        if index.numel() == B * T:
            return None
        device = attention_mask.device
        lengths = attention_mask.bool().sum(1).tolist()
        starts = [0] * B
        for b in range(1, B):
            starts[b] = starts[b - 1] + lengths[b - 1]
        order = sorted((b for b in range(B) if lengths[b]), key=lambda b: lengths[b])
        gather: list[torch.Tensor] = []
        back = torch.empty(index.numel(), dtype=torch.long)
        groups: list[tuple[int, int, torch.Tensor | None]] = []
        offset = 0
        for g0 in range(0, len(order), ATTENTION_GROUP):
            rows = order[g0 : g0 + ATTENTION_GROUP]
            Tg = max(lengths[b] for b in rows)
            t = torch.arange(Tg)
            mask = None
            if any(lengths[b] < Tg for b in rows):
                mask = torch.stack([t < lengths[b] for b in rows])[:, None, None, :].to(device)
            for j, b in enumerate(rows):
                # Positions past a row's end repeat its last token: masked keys, unread queries.
                gather.append(starts[b] + t.clamp(max=lengths[b] - 1))
                back[starts[b] : starts[b] + lengths[b]] = offset + j * Tg + t[: lengths[b]]
            groups.append((len(rows), Tg, mask))
            offset += len(rows) * Tg
        return cls(index, B, T, torch.cat(gather).to(device), back.to(device), groups)


class Embeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        E = cfg.embedding_size if cfg.factorized else cfg.hidden_size
        self.tok = nn.Embedding(cfg.vocab_size, E, padding_idx=cfg.pad_token_id)
        self.pos = nn.Embedding(cfg.max_position, E)
        self.seg = nn.Embedding(cfg.type_vocab_size, E)
        self.norm = nn.LayerNorm(E, eps=cfg.layer_norm_eps)
        self.drop = Dropout(cfg.dropout)
        # ALBERT's factorization: E-wide embeddings projected to the hidden size.
        self.project = nn.Linear(E, cfg.hidden_size) if cfg.factorized else None

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        pos = torch.arange(input_ids.size(1), device=input_ids.device)  # (T,)
        x = self.tok(input_ids) + self.pos(pos)  # (B, T, C)
        # No token types: all segment A, without materialising a tensor of zeros.
        x = x + (self.seg.weight[0] if token_type_ids is None else self.seg(token_type_ids))
        x = self.drop(self.norm(x))
        return self.project(x) if self.project is not None else x


def linear(n_in: int, n_out: int) -> nn.Linear:
    """``nn.Linear``, which may be empty on one side (a layer pruned to no head or no neuron)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Initializing zero-element tensors is a no-op")
        return nn.Linear(n_in, n_out)


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``.

    ``num_heads`` below the config's (a pruned layer) narrows the projections to
    ``num_heads * hs``; with no head left the block outputs its ``proj`` bias alone.
    ``head_mask``, when set, multiplies each head's output: (nh,), or (B, nh) for one mask per
    example (the padded path only); head-importance scores are gradients with respect to it.
    """

    def __init__(self, cfg: BertConfig, num_heads: int | None = None) -> None:
        super().__init__()
        self.nh = cfg.num_heads if num_heads is None else num_heads
        self.hs = cfg.head_size
        width = self.nh * self.hs  # C unless pruned
        self.qkv = linear(cfg.hidden_size, 3 * width)
        self.proj = linear(width, cfg.hidden_size)
        self.attn_dropout = cfg.attention_dropout
        self.head_mask: torch.Tensor | None = None

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, packing: Packing | None = None
    ) -> torch.Tensor:
        if self.nh == 0:  # every head pruned
            return self.proj.bias.expand_as(x)
        if packing is not None:
            # x holds only the real tokens, (N, C): project them, then attend per group of
            # rows of similar length, each padded to its own longest row only.
            qkv = self.qkv(x).index_select(0, packing.gather)  # (M, 3 nh hs)
            out, at = [], 0
            for g, Tg, group_mask in packing.groups:
                block = qkv[at : at + g * Tg].view(g, Tg, -1)  # (g, T_g, 3 nh hs)
                out.append(self._attend(block, group_mask).view(g * Tg, -1))  # (g T_g, nh hs)
                at += g * Tg
            y = self._mask_heads(torch.cat(out)[None])[0]  # (M, nh hs)
            return self.proj(y.index_select(0, packing.back))  # (N, C)
        return self.proj(self._mask_heads(self._attend(self.qkv(x), mask)))

    def _mask_heads(self, y: torch.Tensor) -> torch.Tensor:
        """(B, T, nh hs) attention output, each head scaled by ``head_mask`` (if set)."""
        if self.head_mask is None:
            return y
        B, T, _ = y.shape
        m = self.head_mask.reshape(-1, 1, self.nh, 1)  # (1 or B, 1, nh, 1)
        return (y.view(B, T, self.nh, self.hs) * m).view(B, T, -1)

    def _attend(self, qkv: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, 3C) projections -> (B, T, C) attention output."""
        B, T, C3 = qkv.shape
        C = C3 // 3
        q, k, v = qkv.split(C, dim=-1)  # 3 x (B, T, C)
        q = q.view(B, T, self.nh, self.hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.nh, self.hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.nh, self.hs).transpose(1, 2)  # (B, nh, T, hs)
        p = self.attn_dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)


class FeedForward(nn.Module):
    """Position-wise feed-forward: C -> intermediate -> C with exact (erf) GELU.

    ``neuron_mask``, when set, multiplies the intermediate activations: (I,), or (B, I) for one
    mask per example on (B, T, C) input; neuron-importance scores are gradients with respect
    to it.
    """

    def __init__(self, cfg: BertConfig, intermediate: int | None = None) -> None:
        super().__init__()
        width = cfg.intermediate_size if intermediate is None else intermediate
        self.up = linear(cfg.hidden_size, width)
        self.down = linear(width, cfg.hidden_size)
        self.neuron_mask: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.up(x))  # (B, T, I) or (N, I)
        if self.neuron_mask is not None:
            m = self.neuron_mask
            h = h * (m if m.dim() == 1 else m[:, None, :])
        return self.down(h)


class EncoderLayer(nn.Module):
    """Post-LN transformer layer, as in BERT: ``x = LN(x + drop(f(x)))`` twice. ``layer`` picks
    the sizes of a pruned encoder (``cfg.layer_heads``, ``cfg.layer_intermediate``)."""

    def __init__(self, cfg: BertConfig, layer: int = 0) -> None:
        super().__init__()
        self.attn = SelfAttention(cfg, cfg.heads_of(layer))
        self.attn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg, cfg.intermediate_of(layer))
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.drop = Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, packing: Packing | None = None
    ) -> torch.Tensor:
        x = self.attn_norm(x + self.drop(self.attn(x, mask, packing)))
        return self.ffn_norm(x + self.drop(self.ffn(x)))


class BertModel(nn.Module):
    """The encoder: embeddings, ``num_layers`` layers and (optionally) the tanh pooler."""

    def __init__(self, cfg: BertConfig, pooler: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        # ALBERT's cross-layer sharing: one layer's weights, run num_layers times.
        stored = 1 if cfg.share_layers else cfg.num_layers
        self.layers = nn.ModuleList(EncoderLayer(cfg, i) for i in range(stored))
        # HF's BertForTokenClassification has no pooler; keep the weights one-to-one.
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size) if pooler else None

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode a batch.

        Args:
            input_ids: (B, T) token ids.
            token_type_ids: (B, T) segment ids, or None for all zeros.
            attention_mask: (B, T), 1/True for real tokens and 0/False for padding; None when
                the batch has no padding (the fastest path).

        Returns:
            (B, T, C) hidden states of the last layer. At inference (no grad) with padding,
            every layer runs on the real tokens only (attention on groups of rows of similar
            length, see :class:`Packing`) and the padded positions of the result are zeros
            (they are never read).
        """
        mask = None
        if attention_mask is not None:
            mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T), True = attend
        x = self.embeddings(input_ids, token_type_ids)
        packing = None
        if attention_mask is not None and not torch.is_grad_enabled():
            # Inference on a padded batch: no compute on padding (attention in length groups).
            packing = Packing.from_mask(attention_mask)
            if packing is not None:
                x = x.reshape(-1, x.size(-1)).index_select(0, packing.index)  # (N, C)
        for i in range(self.cfg.num_layers):
            x = self.layers[0 if self.cfg.share_layers else i](x, mask, packing)
        if packing is not None:  # back to (B, T, C); padded positions hold zeros
            out = x.new_zeros(packing.B * packing.T, x.size(-1))
            x = out.index_copy_(0, packing.index, x).view(packing.B, packing.T, -1)
        return x

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, C) hidden states -> (B, C) pooled [CLS] representation."""
        assert self.pooler is not None, "this encoder was built without a pooler"
        return torch.tanh(self.pooler(hidden[:, 0]))


def init_weights(model: nn.Module, cfg: BertConfig) -> None:
    """BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm, zero pad row."""
    std = cfg.initializer_range
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class MLMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> decoder tied to the word embeddings (+ its own bias)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        E = cfg.embedding_size if cfg.factorized else cfg.hidden_size  # back to the embedding width
        self.dense = nn.Linear(cfg.hidden_size, E)
        self.norm = nn.LayerNorm(E, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, h: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """(..., C) hidden states -> (..., V) logits."""
        return F.linear(self.norm(F.gelu(self.dense(h))), word_embeddings, self.bias)


@dataclass
class PretrainOutput:
    """MLM logits (M, V) for the selected positions, or (B, T, V) when none were selected;
    NSP logits (B, 2); the last hidden states (B, T, C). A head the model lacks gives None."""

    mlm_logits: torch.Tensor | None
    nsp_logits: torch.Tensor | None
    hidden: torch.Tensor | None = None


class BertForPreTraining(nn.Module):
    """BERT with the pretraining heads its config names (``cfg.heads``): masked LM and
    next-sentence prediction, MLM only (RoBERTa), or none (a bare encoder)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.bert = BertModel(cfg, pooler=cfg.pooler)
        self.mlm = MLMHead(cfg) if cfg.heads != "none" else None
        self.nsp = nn.Linear(cfg.hidden_size, 2) if cfg.heads == "mlm+nsp" else None
        init_weights(self, cfg)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        mlm_positions: torch.Tensor | None = None,
    ) -> PretrainOutput:
        """Run the encoder and both heads.

        Args:
            input_ids, token_type_ids, attention_mask: as in :meth:`BertModel.forward`.
            mlm_positions: (M,) flat indices into the B*T positions whose MLM logits are
                wanted; None computes logits at every position.

        Returns:
            :class:`PretrainOutput` with mlm_logits (M, V) or (B, T, V) and nsp_logits (B, 2).
        """
        h = self.bert(input_ids, token_type_ids, attention_mask)  # (B, T, C)
        mlm_logits = nsp_logits = None
        if self.mlm is not None:
            h_mlm = h
            if mlm_positions is not None:
                h_mlm = h.reshape(-1, h.size(-1)).index_select(0, mlm_positions)  # (M, C)
            mlm_logits = self.mlm(h_mlm, self.bert.embeddings.tok.weight)
        if self.nsp is not None:
            nsp_logits = self.nsp(self.bert.pool(h))  # (B, 2)
        return PretrainOutput(mlm_logits=mlm_logits, nsp_logits=nsp_logits, hidden=h)


class BertForSequenceClassification(nn.Module):
    """Pooled text -> dropout -> linear: single-sentence and sentence-pair classification.

    ``pooling`` ``cls`` is BERT's: the tanh pooler over the [CLS] state. ``mean`` averages the
    last layer over the real tokens and has no pooler, as sentence-embedding encoders (E5,
    sentence-transformers) are trained to be read: their features are meaningful from the first
    step, where a fresh pooler over a [CLS] state the encoder never trained must be learned.
    """

    def __init__(self, cfg: BertConfig, num_labels: int, pooling: str = "cls") -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        self.cfg, self.pooling = cfg, pooling
        self.bert = BertModel(cfg, pooler=pooling == "cls")
        self.drop = Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        init_weights(self, cfg)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) ids (and segments, mask as in :meth:`BertModel.forward`) -> (B, K) logits."""
        h = self.bert(input_ids, token_type_ids, attention_mask)  # (B, T, C)
        if self.pooling == "cls":
            return self.classifier(self.drop(self.bert.pool(h)))  # (B, K)
        if attention_mask is None:
            pooled = h.mean(1)
        else:
            m = attention_mask.to(h.dtype)[..., None]  # (B, T, 1)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.classifier(self.drop(pooled))


class BertForTokenClassification(nn.Module):
    """Hidden state of every token -> dropout -> linear: sequence labelling (BIO / BMES).

    With a ``crf`` (:class:`~llmos.models.crf.CRF` over the same labels) the logits are its
    emission scores: the tagging task's loss is the CRF's negative log-likelihood and decoding
    runs its Viterbi (the CRF's own ``nll`` and ``decode``); ``forward`` is unchanged.
    Without one the model is Hugging Face's ``BertForTokenClassification``, weight for weight.
    """

    def __init__(self, cfg: BertConfig, num_labels: int, crf: CRF | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.bert = BertModel(cfg, pooler=False)
        self.drop = Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        init_weights(self, cfg)
        assert crf is None or crf.num_labels == num_labels, "CRF and classifier label counts"
        self.crf = crf  # after init_weights, which would not touch it anyway

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) ids (and segments, mask) -> (B, T, K) per-token logits."""
        h = self.bert(input_ids, token_type_ids, attention_mask)  # (B, T, C)
        return self.classifier(self.drop(h))  # (B, T, K)
