"""Item-to-item recommenders that score a user by the items they interacted with: EASE and
popularity. Both are closed form (no gradient steps); the learned recommenders (BPR,
the sequential transformers) train through the shared loop.

A model maps a user's interaction rows (B, items), 0/1, to scores (B, items).
"""

from __future__ import annotations

import scipy.sparse as sp
import torch
from torch import nn


class EASE(nn.Module):
    """Embarrassingly Shallow Autoencoder (Steck, WWW 2019): an item-item weight matrix ``B``
    with a zero diagonal that reconstructs each user's row, ``scores = x @ B``.

    ``B = argmin ||X - XB||^2 + reg * ||B||^2  s.t. diag(B) = 0`` has the closed form
    ``P = (X^T X + reg I)^-1``, ``B_ij = -P_ij / P_jj`` (``B_jj = 0``), computed by
    :meth:`fit` in float64. Memory and time grow with the square and cube of the number of
    items: meant for catalogs up to a few tens of thousands of items.
    """

    def __init__(self, num_items: int) -> None:
        super().__init__()
        self.register_buffer("weight", torch.zeros(num_items, num_items))

    @classmethod
    def fit(cls, x: sp.spmatrix, reg: float = 250.0) -> EASE:
        """Solve for ``B`` from the (users, items) 0/1 matrix ``x``; ``reg`` is the L2 weight
        (RecBole's default ``reg_weight`` 250)."""
        if reg <= 0:
            raise ValueError(f"reg must be positive, got {reg}")
        x = sp.csr_matrix(x, dtype="float64")
        gram = torch.from_numpy((x.T @ x).toarray())
        gram.diagonal().add_(reg)
        p = torch.linalg.inv(gram)
        b = -p / p.diagonal()[None, :]
        b.diagonal().zero_()
        model = cls(x.shape[1])
        model.weight.copy_(b.to(torch.float32))
        return model

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, items) interaction rows -> (B, items) scores."""
        return rows.to(self.weight.dtype) @ self.weight


class Popularity(nn.Module):
    """Every user gets the items' interaction counts (RecBole's ``Pop``): the floor every
    personal model has to beat."""

    def __init__(self, num_items: int) -> None:
        super().__init__()
        self.register_buffer("counts", torch.zeros(num_items))

    @classmethod
    def fit(cls, x: sp.spmatrix) -> Popularity:
        model = cls(x.shape[1])
        model.counts.copy_(torch.from_numpy(sp.csr_matrix(x).sum(0).A1).float())
        return model

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.counts.expand(rows.shape[0], -1)


class ContentProfile(nn.Module):
    """Scores items by how close their text is to what the user interacted with: the user's
    profile is the normalised sum of the vectors of their items, an item's score its cosine to
    that profile. ``vectors`` are the items' text embeddings (e.g. E5 passages of title and
    genres), unit length. It needs no interaction data beyond the user's own, so it ranks
    items nobody interacted with yet and serves users with a handful of interactions; a user
    with none gets zeros (combine it with popularity).
    """

    def __init__(self, vectors: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("vectors", nn.functional.normalize(vectors.float(), dim=-1))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        profile = nn.functional.normalize(rows.to(self.vectors.dtype) @ self.vectors, dim=-1)
        return profile @ self.vectors.T
