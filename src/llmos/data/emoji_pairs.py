"""Emoji image-caption pairs for contrastive training (issue 22): the concept split, the
captions, the pixels and the batches.

A *concept* is a base emoji with its skin-tone variations (they share the base's CLDR name):
:func:`holdout_bases` keeps a seeded share of concepts out of training in every style, for
zero-shot evaluation. Captions come from the CLDR names and keywords in Chinese and English
(:func:`caption_options`); an emoji without a CLDR entry (flags, keycaps, ZWJ sequences) is
captioned with emoji-datasource's English name only.

Pixels: the RGBA images are composited on white into RGB (:func:`to_pixels`). The alpha
channel carries nothing the composite lacks once the background is fixed, and three channels
keep the image tower an ordinary ViT (HF's layout, its weights exportable as they are).
Augmentation is a random scaling about the centre (:func:`zoom`), optionally a small
rotation and a Gaussian blur (:func:`blur`), and a random translation (:func:`shift`), with
white fill: no flips, since a mirrored arrow or hand is another emoji, and no colour
jitter, since colour tells skin tones (and many objects) apart. With two
views, each emoji of a batch comes in two training styles (``pixel_values_2``) for an
image-image loss across styles.

Batch ``n`` is a function of ``(seed, n)`` alone (:class:`ContrastiveBatches`), so a resumed
run draws exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from llmos.data.emoji import EMOJI_DIR, ROWS_FILE, load_images
from llmos.errors import DataError
from llmos.paths import data_dir

CAPTION_KINDS = ("zh_name", "en_name", "zh_keywords", "en_keywords")

# The emoji groups' names in Chinese, as CLDR's zh locale spells them (emoji-datasource has the
# English ones only): with the English name, a category's two descriptions for zero-shot.
CATEGORY_ZH = {
    "Smileys & Emotion": "笑脸和情感",
    "People & Body": "人物和身体",
    "Component": "组件",
    "Animals & Nature": "动物和自然",
    "Food & Drink": "食物和饮料",
    "Travel & Places": "旅行和地点",
    "Activities": "活动",
    "Objects": "物体",
    "Symbols": "符号",
    "Flags": "旗帜",
}


def category_descriptions(category: str, subcategories: Iterable[str] = ()) -> list[str]:
    """A category's zero-shot descriptions: its English name and, where known, its Chinese
    one (:data:`CATEGORY_ZH`); then, when given, its subcategories as phrases, the way
    training's bare captions read (``face-smiling`` -> ``face smiling``)."""
    zh = CATEGORY_ZH.get(category)
    names = [category, zh] if zh else [category]
    return names + [s.replace("-", " ") for s in subcategories]


