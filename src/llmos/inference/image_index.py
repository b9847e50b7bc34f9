"""What a CLIP pipeline searches: :class:`EntryIndex` (unit vectors under exact FAISS search,
with a dict per row), and the rows of its default indexes from the prepared emoji data: every
emoji's CLDR name in Chinese and English (captions, image -> text) and one style's images
(a gallery, text -> image)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmos.data.emoji_pairs import caption_options
from llmos.errors import LlmosError
from llmos.paths import llmos_home
from llmos.store.vectors import VectorIndex

LANGUAGES = ("zh", "en")


@dataclass
class EntryIndex:
    """Unit vectors under exact FAISS search (:class:`~llmos.store.vectors.VectorIndex`:
    inner product = cosine), with what each row stands for.

    Attributes:
        kind: ``text`` (a caption index: what image -> text searches) or ``image`` (a gallery:
            what text -> image searches).
        entries: one dict per row, in order, each with its ``index`` (the row): ``text``
            (and for the emoji names ``lang``, ``emoji``, ``unified``) for captions; ``name``
            (and for the emoji ``emoji``, ``unified``, ``zh_name``, ``style``) for images.
        vectors: the FAISS index over the rows' (N, D) vectors.
    """

    kind: str
    entries: list[dict[str, Any]]
    vectors: VectorIndex

    @classmethod
    def build(cls, kind: str, vectors: np.ndarray, entries: list[dict[str, Any]]) -> EntryIndex:
        """Index (N, D) ``vectors`` (normalised here), row i standing for ``entries[i]``."""
        if len(vectors) != len(entries) or not entries:
            raise LlmosError(
                f"an index needs one vector per entry and at least one: {len(vectors)} "
                f"vectors, {len(entries)} entries"
            )
        entries = [{**e, "index": i} for i, e in enumerate(entries)]
        ids = [str(i) for i in range(len(entries))]
        return cls(kind, entries, VectorIndex.build(vectors, ids, {"kind": kind}))

    def __len__(self) -> int:
        return len(self.entries)

    def search(self, queries: np.ndarray, k: int) -> list[list[dict[str, Any]]]:
        """Each query's ``k`` nearest rows (all rows when there are fewer), best first: their
        entries with the cosine ``score``."""
        if k < 1:
            raise LlmosError(f"k must be at least 1, got {k}")
        return [
            [{**self.entries[int(i)], "score": s} for i, s in row]
            for row in self.vectors.search(queries, k)
        ]


def emoji_chars(row: dict[str, Any]) -> str:
    """The row's emoji characters (from ``unified`` when the row lacks them)."""
    return row.get("emoji") or "".join(chr(int(c, 16)) for c in row["unified"].split("-"))


def emoji_captions(rows: list[dict[str, Any]], lang: str | None) -> list[dict[str, Any]]:
    """Every emoji's name in ``lang`` (``zh``, ``en``; None: both), each (language, text) once,
    as entries ``{"text", "lang", "emoji", "unified"}``: CLDR's names, an emoji without one
    going by emoji-datasource's English name (:func:`~llmos.data.emoji_pairs.caption_options`)."""
    if lang not in (None, *LANGUAGES):
        raise LlmosError(f"lang must be zh, en or None (both), got {lang!r}")
    entries, seen = [], set()
    for row in rows:
        opts = caption_options(row)
        for la in LANGUAGES if lang is None else (lang,):
            text = opts[f"{la}_name"]
            if text and (la, text) not in seen:
                seen.add((la, text))
                entries.append(
                    {"text": text, "lang": la, "emoji": emoji_chars(row), "unified": row["unified"]}
                )
    return entries


def emoji_gallery(rows: list[dict[str, Any]], drawn: list[int], style: str) -> list[dict[str, Any]]:
    """Entries ``{"emoji", "unified", "name", "zh_name", "style"}`` of a style's images, whose
    rows are ``drawn``."""
    out = []
    for r in drawn:
        opts = caption_options(rows[r])
        entry = {"emoji": emoji_chars(rows[r]), "unified": rows[r]["unified"]}
        out.append({**entry, "name": opts["en_name"], "zh_name": opts["zh_name"], "style": style})
    return out


def text_cache_path(digest: str, kind: str, texts: list[str]) -> Path:
    """Where training's :func:`~llmos.train.tasks.clip.text_vectors` caches the text tower's
    vectors of ``texts`` (by the tower's weights digest, the prefix kind and the texts)."""
    key = hashlib.sha256(json.dumps([digest, kind, texts], ensure_ascii=False).encode())
    return llmos_home() / "cache" / "clip" / f"{key.hexdigest()[:24]}.npy"
