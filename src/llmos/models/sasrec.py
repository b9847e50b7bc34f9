"""SASRec (Kang and McAuley, ICDM 2018, https://arxiv.org/abs/1808.09781): next-item
prediction by a causal transformer over a user's item sequence, built on llmos's own
:class:`~llmos.models.gpt.GPT`. Trained by :mod:`llmos.train.tasks.sasrec`.

The GPT's vocabulary is the items plus padding: token 0 is padding and item index ``i`` of an
:class:`~llmos.data.interactions.Interactions` is token ``i + 1``. The output projection is the
item embedding matrix (GPT ties them), so an item's score is the dot product of the sequence
state with that item's embedding, as in SASRec and RecBole's ``SASRec.full_sort_predict``.

Sequences are right-padded with 0 (real items first, as RecBole's sequential datasets pad
them): under the causal mask a real position only sees the positions before it, never the
padding after it, so no attention mask is needed and padding changes no real position's output.

Where this differs from RecBole 1.2.1's ``SASRec``
(``recbole/model/sequential_recommender/sasrec.py``): GPT-2 blocks (pre-LayerNorm, a final
LayerNorm, tanh-approximated GELU, residual projections initialised at std 0.02 / sqrt(2 *
layers), LayerNorm eps 1e-5) where RecBole has BERT's post-LayerNorm encoder with a LayerNorm on
the embeddings (eps 1e-12, exact GELU); the padding row of the embeddings is an ordinary row
(RecBole: ``padding_idx=0``), which no loss reaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from llmos.config.model import GPTConfig
from llmos.models.gpt import GPT

PAD = 0  # the padding token; item index i is token i + 1


@dataclass(frozen=True)
class SASRecConfig:
    """The sizes of a :class:`SASRec`, saved as a checkpoint's ``config.json``.

    The defaults are RecBole 1.2.1's SASRec (``recbole/properties/model/SASRec.yaml``:
    ``n_layers`` 2, ``n_heads`` 2, ``hidden_size`` 64, ``inner_size`` 256,
    ``hidden_dropout_prob`` 0.5, ``attn_dropout_prob`` 0.5, ``initializer_range`` 0.02) and
    its ``MAX_ITEM_LIST_LENGTH`` 50 (``properties/dataset/sample.yaml``). Its
    ``layer_norm_eps`` 1e-12 and ``hidden_act: gelu`` are not taken: the GPT blocks have
    their own (eps 1e-5, tanh GELU).

    ``max_len`` is the context: the last ``max_len`` items of a history are what the model
    reads. ``model_type`` names the family in ``config.json``, so that a reader meant for
    BERT/GPT checkpoints refuses this one by name.
    """

    num_items: int
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 256
    max_len: int = 50
    dropout: float = 0.5
    attention_dropout: float = 0.5
    initializer_range: float = 0.02
    model_type: Literal["sasrec"] = "sasrec"

    def __post_init__(self) -> None:
        for name in ("num_items", "hidden_size", "num_layers", "num_heads", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def gpt(self) -> GPTConfig:
        """The GPT underneath: ``num_items + 1`` tokens (padding first), ``max_len`` positions."""
        return GPTConfig(
            vocab_size=self.num_items + 1,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            max_position=self.max_len,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            initializer_range=self.initializer_range,
        )


def last_items(seqs: torch.Tensor, lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B, T) right-padded sequences with ``lengths`` (B,) -> (B, min(T, max_len)): each
    sequence's last ``max_len`` real items, moved to the front and right-padded again."""
    width = seqs.size(1)  # T
    if width <= max_len:
        return seqs
    start = (lengths - max_len).clamp(min=0)  # (B,) where each kept window begins
    at = start[:, None] + torch.arange(max_len, device=seqs.device)  # (B, max_len)
    kept = seqs.gather(1, at.clamp(max=width - 1))
    return kept.masked_fill(at >= lengths[:, None], PAD)


class SASRec(nn.Module):
    """A :class:`~llmos.models.gpt.GPT` over item tokens: (B, T) right-padded item sequences
    -> next-item logits at every position."""

    # GPT's tied output projection, under this module's prefix (saved once, as its source).
    tied_weights: ClassVar[dict[str, str]] = {
        f"gpt.{k}": f"gpt.{v}" for k, v in GPT.tied_weights.items()
    }

    def __init__(self, config: SASRecConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        if generator is None:
            self.gpt = GPT(config.gpt())
        else:
            # GPT initialises from the global RNG: draw its weights under a fork of it seeded
            # from ``generator``, so they are a function of that seed alone.
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.gpt = GPT(config.gpt())

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, T) item tokens (item index + 1; 0 = padding after the real items), T <=
        ``max_len`` -> (B, T, num_items + 1) logits of the next token at each position (column
        0, the padding token, is no item)."""
        logits, _ = self.gpt(seqs)
        return logits

    def score_all(self, seqs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T) right-padded item tokens with (B,) ``lengths`` >= 1 -> (B, num_items) scores
        of the item after each sequence's last real one (item index order, padding dropped).

        Only the last ``max_len`` items of a longer sequence are read."""
        seqs = last_items(seqs, lengths, self.config.max_len)
        at = (lengths.clamp(max=self.config.max_len) - 1).clamp(min=0)  # (B,) last real position
        logits = self(seqs)  # (B, T, V)
        last = logits[torch.arange(len(seqs), device=seqs.device), at]  # (B, V)
        return last[:, 1:]
