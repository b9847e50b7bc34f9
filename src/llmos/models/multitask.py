"""One BERT encoder with several heads read from one pass (``task: multitask``): the model
and a view of one head as a single-task model. A file of its own beside ``bert.py``, whose
encoder it composes, as the other heads compose it there."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llmos.config.model import BertConfig
from llmos.models.bert import BertModel, init_weights
from llmos.models.chars import CharReader
from llmos.models.crf import CRF


@dataclass(frozen=True)
class HeadShape:
    """One head of :class:`BertMultiTask`: ``classification`` (the mean of the last layer ->
    its labels) or ``tagging`` (every token -> its labels, with a CRF when ``crf`` is given;
    every character of the pieces instead when ``char_tags``, as
    :class:`~llmos.models.chars.BertForCharTagging` reads them)."""

    kind: str  # classification | tagging
    num_labels: int
    crf: CRF | None = None
    char_tags: bool = False


class BertMultiTask(nn.Module):
    """One encoder pass, several heads: intent and sentiment classifiers over the mean of the
    last layer, a slot tagger over every token, and that same mean as the sentence vector.

    Weight names: ``bert.*`` (no pooler), ``heads.<name>.weight`` / ``.bias`` (one linear map
    per head), ``crfs.<name>.*`` for a tagging head with a CRF and ``chars.<name>.char_*``
    for a character tagging head. A head on its own computes exactly what
    :class:`BertForSequenceClassification` (``pooling="mean"``),
    :class:`BertForTokenClassification` or :class:`BertForCharTagging` with the same weights
    computes, so the single-task training and decoding code runs on :class:`HeadView`
    unchanged. The character heads read the same ``units`` (B, U, 4): the characters of the
    same pieces.
    """

    def __init__(self, cfg: BertConfig, heads: dict[str, HeadShape]) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a multi-task model needs at least one head")
        bad = [n for n, h in heads.items() if h.kind not in ("classification", "tagging")]
        if bad:
            raise ValueError(f"head kind must be classification or tagging: {bad}")
        bad = [n for n, h in heads.items() if h.char_tags and h.kind != "tagging"]
        if bad:
            raise ValueError(f"char_tags is for tagging heads: {bad}")
        self.cfg = cfg
        self.kinds = {name: h.kind for name, h in heads.items()}
        self.bert = BertModel(cfg, pooler=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.heads = nn.ModuleDict(
            {name: nn.Linear(cfg.hidden_size, h.num_labels) for name, h in heads.items()}
        )
        init_weights(self, cfg)
        self.crfs = nn.ModuleDict({n: h.crf for n, h in heads.items() if h.crf is not None})
        # After the encoder and heads, so that a model without character heads draws the
        # same initial weights as before they existed.
        self.chars = nn.ModuleDict({n: CharReader(cfg) for n, h in heads.items() if h.char_tags})

    def encode(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) ids -> the last layer (B, T, C) and its mean over real tokens (B, C)."""
        h = self.bert(input_ids, token_type_ids, attention_mask)  # (B, T, C)
        if attention_mask is None:
            return h, h.mean(1)
        m = attention_mask.to(h.dtype)[..., None]  # (B, T, 1)
        return h, (h * m).sum(1) / m.sum(1).clamp(min=1.0)

    def head(
        self,
        name: str,
        h: torch.Tensor,
        pooled: torch.Tensor,
        units: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits of head ``name``: (B, K) for a classifier, (B, T, K) for a tagger, (B, U, K)
        for a character tagger (which needs ``units``)."""
        if name in self.chars:
            if units is None:
                raise ValueError(f"head {name!r} tags characters: it needs units (B, U, 4)")
            x = self.chars[name](h, units, self.bert.embeddings.tok)
        else:
            x = pooled if self.kinds[name] == "classification" else h
        return self.heads[name](self.drop(x))

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        head: str | None = None,
        units: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """(B, T) ids -> ``{head name: logits}`` for ``head`` (one) or every head, plus
        ``"pooled"``: the (B, C) mean of the last layer, the sentence vector. ``units``
        (B, U, 4): the characters the character heads tag."""
        h, pooled = self.encode(input_ids, token_type_ids, attention_mask)
        names = [head] if head is not None else list(self.heads)
        out = {name: self.head(name, h, pooled, units) for name in names}
        out["pooled"] = pooled
        return out


class HeadView(nn.Module):
    """One head of a :class:`BertMultiTask` (or of a DDP wrapper around one) seen as a
    single-task model: ``forward`` returns that head's logits, ``crf`` is its CRF (or None).

    The last forward's sentence vector stays in ``pooled``, for a loss on it (the multi-task
    trainer's retention term) without a second pass.
    """

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model = model  # registered: parameters() and .eval()/.train() reach the model
        self.name = name
        self.pooled: torch.Tensor | None = None

    @property
    def crf(self) -> CRF | None:
        inner = getattr(self.model, "module", self.model)  # under DDP, the wrapped model's
        return dict(inner.crfs.items()).get(self.name)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        units: torch.Tensor | None = None,
    ) -> torch.Tensor:
        out = self.model(input_ids, token_type_ids, attention_mask, head=self.name, units=units)
        self.pooled = out["pooled"]
        return out[self.name]