def category_subcategories(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each category's subcategories as emoji-datasource names them, sorted: the taxonomy, the
    same whichever concepts are held out (a category name, not a concept's)."""
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(r["category"] or "", set()).update(
            [r["subcategory"]] if r.get("subcategory") else []
        )
    return {c: sorted(s) for c, s in out.items()}


def load_rows(home: Path | None = None) -> list[dict[str, Any]]:
    """The prepared ``emoji.jsonl`` rows (see :func:`llmos.data.emoji.emoji_rows`)."""
    path = (Path(home) if home is not None else data_dir()) / EMOJI_DIR / ROWS_FILE
    if not path.is_file():
        raise DataError(f"{path} is missing: run `llmos data prepare --with-emoji` first")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def holdout_bases(rows: list[dict[str, Any]], share: float, seed: int) -> set[str]:
    """A seeded ``share`` of the base emoji (concepts), kept out of training entirely."""
    bases = sorted({r["base"] for r in rows})
    n = round(len(bases) * share)
    order = np.random.default_rng(seed).permutation(len(bases))
    return {bases[i] for i in order[:n]}


def caption_options(row: dict[str, Any]) -> dict[str, str | None]:
    """The row's captions by kind (:data:`CAPTION_KINDS`): the CLDR names and keyword lists
    (``、``-joined in Chinese, comma-joined in English); None where CLDR has none. The English
    name falls back to emoji-datasource's, so every row has one caption at least."""
    zh_kw, en_kw = row.get("zh_keywords") or [], row.get("en_keywords") or []
    return {
        "zh_name": row.get("zh_name"),
        "en_name": row.get("en_name") or row["name"],
        "zh_keywords": "、".join(zh_kw) if zh_kw else None,
        "en_keywords": ", ".join(en_kw) if en_kw else None,
    }


def caption_texts(rows: list[dict[str, Any]]) -> list[str]:
    """Every distinct caption of ``rows``, sorted: what the frozen text tower embeds once."""
    return sorted({t for r in rows for t in caption_options(r).values() if t})


def trained_texts(rows: list[dict[str, Any]]) -> list[str]:
    """Every caption and category name of ``rows``, sorted: what CLIP training embeds with
    the text tower at once and caches under one key (the inference side reads that cache)."""
    return sorted(set(caption_texts(rows)) | {r["category"] or "" for r in rows})


def sample_caption(
    options: dict[str, str | None], rng: np.random.Generator, zh_prob: float, keywords_prob: float
) -> str:
    """One caption: Chinese with probability ``zh_prob`` where there is a Chinese name, else
    English; then the keyword list with probability ``keywords_prob`` where there is one,
    else the name."""
    lang = "zh" if options["zh_name"] and rng.random() < zh_prob else "en"
    kw = options[f"{lang}_keywords"]
    use_kw = rng.random() < keywords_prob
    text = kw if use_kw and kw else options[f"{lang}_name"]
    assert text is not None  # en_name always exists; zh chosen only with a zh name
    return text


def to_pixels(rgba: np.ndarray, size: int) -> torch.Tensor:
    """(N, 64, 64, 4) uint8 RGBA -> (N, 3, size, size) uint8 RGB composited on white,
    resized with antialiasing when ``size`` is not the images' own."""
    x = torch.from_numpy(rgba).permute(0, 3, 1, 2).float()  # (N, 4, H, W)
    alpha = x[:, 3:] / 255.0
    rgb = x[:, :3] * alpha + 255.0 * (1.0 - alpha)  # (N, 3, H, W) over white
    if rgb.shape[-1] != size:
        rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", antialias=True)
    return rgb.round().clamp(0, 255).to(torch.uint8)


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float in [-1, 1], as HF's ViT image processor: (x/255 - 0.5)/0.5."""
    return pixels.float() / 127.5 - 1.0


def shift(pixels: torch.Tensor, dx: np.ndarray, dy: np.ndarray) -> torch.Tensor:
    """Translate each image of (B, 3, H, W) uint8 by (dx, dy) pixels, filling with white."""
    out = torch.full_like(pixels, 255)
    h, w = pixels.shape[-2:]
    for i, (x, y) in enumerate(zip(dx.tolist(), dy.tolist(), strict=True)):
        src = pixels[i, :, max(0, -y) : h - max(0, y), max(0, -x) : w - max(0, x)]
        out[i, :, max(0, y) : max(0, y) + src.shape[1], max(0, x) : max(0, x) + src.shape[2]] = src
    return out


def zoom(
    pixels: torch.Tensor, factors: np.ndarray, degrees: np.ndarray | None = None
) -> torch.Tensor:
    """Scale each image of (B, 3, H, W) uint8 by its factor about the centre (bilinear;
    > 1 enlarges, cropping the edges; < 1 shrinks, filling with white), and rotate it by its
    angle in ``degrees`` (counter-clockwise) when given."""
    x = pixels.float() - 255.0  # white is 0, so grid_sample's zero padding fills white
    inv = torch.from_numpy(1.0 / np.asarray(factors, dtype=np.float64)).float()
    angles = np.zeros(len(x)) if degrees is None else np.asarray(degrees, dtype=np.float64)
    rad = torch.from_numpy(np.deg2rad(angles)).float()
    cos, sin = rad.cos() * inv, rad.sin() * inv  # output -> input: the inverse map
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out + 255.0).round().clamp(0, 255).to(torch.uint8)


def blur(pixels: torch.Tensor, sigmas: np.ndarray) -> torch.Tensor:
    """Gaussian-blur each image of (B, 3, H, W) uint8 with its own sigma in pixels (0 leaves
    it as it is; a 5 x 5 kernel, white beyond the edges): the styles differ in how sharp
    their outlines and shading are."""
    out = pixels.clone()
    r = torch.arange(-2, 3, dtype=torch.float32)
    for i, sigma in enumerate(np.asarray(sigmas, dtype=np.float64).tolist()):
        if sigma <= 0:
            continue
        k = torch.exp(-(r**2) / (2 * sigma**2))
        k = (k[:, None] * k[None, :]) / k.sum() ** 2  # (5, 5), sums to 1
        x = F.pad(pixels[i : i + 1].float() - 255.0, (2, 2, 2, 2))  # zero = white
        y = F.conv2d(x, k.expand(3, 1, 5, 5), groups=3)
        out[i] = (y[0] + 255.0).round().clamp(0, 255).to(torch.uint8)
    return out


@dataclass
class StyleImages:
    """One style's images: its row indices (into the rows) and (N, 3, S, S) uint8 pixels."""

    rows: np.ndarray
    pixels: torch.Tensor


def style_images(
    rows: list[dict[str, Any]], style: str, size: int, home: Path | None = None
) -> StyleImages:
    """A prepared style's images, composited and resized, with the row each one draws."""
    index = {r["unified"]: i for i, r in enumerate(rows)}
    codes, rgba = load_images(home, style)
    keep = np.array([c in index for c in codes.tolist()], dtype=bool)
    rows_of = np.array([index[c] for c in codes[keep].tolist()], dtype=np.int64)
    return StyleImages(rows_of, to_pixels(rgba[keep], size))


class ContrastiveBatches:
    """Training batches of distinct emoji: each drawn in one of its training styles, with one
    sampled caption, a random scaling (``max_zoom``) and shift. Batch ``n`` depends on
    ``(seed, n)`` only.

    Args:
        styles: the training styles' images.
        allowed: the row indices that may be trained on (held-out concepts excluded).
        captions: per row, its caption options (:func:`caption_options`).
        text_index: caption text -> its row in the cached text-vector matrix.
        views: 2 adds ``pixel_values_2``, each emoji in another of its training styles
            (the same style where it has only one), augmented independently.
    """

    def __init__(
        self,
        styles: list[StyleImages],
        allowed: set[int],
        captions: list[dict[str, str | None]],
        text_index: dict[str, int],
        batch_size: int,
        seed: int,
        zh_prob: float,
        keywords_prob: float,
        max_shift: int,
        max_zoom: float = 0.0,
        views: int = 1,
        max_rotation: float = 0.0,
        max_blur: float = 0.0,
    ) -> None:
        # Every (style, image) pair of an allowed row, grouped by row.
        by_row: dict[int, list[tuple[int, int]]] = {}
        for s, st in enumerate(styles):
            for j, r in enumerate(st.rows.tolist()):
                if r in allowed:
                    by_row.setdefault(r, []).append((s, j))
        self.rows = np.array(sorted(by_row), dtype=np.int64)
        if len(self.rows) < batch_size:
            raise DataError(
                f"emoji: {len(self.rows)} trainable emoji, fewer than train.batch_size "
                f"({batch_size})"
            )
        self.by_row, self.styles = by_row, styles
        self.captions, self.text_index = captions, text_index
        self.batch_size, self.seed = batch_size, seed
        self.zh_prob, self.keywords_prob, self.max_shift = zh_prob, keywords_prob, max_shift
        self.max_zoom, self.views = max_zoom, views
        self.max_rotation, self.max_blur = max_rotation, max_blur
        self.position = 0

    def _augment(self, images: list[torch.Tensor], rng: np.random.Generator) -> torch.Tensor:
        m, n = self.max_shift, len(images)
        dx, dy = rng.integers(-m, m + 1, size=(2, n))
        pixels = torch.stack(images)
        # each draw only when its option is on, so runs without it keep their batches
        factors = np.ones(n)
        if self.max_zoom > 0:
            factors = rng.uniform(1 - self.max_zoom, 1 + self.max_zoom, size=n)
        degrees = None
        if self.max_rotation > 0:
            degrees = rng.uniform(-self.max_rotation, self.max_rotation, size=n)
        if self.max_zoom > 0 or degrees is not None:
            pixels = zoom(pixels, factors, degrees)
        if self.max_blur > 0:
            pixels = blur(pixels, rng.uniform(0, self.max_blur, size=n))
        return normalise(shift(pixels, dx, dy))

    def batch(self, n: int) -> dict[str, Any]:
        """Batch ``n``: ``pixel_values`` (B, 3, S, S) float, ``text_ids`` (B,) indices into the
        text vectors, ``rows`` (B,) the emoji drawn, ``num_tokens`` the images in it; with two
        views also ``pixel_values_2`` (B, 3, S, S)."""
        rng = np.random.default_rng([self.seed, n])
        rows = rng.choice(self.rows, size=self.batch_size, replace=False)
        images, seconds, text_ids = [], [], []
        for r in rows.tolist():
            drawings = self.by_row[r]
            first = int(rng.integers(len(drawings)))
            s, j = drawings[first]
            images.append(self.styles[s].pixels[j])
            if self.views == 2:  # another drawing where there is one
                other = (first + 1 + int(rng.integers(max(1, len(drawings) - 1)))) % len(drawings)
                s2, j2 = drawings[other]
                seconds.append(self.styles[s2].pixels[j2])
            text = sample_caption(self.captions[r], rng, self.zh_prob, self.keywords_prob)
            text_ids.append(self.text_index[text])
        out = {
            "pixel_values": self._augment(images, rng),
            "text_ids": torch.tensor(text_ids, dtype=torch.long),
            "rows": torch.from_numpy(rows),
            # the loop's tokens_per_s then counts images per second
            "num_tokens": len(rows) * self.views,
        }
        if self.views == 2:
            out["pixel_values_2"] = self._augment(seconds, rng)
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:  # the position counts batches handed out, so a checkpoint resumes after them
            n = self.position
            self.position = n + 1
            yield self.batch(n)
