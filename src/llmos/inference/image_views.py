"""Test-time views of a query image (issue 22): the image embedded at several scalings about
its centre, the views' unit vectors averaged and normalised again.

Training scaled each drawing by a random factor in ``1 +- emoji.max_zoom`` (0.15 in
``configs/pretrain/clip-emoji.yaml``; :func:`llmos.data.emoji_pairs.zoom`, the same function
used here), so the model has seen every view. It costs one image-tower pass per view. Measured
by ``bench/clip_emoji.py --zooms 0.9,1,1.1`` (docs/BENCHMARKS.md, "The config again on this
CPU, and three views of the query"): +0.5 to +2.8 points of R@5 on one 4,000-step checkpoint,
within half a point on the default one; so it is an option, off by default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from llmos.data.emoji_pairs import zoom
from llmos.errors import LlmosError

MAX_VIEWS = 8
ZOOM_RANGE = (0.5, 2.0)


def check_zooms(zooms: Sequence[float] | None) -> tuple[float, ...] | None:
    """``zooms`` as a tuple (None stays None: one view, the image as it is).

    Raises:
        LlmosError: an empty list, more than :data:`MAX_VIEWS` factors, or a factor outside
            :data:`ZOOM_RANGE`.
    """
    if zooms is None:
        return None
    out = tuple(float(z) for z in zooms)
    if not 1 <= len(out) <= MAX_VIEWS:
        raise LlmosError(f"zooms: expected 1 to {MAX_VIEWS} scale factors, got {len(out)}")
    low, high = ZOOM_RANGE
    bad = [z for z in out if not low <= z <= high]  # also refuses nan
    if bad:
        raise LlmosError(f"zooms: each factor must be in [{low}, {high}] (1: as is); got {bad[0]}")
    return out


def embed_views(
    embed: Callable[[torch.Tensor], np.ndarray],
    pixels: torch.Tensor,
    zooms: Sequence[float] | None,
) -> np.ndarray:
    """(N, D) float32 unit vectors of (N, 3, S, S) uint8 ``pixels``: ``embed``'s vectors of
    each view (each image scaled by each factor of ``zooms``; 1 is the image itself) averaged
    and normalised; ``zooms`` None: ``embed(pixels)``."""
    views = check_zooms(zooms)
    if views is None or len(pixels) == 0:
        return embed(pixels)
    total: np.ndarray | None = None
    for factor in views:
        view = pixels if factor == 1.0 else zoom(pixels, np.full(len(pixels), factor))
        vectors = embed(view).astype(np.float32)
        total = vectors if total is None else total + vectors
    assert total is not None
    norms = np.linalg.norm(total, axis=1, keepdims=True)
    return total / np.maximum(norms, 1e-12)
