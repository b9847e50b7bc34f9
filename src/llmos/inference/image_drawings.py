"""Image -> text by look-alike drawings (issue 22): each emoji name scored by the image's
nearest drawing of that emoji among the styles the CLIP checkpoint trained on, alone
(``by="drawings"``) or added to the name's caption cosine (``by="both"``).

Why: on a style never trained on, an image's nearest labelled drawing names it better than
the captions do. Measured by ``bench/clip_emoji.py`` (a 4,000-step model, the unseen twitter
style, 3,786 images), image -> text R@5 zh/en: captions 0.353/0.400, nearest drawing
0.499/0.544, captions + nearest drawing 0.483/0.522; on concepts never trained on, captions
0.150/0.215, drawings 0.480/0.534. This module computes what that bench's ``row_scores`` and
``nearest_drawing_metrics`` measure, for any image:

- a row's (emoji's) score is the best cosine between the image and the row's drawings in the
  training styles (the model's image vectors, every drawing embedded once:
  :class:`DrawingIndex`);
- a name's score is its best row's: names are shared (skin-tone variations carry their
  base's CLDR name), so a name takes the max over the rows it names (:class:`DrawnNames`);
- ``both`` adds that to the caption cosine with weight 1 (both are cosines in the one
  projected space; the bench fixed the weight before any run). A name no training style
  draws counts the image's lowest row score, the bench's floor; ``drawings`` alone leaves
  such names out (the bench ranks them last).

One difference from the bench: its floor is the lowest score over a whole evaluation batch;
here it is per image, so an answer does not depend on the other images of a request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmos.config.clip import EmojiDataConfig
from llmos.data.emoji_pairs import caption_options, load_rows, style_images
from llmos.errors import LlmosError
from llmos.inference.image_index import LANGUAGES, EntryIndex

log = logging.getLogger("llmos.inference")
BY = ("captions", "drawings", "both")
CHUNK = 256  # images scored at once: (CHUNK, drawings) and (CHUNK, names) float32 matrices


def check_by(by: str, custom_captions: bool) -> None:
    """Refuse an unknown ``by``, or drawings with captions other than the emoji names.

    Raises:
        LlmosError: saying what to pass instead.
    """
    if by not in BY:
        raise LlmosError(f"by must be one of {', '.join(BY)}, got {by!r}")
    if by != "captions" and custom_captions:
        raise LlmosError(
            f"by={by!r}: only the emoji names (the default captions) have drawings to compare "
            "with; leave out captions, or describe by='captions'"
        )


def train_styles(meta: dict[str, Any]) -> list[str]:
    """The styles a CLIP checkpoint trained on: its ``task.json``'s ``train_styles``, else
    (a checkpoint that did not record them) :class:`~llmos.config.clip.EmojiDataConfig`'s
    default."""
    return list(meta.get("train_styles") or EmojiDataConfig().train_styles)


@dataclass(frozen=True)
class DrawnNames:
    """A caption index's names, scattered onto from the rows that carry them: pair ``p`` says
    row ``rows[p]`` is named by entry ``entries[p]``; ``captions`` are the entries' (E, D)
    unit vectors, for ``both``.

    Attributes:
        rows, entries: (P,) long, on the drawings' device.
        captions: (E, D) float32.
    """

    rows: torch.Tensor
    entries: torch.Tensor
    captions: torch.Tensor

    @property
    def size(self) -> int:
        return self.captions.size(0)


@dataclass(frozen=True)
class DrawingIndex:
    """Every drawing of the training styles as a unit vector, and the row each draws.

    Attributes:
        styles: the styles embedded.
        vectors: (M, D) float32 unit vectors.
        rows: (M,) long, the emoji row (of ``emoji.jsonl``) each drawing draws.
        drawn: (R',) long, the distinct rows drawn (a row's floor is taken over these).
        n_rows: every row, drawn or not.
        names: ``(lang, name) -> [row, ...]``, the rows each CLDR name (in ``zh``, ``en``;
            emoji-datasource's English one where CLDR has none) names.
    """

    styles: tuple[str, ...]
    vectors: torch.Tensor
    rows: torch.Tensor
    drawn: torch.Tensor
    n_rows: int
    names: dict[tuple[str, str], list[int]]
    # name_map's, per caption language: built on first use, under the lock
    _maps: dict[str | None, DrawnNames] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def build(
        cls,
        styles: list[str],
        image_size: int,
        home: Path | None,
        embed: Callable[[torch.Tensor], np.ndarray],
        device: torch.device | str = "cpu",
    ) -> DrawingIndex:
        """Every drawing of the prepared ``styles`` under ``home`` (default
        ``$LLMOS_HOME/data``) at ``image_size``, embedded once with ``embed`` ((N, 3, S, S)
        uint8 -> (N, D) unit vectors).

        Raises:
            DataError: the emoji data or one of the styles was not prepared.
        """
        t0 = time.perf_counter()
        emoji_rows = load_rows(home)
        drawn = [style_images(emoji_rows, st, image_size, home) for st in styles]
        vectors = np.concatenate([embed(st.pixels) for st in drawn])
        rows = np.concatenate([st.rows for st in drawn])
        if not len(rows):
            raise LlmosError(f"no drawings in the styles {', '.join(styles)}")
        t = time.perf_counter() - t0
        log.info("drawings: %d of %s embedded in %.1f s", len(rows), "+".join(styles), t)
        names: dict[tuple[str, str], list[int]] = {}
        for r, row in enumerate(emoji_rows):
            opts = caption_options(row)
            for lang in LANGUAGES:
                if opts[f"{lang}_name"]:
                    names.setdefault((lang, opts[f"{lang}_name"]), []).append(r)
        return cls(
            styles=tuple(styles),
            vectors=torch.from_numpy(vectors).float().to(device),
            rows=torch.from_numpy(rows).long().to(device),
            drawn=torch.from_numpy(np.unique(rows)).long().to(device),
            n_rows=len(emoji_rows),
            names=names,
        )

    def __len__(self) -> int:
        return len(self.rows)

    def name_map(self, index: EntryIndex, lang: str | None) -> DrawnNames:
        """The scatter map of ``index``, the default caption index in ``lang`` (entries with
        ``lang`` and ``text``): built once per language, then kept."""
        with self._lock:
            if lang not in self._maps:
                self._maps[lang] = self._name_map(index)
            return self._maps[lang]

    def _name_map(self, index: EntryIndex) -> DrawnNames:
        pairs = [
            (r, e["index"])
            for e in index.entries
            for r in self.names.get((e.get("lang"), e["text"]), [])
        ]
        rows, entries = zip(*pairs, strict=True) if pairs else ((), ())
        # The index's own vectors (exact for a flat index), so ``both`` adds the very cosines
        # ``by="captions"`` ranks by.
        captions = index.vectors.index.reconstruct_n(0, len(index))
        device = self.vectors.device
        return DrawnNames(
            rows=torch.tensor(rows, dtype=torch.long, device=device),
            entries=torch.tensor(entries, dtype=torch.long, device=device),
            captions=torch.from_numpy(captions).float().to(device),
        )

    def row_scores(self, images: torch.Tensor) -> torch.Tensor:
        """(N, D) unit vectors -> (N, n_rows): each row's best cosine over its drawings,
        -inf for a row no style draws (the bench's ``row_scores``)."""
        cos = images @ self.vectors.T  # (N, M)
        best = torch.full((len(images), self.n_rows), float("-inf"), device=cos.device)
        return best.scatter_reduce_(1, self.rows.expand_as(cos), cos, reduce="amax")

    def name_scores(
        self, images: torch.Tensor, names: DrawnNames
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) unit vectors -> ((N, E) each name's best row score, -inf for a name no
        style draws; (N,) each image's floor, its lowest row score)."""
        best = self.row_scores(images)  # (N, R)
        floor = best[:, self.drawn].amin(1)  # (N,)
        out = torch.full((len(images), names.size), float("-inf"), device=best.device)
        picked = best[:, names.rows]  # (N, P)
        out.scatter_reduce_(1, names.entries.expand_as(picked), picked, reduce="amax")
        return out, floor

    @torch.inference_mode()
    def describe(
        self, vectors: np.ndarray, k: int, index: EntryIndex, lang: str | None, by: str
    ) -> list[list[dict[str, Any]]]:
        """Each of (N, D) image vectors' ``k`` best names of ``index`` (the default caption
        index in ``lang``) by ``by`` (``drawings``, ``both``), best first: the entry with
        ``score`` (what was ranked), ``drawing_score`` and, for ``both``, ``caption_score``
        (``score`` is their sum)."""
        if k < 1:
            raise LlmosError(f"k must be at least 1, got {k}")
        names = self.name_map(index, lang)
        assert by in ("drawings", "both") and names.size == len(index)
        out: list[list[dict[str, Any]]] = []
        for start in range(0, len(vectors), CHUNK):
            q = torch.from_numpy(np.ascontiguousarray(vectors[start : start + CHUNK]))
            q = q.float().to(self.vectors.device)  # (n, D)
            drawing, floor = self.name_scores(q, names)  # (n, E), (n,)
            if by == "both":  # a name no style draws counts the image's floor
                drawing = torch.maximum(drawing, floor[:, None])
                parts = {"caption_score": q @ names.captions.T, "drawing_score": drawing}
                score = parts["caption_score"] + drawing
            else:
                parts, score = {"drawing_score": drawing}, drawing
            top = score.topk(min(k, names.size), dim=1)
            values = {name: part.gather(1, top.indices).tolist() for name, part in parts.items()}
            ranked = zip(top.indices.tolist(), top.values.tolist(), strict=True)
            for i, (cols, scores) in enumerate(ranked):
                out.append(
                    [
                        {
                            **index.entries[c],
                            "score": s,
                            **{name: v[i][j] for name, v in values.items()},
                        }
                        for j, (c, s) in enumerate(zip(cols, scores, strict=True))
                        if s > float("-inf")  # drawings: a name no style draws is left out
                    ]
                )
        return out
