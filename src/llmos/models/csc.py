"""Chinese spelling correction, MacBERT4CSC-style: a BERT encoder read at every character by
a detection head (is this character wrong?) and a correction head (which character belongs
here?), trained on the weighted sum of both losses.

Cui et al. (2020, "Revisiting Pre-Trained Models for Chinese Natural Language Processing")
put a linear detection head beside BERT's masked-LM head and fine-tune both on pairs of a
sentence with typos and its correct form; pycorrector's MacBERT4CSC weighs the losses 0.3
(detection) and 0.7 (correction). Two choices here differ, each for speed:

- The correction head scores the tokenizer's single CJK characters only (``chars``: 5,132 of
  the 32,136 pieces of the Chinese-trimmed multilingual-e5 vocabulary), not the whole
  vocabulary: a typo is one character replaced by another, and a head over every piece would
  cost as much as seven of the encoder's layers at hidden 384. Its weights start as those
  characters' rows of the word embeddings (the decoder of an MLM head is tied to them), its
  bias at zero.
- No dense + LayerNorm transform before the decoder: the encoder this is trained from
  (multilingual-e5) was never trained with an MLM head, so that transform would start random.

Shape comments: B batch, T tokens, C hidden size, K output characters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llmos.config.model import BertConfig
from llmos.models.bert import BertModel, init_weights


@dataclass
class SpellingOutput:
    """Per-token detection logits (B, T) and correction logits (B, T, K), or (N, K) at the
    N positions asked for."""

    detect: torch.Tensor
    correct: torch.Tensor


class BertForSpellingCorrection(nn.Module):
    """BERT + a detection head (C -> 1) + a correction head over ``num_chars`` characters.

    ``char_ids`` (a buffer, saved with the weights) holds each output character's token id;
    a token is a character position when its id is one of them. Training and prediction
    both go through :meth:`forward`.
    """

    def __init__(self, cfg: BertConfig, num_chars: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.bert = BertModel(cfg, pooler=False)
        self.detect = nn.Linear(cfg.hidden_size, 1)
        self.correct = nn.Linear(cfg.hidden_size, num_chars)
        self.register_buffer("char_ids", torch.zeros(num_chars, dtype=torch.long))
        init_weights(self, cfg)

    def init_correction(self, char_ids: torch.Tensor) -> None:
        """Set the output characters (token ids, (K,)) and start the correction head from
        their word embeddings (zero bias). Call after the encoder's weights are loaded."""
        if char_ids.shape != self.char_ids.shape:
            raise ValueError(
                f"expected {self.char_ids.numel()} character ids, got {char_ids.shape}"
            )
        emb = self.bert.embeddings.tok.weight
        if emb.size(1) != self.correct.in_features:  # ALBERT-style factorized embeddings
            raise ValueError("the correction head starts from the embeddings: hidden != E")
        with torch.no_grad():
            self.char_ids.copy_(char_ids)
            self.correct.weight.copy_(emb.index_select(0, char_ids.to(emb.device)))
            self.correct.bias.zero_()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> SpellingOutput:
        """(B, T) ids (and 0/1 mask) -> detection logits (B, T) and correction logits (B, T,
        K), or with ``positions`` ((N,) flat indices into B*T) correction logits (N, K) at
        those positions only."""
        h = self.bert(input_ids, None, attention_mask)  # (B, T, C)
        detect = self.detect(h).squeeze(-1)  # (B, T)
        if positions is not None:
            h = h.reshape(-1, h.size(-1)).index_select(0, positions)  # (N, C)
        return SpellingOutput(detect, self.correct(h))
