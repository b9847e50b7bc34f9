"""Tagging the characters of a text read in the tokenizer's own pieces (``data.char_tags``):
:class:`BertForCharTagging`, and the character layers it shares with a multi-task model's
tagging head (:class:`CharReader`). A file of its own beside ``bert.py``, whose encoder and
token tagger it builds on."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmos.config.model import BertConfig
from llmos.models.bert import BertForTokenClassification, init_weights
from llmos.models.crf import CRF

# Positions inside a piece that the character tagger tells apart (from its start and from its
# end); longer pieces share the last. XLM-R's pieces over People's Daily hold at most 8
# characters (990,644 pieces of the 15,114 training sentences: 61 % one character, 34 % two).
MAX_PIECE_CHARS = 16


class CharReader(nn.Module):
    """The character layers of :class:`BertForCharTagging`: each character's vector from its
    piece's output vector, the encoder's embedding of the character and its position in the
    piece (the formula there). A module of its own so that a multi-task model's tagging head
    (:class:`~llmos.models.multitask.BertMultiTask`) reads characters the same way."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        add_char_layers(self, cfg)

    def forward(self, h: torch.Tensor, units: torch.Tensor, tok: nn.Embedding) -> torch.Tensor:
        """(B, T, C) encoder output, (B, U, 4) units, the word embeddings -> (B, U, C)."""
        return read_chars(self, h, units, tok)


def add_char_layers(module: nn.Module, cfg: BertConfig) -> None:
    """Give ``module`` the character layers (``char_start``, ``char_end``, ``char_proj``,
    ``char_norm``, ``char_mlp``), initialised as BERT's."""
    H = cfg.hidden_size
    E = cfg.embedding_size if cfg.factorized else H
    module.char_start = nn.Embedding(MAX_PIECE_CHARS, H)
    module.char_end = nn.Embedding(MAX_PIECE_CHARS, H)
    module.char_proj = nn.Linear(E, H)
    module.char_norm = nn.LayerNorm(H, eps=cfg.layer_norm_eps)
    module.char_mlp = nn.Linear(H, H)
    for name in ("char_start", "char_end", "char_proj", "char_norm", "char_mlp"):
        init_weights(getattr(module, name), cfg)


def read_chars(
    module: nn.Module, h: torch.Tensor, units: torch.Tensor, tok: nn.Embedding
) -> torch.Tensor:
    """The characters' (B, U, C) vectors from the encoder output ``h`` (B, T, C) with the
    character layers of ``module`` (:func:`add_char_layers`)."""
    piece, start, end, ids = units.unbind(-1)  # (B, U) each
    x = torch.gather(h, 1, piece[..., None].expand(-1, -1, h.shape[-1]))  # (B, U, C)
    last = MAX_PIECE_CHARS - 1
    x = x + module.char_proj(tok(ids))
    x = module.char_norm(
        x + module.char_start(start.clamp(max=last)) + module.char_end(end.clamp(max=last))
    )
    return x + F.gelu(module.char_mlp(x))


class BertForCharTagging(BertForTokenClassification):
    """One tag per *character* of a text read in the tokenizer's own pieces.

    A SentencePiece tokenizer (XLM-R, multilingual-e5) merges Chinese characters into
    multi-character pieces, so a word boundary can fall inside a piece, where a tagger over
    pieces cannot put it. Splitting every character into a token of its own fixes that but
    feeds the encoder sequences unlike any it was pretrained on. This head keeps the encoder's
    input as it was pretrained and predicts each character's tag from

        h_c = LayerNorm(h[piece(c)] + W e[id(c)] + start[j] + end[n - 1 - j])
        logits_c = classifier(dropout(h_c + GELU(mlp(h_c))))

    where ``h[piece(c)]`` is the encoder's output for the piece holding the character, ``e``
    the encoder's own word embedding of the character as a piece of its own (its unknown
    token when the vocabulary has none), and ``j`` / ``n`` the character's position in its
    piece and the piece's length (clipped to :data:`MAX_PIECE_CHARS`).

    ``units`` (B, U, 4) describes the characters of each row: the index of the piece in
    ``input_ids`` (with [CLS] at 0), ``j``, ``n - 1 - j`` and the character's token id;
    padded rows read piece 0 and are masked by the task.
    """

    def __init__(self, cfg: BertConfig, num_labels: int, crf: CRF | None = None) -> None:
        super().__init__(cfg, num_labels, crf)
        add_char_layers(self, cfg)  # the encoder and classifier were initialised above

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        units: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) piece ids (and segments, mask) and (B, U, 4) units -> (B, U, K) logits."""
        if units is None:
            raise ValueError("a character tagger needs the characters' units (B, U, 4)")
        h = self.bert(input_ids, token_type_ids, attention_mask)  # (B, T, C)
        x = read_chars(self, h, units, self.bert.embeddings.tok)  # (B, U, C)
        return self.classifier(self.drop(x))  # (B, U, K)
