"""XLNet, bottom-up: relative positions -> relative attention (content and query streams) ->
feed-forward -> layer -> model (memory, masks) -> heads (permutation LM, sequence and token
classification).

The architecture is Hugging Face ``XLNetModel`` / ``XLNetLMHeadModel`` (Yang et al. 2019,
https://arxiv.org/abs/1906.08237) with HF's parameter names and shapes, so weights map one to
one (``llmos.checkpoint.hf``). Three choices differ for speed, not for results:

- tensors are batch-first, (B, T, C), and attention runs as batched matmuls in (B, nh, T, hs);
  HF keeps XLNet's original (T, B, C) layout and einsums that copy at every permute;
- the relative position keys are projected once per forward, (R, C) -> (nh, R, hs), shared by
  the batch; HF projects a copy per example, (R, B, C);
- the query stream attends from the M predicted positions only; HF scatters them back to all
  T positions, attends from every one of them and gathers the M again. In pretraining the
  content stream of the last layer is not computed either: nothing reads it.

Vocabulary of shape comments: B batch, T tokens of the segment, P memory (tokens of the
previous segment kept per layer), K = P + T keys, R = K + T relative distances, M predicted
positions, C hidden size, nh heads, hs head size, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from llmos.config.model import XLNetConfig
from llmos.models import bert
from llmos.models.crf import CRF
from llmos.models.dropout import Dropout

ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
}


def relative_positions(
    qlen: int, klen: int, cfg: XLNetConfig, device: torch.device
) -> torch.Tensor:
    """(R, C) sinusoidal encodings of the distances klen, klen-1, ..., -qlen+1 (R = klen + qlen),
    from a query to a key: index p is distance klen - p (Transformer-XL's layout, which
    :func:`shift_relative` reads)."""
    pos = torch.arange(klen, -qlen, -1.0, device=device)  # (R,)
    if cfg.clamp_len > 0:
        pos = pos.clamp(-cfg.clamp_len, cfg.clamp_len)
    freq = torch.arange(0, cfg.hidden_size, 2.0, device=device)
    inv_freq = 1 / torch.pow(10000, freq / cfg.hidden_size)  # (C/2,)
    angle = pos[:, None] * inv_freq  # (R, C/2)
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


def shift_relative(x: torch.Tensor, klen: int) -> torch.Tensor:
    """(B, nh, T, R) scores of query i against distance index p -> (B, nh, T, K) against key j,
    with p = T - i + j (query i at position P + i, key j at j: distance P + i - j). The
    reshape trick of Transformer-XL: one copy instead of a gather."""
    B, nh, T, R = x.shape
    x = x.reshape(B, nh, R, T)[:, :, 1:, :].reshape(B, nh, T, R - 1)
    return x[..., :klen]


def gather_relative(x: torch.Tensor, qpos: torch.Tensor, qlen: int, klen: int) -> torch.Tensor:
    """(B, nh, M, R) scores of queries at segment positions ``qpos`` (B, M) -> (B, nh, M, K):
    the same p = T - i + j as :func:`shift_relative`, for rows that are not 0..T-1."""
    B, nh, M, _ = x.shape
    index = (qlen - qpos)[:, :, None] + torch.arange(klen, device=x.device)  # (B, M, K)
    return x.gather(3, index[:, None].expand(B, nh, M, klen))


class RelativeAttention(nn.Module):
    """Multi-head attention with XLNet's three score terms (content, relative position,
    relative segment), shared by the content stream and the query stream; the output
    projection, dropout, residual and LayerNorm follow (HF's ``post_attention``).

    Parameters keep HF's (C, nh, hs) layout and names, so they load as they are.
    """

    def __init__(self, cfg: XLNetConfig) -> None:
        super().__init__()
        C, nh, hs = cfg.hidden_size, cfg.num_heads, cfg.head_size
        self.nh, self.hs = nh, hs
        for name in ("q", "k", "v", "o", "r"):
            setattr(self, name, nn.Parameter(torch.empty(C, nh, hs)))
        self.r_r_bias = nn.Parameter(torch.empty(nh, hs))
        self.r_s_bias = nn.Parameter(torch.empty(nh, hs))
        self.r_w_bias = nn.Parameter(torch.empty(nh, hs))
        self.seg_embed = nn.Parameter(torch.empty(2, nh, hs))
        self.layer_norm = nn.LayerNorm(C, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)
        self.scale = 1 / math.sqrt(hs)

    def heads(self, x: torch.Tensor, *weights: torch.Tensor) -> list[torch.Tensor]:
        """(B, T, C) -> one (B, nh, T, hs) per weight, from a single matmul."""
        B, T, C = x.shape
        w = torch.cat([p.reshape(C, -1) for p in weights], dim=1)  # (C, n * nh * hs)
        out = (x @ w).view(B, T, len(weights), self.nh, self.hs)
        return [out[:, :, i].transpose(1, 2) for i in range(len(weights))]

    def position_keys(self, pos: torch.Tensor) -> torch.Tensor:
        """(R, C) relative encodings -> (nh, R, hs) position keys, shared by the batch."""
        return (pos @ self.r.reshape(pos.size(1), -1)).view(-1, self.nh, self.hs).transpose(0, 1)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        r: torch.Tensor,
        other_segment: torch.Tensor | None,
        blocked: torch.Tensor | None,
        qpos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores, softmax and values.

        Args:
            q: (B, nh, Tq, hs) queries: the segment's T tokens, or M predicted positions.
            k, v: (B, nh, K, hs) keys and values of the memory and the segment.
            r: (nh, R, hs) position keys.
            other_segment: (B, Tq, K) True where query and key are in different segments, or
                None when segments are not given.
            blocked: (B, Tq, K) True where the query may not attend, or None.
            qpos: (B, M) segment positions of the queries; None for the T tokens in order.

        Returns:
            (B, nh, Tq, hs) attention outputs.
        """
        T, K = r.size(1) - k.size(2), k.size(2)
        ac = (q + self.r_w_bias[:, None]) @ k.transpose(-1, -2)  # (B, nh, Tq, K)
        bd = (q + self.r_r_bias[:, None]) @ r.transpose(-1, -2)  # (B, nh, Tq, R)
        bd = shift_relative(bd, K) if qpos is None else gather_relative(bd, qpos, T, K)
        score = ac + bd
        if other_segment is not None:
            # Relative segment encoding: one learned vector for "same", one for "different".
            ef = (q + self.r_s_bias[:, None]) @ self.seg_embed.permute(1, 2, 0)  # (B, nh, Tq, 2)
            score = score + torch.where(other_segment[:, None], ef[..., 1:], ef[..., :1])
        score = score * self.scale
        if blocked is not None:
            # A finite fill, as HF: a row with every key blocked becomes uniform, not NaN.
            score = score.masked_fill(blocked[:, None], -1e30)
        prob = self.dropout(score.softmax(-1))
        return prob @ v  # (B, nh, Tq, hs)

    def post(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """(B, nh, Tq, hs) attention outputs -> output projection, dropout, residual, LayerNorm."""
        B, _, Tq, _ = attn.shape
        out = attn.transpose(1, 2).reshape(B, Tq, -1) @ self.o.reshape(self.o.size(0), -1).T
        return self.layer_norm(x + self.dropout(out))


class FeedForward(nn.Module):
    """layer_1 -> activation -> dropout -> layer_2 -> dropout -> residual -> LayerNorm."""

    def __init__(self, cfg: XLNetConfig) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layer_1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.layer_2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.dropout = Dropout(cfg.dropout)
        self.act = ACTIVATIONS[cfg.ff_activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(self.layer_2(self.dropout(self.act(self.layer_1(x)))))
        return self.layer_norm(x + h)


@dataclass
class Masks:
    """What each stream may not attend to, (B, Tq, K) True = blocked, or None for nothing.
    ``content``: the T tokens (each always sees itself); ``query``: the M predicted positions
    (each never sees itself); ``other_segment`` (B, T, K): query and key in different segments;
    ``qpos`` (B, M) and ``qvalid`` (B, M, 1): the predicted positions and which are real."""

    content: torch.Tensor | None
    query: torch.Tensor | None
    other_segment: torch.Tensor | None
    qpos: torch.Tensor | None = None
    qvalid: torch.Tensor | None = None


class XLNetLayer(nn.Module):
    """Relative attention then feed-forward, for the content stream h and, when predicting,
    the query stream g (same weights; g's queries read h's keys and values)."""

    def __init__(self, cfg: XLNetConfig) -> None:
        super().__init__()
        self.rel_attn = RelativeAttention(cfg)
        self.ff = FeedForward(cfg)

    def forward(
        self,
        h: torch.Tensor,
        g: torch.Tensor | None,
        mem: torch.Tensor | None,
        r: torch.Tensor,
        masks: Masks,
        content: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, C) content stream, (B, M, C) query stream or None, (B, P, C) memory or None ->
        both streams after the layer (the content stream left as it is when ``content`` is
        False: the last layer of a pretraining forward, whose content stream nobody reads)."""
        a = self.rel_attn
        if mem is None:
            q, k, v = a.heads(h, a.q, a.k, a.v)  # (B, nh, T, hs) each, one matmul
        else:
            (q,) = a.heads(h, a.q)
            k, v = a.heads(torch.cat([mem, h], dim=1), a.k, a.v)  # (B, nh, K, hs)
        rk = a.position_keys(r)  # (nh, R, hs)
        if g is not None:
            seg = masks.other_segment
            if seg is not None:
                seg = seg.gather(1, masks.qpos[:, :, None].expand(-1, -1, seg.size(2)))
            (qg,) = a.heads(g, a.q)  # (B, nh, M, hs)
            out = a.attend(qg, k, v, rk, seg, masks.query, masks.qpos) * masks.qvalid[:, None]
            g = self.ff(a.post(g, out))
        if content:
            out = a.attend(q, k, v, rk, masks.other_segment, masks.content)
            h = self.ff(a.post(h, out))
        return h, g


def init_weights(model: nn.Module, cfg: XLNetConfig) -> None:
    """HF XLNet's initialisation: BERT's for the linear layers, embeddings and LayerNorms
    (XLNet's embedding has no padding row to zero), then N(0, initializer_range) for the
    attention tensors and biases and ``mask_emb``."""
    bert.init_weights(model, cfg)  # type: ignore[arg-type]  # reads initializer_range only
    for module in model.modules():
        if isinstance(module, RelativeAttention | XLNetModel):
            for p in module.parameters(recurse=False):
                nn.init.normal_(p, std=cfg.initializer_range)


class XLNetModel(nn.Module):
    """Word embeddings, ``num_layers`` layers, a memory of the previous segment and the two
    streams: HF's ``XLNetModel`` (attn_type ``bi``, no bi_data, not same_length)."""

    def __init__(self, cfg: XLNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.word_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.mask_emb = nn.Parameter(torch.empty(1, 1, cfg.hidden_size))
        self.layer = nn.ModuleList(XLNetLayer(cfg) for _ in range(cfg.num_layers))
        self.dropout = Dropout(cfg.dropout)

    def masks(
        self,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        perm_mask: torch.Tensor | None,
        target_mapping: torch.Tensor | None,
        B: int,
        T: int,
        P: int,
        device: torch.device,
    ) -> Masks:
        """The (B, ·, K) masks of both streams from HF's inputs (see :meth:`forward`)."""
        blocked = None
        if attention_mask is not None:
            blocked = ~attention_mask.bool()[:, None, :].expand(B, T, T)  # padded keys
        if perm_mask is not None:
            perm = perm_mask > 0  # (B, T, T)
            blocked = perm if blocked is None else blocked | perm
        content = None
        if blocked is not None:
            # The memory is always visible (HF); the content stream always sees itself.
            blocked = F.pad(blocked, (P, 0))  # (B, T, K)
            eye = torch.eye(T, dtype=torch.bool, device=device)
            content = blocked & ~F.pad(eye, (P, 0))[None]
        seg = None
        if token_type_ids is not None:
            keys = F.pad(token_type_ids, (P, 0))  # memory tokens count as segment 0 (HF)
            seg = token_type_ids[:, :, None] != keys[:, None, :]  # (B, T, K)
        if target_mapping is None:
            return Masks(content, None, seg)
        qpos = target_mapping.argmax(-1)  # (B, M)
        qvalid = (target_mapping.sum(-1) > 0).to(self.mask_emb.dtype)[..., None]  # (B, M, 1)
        query = None
        if blocked is not None:
            query = blocked.gather(1, qpos[:, :, None].expand(-1, -1, blocked.size(2)))
        return Masks(content, query, seg, qpos, qvalid)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        mems: list[torch.Tensor] | None = None,
        perm_mask: torch.Tensor | None = None,
        target_mapping: torch.Tensor | None = None,
        use_mems: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """Encode a segment; with ``target_mapping``, predict positions of it (query stream).

        Args:
            input_ids: (B, T) token ids.
            attention_mask: (B, T) 1 for real tokens, 0 for padding (either side); None when
                nothing is padded.
            token_type_ids: (B, T) segment ids (XLNet compares them: same or different); None
                for no segment term.
            mems: one (B, P, C) tensor per layer, the memory returned by the previous call.
            perm_mask: (B, T, T) HF's permutation mask: 1 where token i may not see token j.
            target_mapping: (B, M, T) one-hot rows: row m predicts its position (a row of
                zeros predicts nothing). Each row must be one-hot or zero: the predicted
                position is read as its argmax, where HF multiplies by the whole matrix.
            use_mems: also return the memory for the next segment: each layer's input, the
                last ``mem_len`` positions of memory and segment (all of them when 0).

        Returns:
            (B, T, C) content stream, or (B, M, C) query stream with ``target_mapping``; and
            the new memory (one (B, P', C) per layer), or None.
        """
        B, T = input_ids.shape
        P = mems[0].size(1) if mems else 0
        device = input_ids.device
        masks = self.masks(
            attention_mask, token_type_ids, perm_mask, target_mapping, B, T, P, device
        )
        h = self.dropout(self.word_embedding(input_ids))  # (B, T, C)
        g = None
        if target_mapping is not None:
            g = self.dropout(self.mask_emb.expand(B, target_mapping.size(1), -1))  # (B, M, C)
        r = self.dropout(relative_positions(T, P + T, self.cfg, device).to(h.dtype))  # (R, C)
        new_mems: list[torch.Tensor] | None = [] if use_mems else None
        last = len(self.layer) - 1
        for i, layer in enumerate(self.layer):
            mem = mems[i] if mems else None
            if new_mems is not None:
                new_mems.append(self.cache(h, mem))
            h, g = layer(h, g, mem, r, masks, content=g is None or i < last)
        return self.dropout(h if g is None else g), new_mems

    @torch.no_grad()
    def memory(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """The memory a segment leaves for the next one, as ``forward(use_mems=True)`` returns
        it, without running the last layer (no memory holds its output): (B, T, C) per
        layer, the last ``mem_len`` positions."""
        B, T = input_ids.shape
        masks = self.masks(attention_mask, None, None, None, B, T, 0, input_ids.device)
        h = self.dropout(self.word_embedding(input_ids))
        r = self.dropout(relative_positions(T, T, self.cfg, input_ids.device).to(h.dtype))
        mems = [self.cache(h, None)]
        for layer in self.layer[:-1]:
            h, _ = layer(h, None, None, r, masks)
            mems.append(self.cache(h, None))
        return mems

    def cache(self, h: torch.Tensor, mem: torch.Tensor | None) -> torch.Tensor:
        """A layer's input appended to its memory, cut to ``mem_len``, without gradient."""
        out = h if mem is None else torch.cat([mem, h], dim=1)
        if self.cfg.mem_len > 0:
            out = out[:, -self.cfg.mem_len :]
        return out.detach()


def last_token(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, C) -> (B, C): the state of each row's last real token (XLNet's ``<cls>`` ends
    the input). HF reads position T-1, which is the same token under its left padding; this
    also reads right-padded batches, as llmos's collators make them."""
    if attention_mask is None:
        return hidden[:, -1]
    T = attention_mask.size(1)
    last = T - 1 - attention_mask.flip(1).to(torch.long).argmax(1)  # (B,)
    return hidden[torch.arange(hidden.size(0), device=hidden.device), last]


class SequenceSummary(nn.Module):
    """HF's ``XLNetSequenceSummary`` as XLNet configures it: the last token, a tanh
    projection (``summary``), then dropout."""

    def __init__(self, cfg: XLNetConfig) -> None:
        super().__init__()
        self.summary = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.last_dropout = Dropout(cfg.dropout)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.last_dropout(torch.tanh(self.summary(last_token(hidden, attention_mask))))


@dataclass
class XLNetOutput:
    """Logits (B, T, V), or (B, M, V) for the predicted positions; the memory or None."""

    logits: torch.Tensor
    mems: list[torch.Tensor] | None = None


class XLNetLMHeadModel(nn.Module):
    """The encoder and its LM head (``lm_loss``, tied to the word embeddings, with its own
    bias): permutation LM pretraining reads the query stream at the predicted positions."""

    tied_weights: ClassVar[dict[str, str]] = {"lm_loss.weight": "transformer.word_embedding.weight"}

    def __init__(self, cfg: XLNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.transformer = XLNetModel(cfg)
        self.lm_loss = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        init_weights(self, cfg)
        self.lm_loss.weight = self.transformer.word_embedding.weight  # tied

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        mems: list[torch.Tensor] | None = None,
        perm_mask: torch.Tensor | None = None,
        target_mapping: torch.Tensor | None = None,
        use_mems: bool = False,
    ) -> XLNetOutput:
        """As :meth:`XLNetModel.forward`, then the LM head: (B, M, V) logits with
        ``target_mapping``, else (B, T, V)."""
        h, new_mems = self.transformer(
            input_ids, attention_mask, token_type_ids, mems, perm_mask, target_mapping, use_mems
        )
        return XLNetOutput(self.lm_loss(h), new_mems)

    def predict_positions(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, T) ids and (M,) positions -> (B, M, V) logits of the tokens at ``positions``,
        each predicted from the other tokens, none of the M seen (their ids are never read):
        fill-in-the-blanks with the query stream (HF's XLNetLMHeadModel example)."""
        B, T = input_ids.shape
        perm = torch.zeros(B, T, T, device=input_ids.device)
        perm[:, :, positions] = 1.0  # nobody sees a blank, not even its own query
        mapping = F.one_hot(positions, T).to(perm.dtype)[None].expand(B, -1, -1)  # (B, M, T)
        return self(input_ids, perm_mask=perm, target_mapping=mapping).logits


class EncoderView(nn.Module):
    """An :class:`XLNetModel` called as BERT's encoder is, ``(ids, token types, mask) -> (B, T,
    C)`` hidden states: for the code that reads hidden states (embeddings)."""

    def __init__(self, model: XLNetModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.model(input_ids, attention_mask, token_type_ids)[0]


class XLNetForSequenceClassification(nn.Module):
    """Sequence summary -> linear (``logits_proj``): HF's ``XLNetForSequenceClassification``.
    The forward takes BERT's classifier arguments, so the fine-tuning and inference code of
    classifiers runs it unchanged."""

    def __init__(self, cfg: XLNetConfig, num_labels: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.transformer = XLNetModel(cfg)
        self.sequence_summary = SequenceSummary(cfg)
        self.logits_proj = nn.Linear(cfg.hidden_size, num_labels)
        init_weights(self, cfg)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) ids (segments, mask as in :meth:`XLNetModel.forward`) -> (B, K) logits."""
        h, _ = self.transformer(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        return self.logits_proj(self.sequence_summary(h, attention_mask))


class XLNetForTokenClassification(nn.Module):
    """Every token's state -> linear (``classifier``): HF's ``XLNetForTokenClassification``;
    with a ``crf`` the logits are its emission scores (as in BERT's tagger)."""

    def __init__(self, cfg: XLNetConfig, num_labels: int, crf: CRF | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.transformer = XLNetModel(cfg)
        self.classifier = nn.Linear(cfg.hidden_size, num_labels)
        init_weights(self, cfg)
        assert crf is None or crf.num_labels == num_labels, "CRF and classifier label counts"
        self.crf = crf

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) ids (segments, mask) -> (B, T, K) per-token logits."""
        h, _ = self.transformer(input_ids, attention_mask, token_type_ids)
        return self.classifier(h)
