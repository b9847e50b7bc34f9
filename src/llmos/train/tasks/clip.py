"""Contrastive image-text training (CLIP) on the emoji data, with a frozen text tower: the
setup for ``llmos pretrain`` (``model.model_type: clip``), the task (symmetric InfoNCE), its
held-out evaluation and the reading back of its checkpoint.

Why a frozen text tower: captions are embedded once by the text checkpoint
(``model.text_encoder``, multilingual-e5) and cached under ``$LLMOS_HOME/cache/clip``, so a
training step runs only the image encoder and two linear maps. A step of the 12-layer text
encoder over 128 captions would cost several times the small ViT's (measured: see
docs/BENCHMARKS.md, issue 22).

Evaluation (:class:`RetrievalEval`) is on a style never trained on (``emoji.eval_style``):
image -> text recall@1/5 against every emoji's name (Chinese and English separately),
text -> image recall@10 with Chinese and with English names as queries (over the emoji
having both, so the two compare on one set), and zero-shot category classification of
the held-out concepts' images (one per concept: its base emoji), against the majority class:
each category described by its English name, by its names in both languages, and by those
and its subcategories' names (emoji-datasource's taxonomy). The same three on the concepts
trained on (``seen_*``, the unseen style's drawings) are where to choose among description
sets without looking at the held-out concepts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from llmos.checkpoint.digest import weights_digest
from llmos.checkpoint.io import CONFIG_FILE, load_state_dict_strict, read_weights
from llmos.config.clip import EmojiDataConfig
from llmos.config.loader import from_dict
from llmos.config.model import CLIPConfig
from llmos.config.run import PretrainConfig
from llmos.data.emoji_pairs import (
    ContrastiveBatches,
    StyleImages,
    caption_options,
    category_descriptions,
    category_subcategories,
    holdout_bases,
    load_rows,
    normalise,
    style_images,
    trained_texts,
)
from llmos.errors import ConfigError
from llmos.files import atomic_path
from llmos.models.clip import CLIPModel
from llmos.paths import llmos_home
from llmos.train.runs import PretrainSetup

log = logging.getLogger("llmos.train")


def info_nce_sums(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's symmetric InfoNCE over a (B, B) matrix whose diagonal holds the matching
    pairs: the summed cross-entropies image -> text (rows) and text -> image (columns)."""
    target = torch.arange(logits.size(0), device=logits.device)
    i2t = F.cross_entropy(logits, target, reduction="sum")
    t2i = F.cross_entropy(logits.T, target, reduction="sum")
    return i2t, t2i


def text_vectors(encoder: str | Path, kind: str, texts: list[str]) -> np.ndarray:
    """(len(texts), dim) unit vectors of ``texts`` from the frozen text checkpoint, cached
    under ``$LLMOS_HOME/cache/clip`` by the encoder's weights digest, ``kind`` and the texts."""
    key = hashlib.sha256(
        json.dumps([weights_digest(encoder), kind, texts], ensure_ascii=False).encode()
    ).hexdigest()[:24]
    path = llmos_home() / "cache" / "clip" / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    from llmos.inference.load import load_pipeline

    t0 = time.perf_counter()
    vectors = load_pipeline(encoder).embed(texts, kind=kind, batch_size=64)
    log.info(
        "text tower: %d captions embedded in %.1f s (cached in %s)",
        len(texts),
        time.perf_counter() - t0,
        path,
    )
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, vectors.astype(np.float32))
    return vectors.astype(np.float32)


def caption_matrix(
    encoder: str | Path, kind: str, rows: list[dict[str, Any]]
) -> tuple[torch.Tensor, dict[str, int], float]:
    """The frozen tower's vectors of every caption and category description of ``rows``:
    (T, dim) unit vectors, text -> row, and the seconds it took (cached files: fractions of a
    second). The category descriptions are cached apart from the captions, so adding one does
    not re-embed the 13 k captions."""
    t0 = time.perf_counter()
    texts = trained_texts(rows)
    subs = category_subcategories(rows)
    extra = sorted({d for c, s in subs.items() for d in category_descriptions(c, s)} - set(texts))
    parts = [text_vectors(encoder, kind, texts)]
    if extra:
        parts.append(text_vectors(encoder, kind, extra))
    matrix = torch.from_numpy(np.concatenate(parts))
    index = {t: i for i, t in enumerate([*texts, *extra])}
    return matrix, index, time.perf_counter() - t0


def padded_ids(lists: list[list[int]]) -> torch.Tensor:
    """(K, width) ids of ``K`` lists of text ids, padded with -1."""
    width = max(len(ids) for ids in lists)
    return torch.tensor([ids + [-1] * (width - len(ids)) for ids in lists])


def recall_at(scores: torch.Tensor, truth: torch.Tensor, k: int) -> torch.Tensor:
    """(Q,) booleans: whether a query's true candidate is among its ``k`` best of (Q, N)
    scores. ``truth`` is (Q, N) boolean (several candidates may be right)."""
    top = scores.topk(min(k, scores.size(1)), dim=1).indices  # (Q, k)
    return truth.gather(1, top).any(1)


class RetrievalEval:
    """The held-out evaluation: an unseen style's images against every emoji's names.

    Args:
        rows: the emoji rows.
        images: the evaluation style's images.
        held_out: row indices of the held-out concepts.
        vectors: the text-vector matrix; ``text_index`` maps a text to its row in it.
    """

    def __init__(
        self,
        rows: list[dict[str, Any]],
        images: StyleImages,
        held_out: set[int],
        vectors: torch.Tensor,
        text_index: dict[str, int],
    ) -> None:
        self.images, self.vectors = images, vectors
        opts = [caption_options(r) for r in rows]
        img_rows = images.rows.tolist()
        self.held_out = torch.tensor([r in held_out for r in img_rows])
        # Categories are scored once per held-out concept (its base emoji): skin-tone
        # variations would count People & Body five times over (60 % of held-out images).
        bases = torch.tensor([not rows[r]["skin_tones"] for r in img_rows])
        self.held_bases = self.held_out & bases
        self.names: dict[str, list[str | None]] = {
            lang: [opts[r][f"{lang}_name"] for r in img_rows] for lang in ("zh", "en")
        }
        self.candidates = {
            lang: sorted({t for t in names if t}) for lang, names in self.names.items()
        }
        self.ids = {
            lang: torch.tensor([text_index[t] for t in c]) for lang, c in self.candidates.items()
        }
        categories = [rows[r]["category"] or "" for r in img_rows]
        self.category_names = sorted(set(categories))
        self.category = torch.tensor([self.category_names.index(c) for c in categories])
        self.category_ids = torch.tensor([text_index[c] for c in self.category_names])
        # (K, descriptions) ids of each category's English and Chinese names, -1 padded; and of
        # those with its subcategories' names
        subs = category_subcategories(rows)
        self.description_ids = padded_ids(
            [[text_index[d] for d in category_descriptions(c)] for c in self.category_names]
        )
        self.subcategory_ids = padded_ids(
            [
                [text_index[d] for d in category_descriptions(c, subs[c])]
                for c in self.category_names
            ]
        )
        # the concepts trained on, once each: where to choose among description sets without
        # looking at the held-out concepts
        self.seen_bases = ~self.held_out & bases

    def image_embeds(self, model: CLIPModel, batch_size: int = 256) -> torch.Tensor:
        """(N, D) unit vectors of the evaluation images."""
        device = next(model.parameters()).device
        out = [
            model.embed_images(normalise(self.images.pixels[i : i + batch_size]).to(device))
            for i in range(0, len(self.images.pixels), batch_size)
        ]
        return torch.cat(out).float().cpu()

    def text_embeds(self, model: CLIPModel, ids: torch.Tensor) -> torch.Tensor:
        device = next(model.parameters()).device
        return model.embed_texts(self.vectors[ids].to(device)).float().cpu()

    def ensembled(self, model: CLIPModel, ids: torch.Tensor) -> torch.Tensor:
        """(K, D): each row of -1-padded (K, n) text ids the normalised mean of its texts'
        projected vectors."""
        desc = self.text_embeds(model, ids.clamp(min=0).flatten()).view(*ids.shape, -1)
        return F.normalize((desc * (ids >= 0)[..., None]).sum(1), dim=-1)

    @torch.no_grad()
    def metrics(self, model: CLIPModel) -> dict[str, float]:
        """Recalls, zero-shot category accuracy and its majority baseline (see the module)."""
        img = self.image_embeds(model)
        out: dict[str, float] = {}
        for lang in ("zh", "en"):
            named = torch.tensor([t is not None for t in self.names[lang]])
            cands = self.candidates[lang]
            pos = {t: i for i, t in enumerate(cands)}
            truth = torch.zeros(len(img), len(cands), dtype=torch.bool)
            for i, t in enumerate(self.names[lang]):
                if t is not None:
                    truth[i, pos[t]] = True
            scores = img @ self.text_embeds(model, self.ids[lang]).T  # (N, M)
            for k in (1, 5):
                hit = recall_at(scores, truth, k)
                out[f"i2t_r{k}_{lang}"] = float(hit[named].float().mean())
                unseen = named & self.held_out
                out[f"i2t_r{k}_{lang}_heldout"] = float(hit[unseen].float().mean())
        both = [i for i, (z, e) in enumerate(zip(*self.names.values(), strict=True)) if z and e]
        for lang in ("zh", "en"):
            pos = {t: i for i, t in enumerate(self.candidates[lang])}
            name_of = torch.tensor([pos[t] if t else -1 for t in self.names[lang]])  # (N,)
            query = name_of[both]  # (Q,) each query is the name of one image
            q = self.text_embeds(model, self.ids[lang])[query]  # (Q, D)
            truth = query[:, None] == name_of[None, :]  # (Q, N) images of that name
            out[f"t2i_r10_{lang}"] = float(recall_at(q @ img.T, truth, 10).float().mean())
        # a category is its English name; or, CLIP's prompt ensembling, the normalised mean of
        # its descriptions (its names in both languages; those and its subcategories')
        labels = {
            "": self.text_embeds(model, self.category_ids),  # (K, D)
            "_zh_en": self.ensembled(model, self.description_ids),
            "_subcategories": self.ensembled(model, self.subcategory_ids),
        }
        for prefix, concepts in (("zeroshot", self.held_bases), ("seen", self.seen_bases)):
            truth = self.category[concepts]
            for suffix, vectors in labels.items():
                guess = (img[concepts] @ vectors.T).argmax(1)
                out[f"{prefix}_category_acc{suffix}"] = float((guess == truth).float().mean())
            counts = Counter(truth.tolist())
            out[f"{prefix}_category_majority"] = max(counts.values()) / max(len(truth), 1)
        out["logit_scale"] = float(model.scale())
        return out


class CaptionBank:
    """Every caption of the trainable emoji: the image -> text negatives of
    ``emoji.caption_negatives: all``.

    Args:
        captions: per row, its caption options (:func:`caption_options`).
        allowed: the rows trained on; held-out concepts' captions never enter the bank.
        text_index: caption text -> its row in the cached text-vector matrix ``vectors``.
    """

    def __init__(
        self,
        captions: list[dict[str, str | None]],
        allowed: set[int],
        text_index: dict[str, int],
        vectors: torch.Tensor,
    ) -> None:
        texts = sorted({t for r in allowed for t in captions[r].values() if t})
        self.ids = torch.tensor([text_index[t] for t in texts])  # (T,) rows of the matrix
        self.vectors = vectors[self.ids]  # (T, text_dim): gathered once, not every step
        self.position = {text_index[t]: i for i, t in enumerate(texts)}
        # a row's own captions (skin-tone variants share their base's names: one entry)
        self.own = {
            r: sorted({self.position[text_index[t]] for t in captions[r].values() if t})
            for r in allowed
        }

    def targets(
        self, rows: torch.Tensor, text_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) bank positions of a batch's sampled captions, and the (B, T) mask of each
        image's other captions of its own emoji (right too, so not negatives)."""
        target = torch.tensor([self.position[t] for t in text_ids.tolist()])
        mask = torch.zeros(len(target), len(self.ids), dtype=torch.bool)
        for i, r in enumerate(rows.tolist()):
            mask[i, self.own[r]] = True
        mask[torch.arange(len(target)), target] = False
        return target, mask


class CLIPTask:
    """Symmetric InfoNCE over in-batch pairs; the text vectors are looked up, not computed.

    With two views (``pixel_values_2``: each emoji in a second training style) the loss is
    the mean of both drawings' image-text losses plus ``image_loss_weight`` times the
    symmetric InfoNCE between the two drawings (same temperature). With a ``bank``
    (:class:`CaptionBank`), each image -> text term is a cross-entropy over the whole bank
    instead of over the batch's captions.
    """

    def __init__(
        self,
        batches: ContrastiveBatches,
        vectors: torch.Tensor,
        evaluation: RetrievalEval,
        image_loss_weight: float = 1.0,
        bank: CaptionBank | None = None,
    ) -> None:
        self.batches, self.vectors, self.evaluation = batches, vectors, evaluation
        self.image_loss_weight, self.bank = image_loss_weight, bank

    def steps(self, info: Any, micro_batch: int) -> Iterator[list[dict[str, Any]]]:
        if info.world > 1 or micro_batch != self.batches.batch_size:
            raise ConfigError(
                "clip: the contrastive loss compares every pair of one batch, so it runs on "
                "one process without accumulation (leave train.micro_batch_size unset)"
            )
        for batch in self.batches:
            yield [batch]

    def counts(self, batch: dict[str, Any]) -> list[float]:
        return [float(len(batch["text_ids"]))]

    def loss(
        self, model: nn.Module, batch: dict[str, Any], totals: list[float]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        pixels = batch["pixel_values"]
        n = len(pixels)
        second = batch.get("pixel_values_2")
        if second is not None:
            pixels = torch.cat([pixels, second])  # one forward for both drawings
        text = self.vectors[batch["text_ids"].cpu()].to(pixels.device)
        out = model(pixels, text)
        logits = out.logits_per_image.float()  # (B or 2B, B)
        i2t, t2i = info_nce_sums(logits[:n])
        target = torch.arange(n, device=logits.device)
        hits = (logits[:n].argmax(1) == target).sum()
        logs = {"accuracy": float(hits), "logit_scale": float(out.scale.detach()) * n}
        if self.bank is not None:
            bank_i2t = self._bank_i2t(model, out.image_embeds.float(), out.scale.float(), batch)
            i2t = bank_i2t[0]
        total = i2t + t2i
        if second is not None:
            i2t_2, t2i_2 = info_nce_sums(logits[n:])
            if self.bank is not None:
                i2t_2 = bank_i2t[1]
            img = out.image_embeds.float()
            i2i, i2i_t = info_nce_sums(out.scale.float() * img[:n] @ img[n:].T)
            total = (total + i2t_2 + t2i_2) / 2
            logs["image_loss"] = float((i2i + i2i_t).detach()) / 2
            total = total + self.image_loss_weight * (i2i + i2i_t)
        logs["loss"] = float(total.detach()) / 2
        logs = {k: v / n for k, v in logs.items()}
        return total / (2 * totals[0]), logs

    def _bank_i2t(
        self, model: nn.Module, images: torch.Tensor, scale: torch.Tensor, batch: dict[str, Any]
    ) -> list[torch.Tensor]:
        """Each view's summed image -> text cross-entropy over the whole caption bank."""
        assert self.bank is not None
        device = images.device
        # moved to the device once and kept there (``to`` returns the tensor itself after)
        self.bank.vectors = self.bank.vectors.to(device)
        bank = model.embed_texts(self.bank.vectors).float()  # (T, D)
        target, mask = self.bank.targets(batch["rows"].cpu(), batch["text_ids"].cpu())
        target, mask = target.to(device), mask.to(device)
        n = len(target)
        sums = []
        for view in images.split(n):
            logits = (scale * view @ bank.T).masked_fill(mask, float("-inf"))  # (B, T)
            sums.append(F.cross_entropy(logits, target, reduction="sum"))
        return sums

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return self.evaluation.metrics(model)  # type: ignore[arg-type]

    def state(self) -> dict[str, Any]:
        return {"batch": self.batches.position}

    def load_state(self, state: dict[str, Any]) -> None:
        self.batches.position = int(state["batch"])


def split_rows(rows: list[dict[str, Any]], data: EmojiDataConfig) -> set[int]:
    """Row indices of the held-out concepts (every skin tone of each held-out base)."""
    held = holdout_bases(rows, data.holdout, data.holdout_seed)
    return {i for i, r in enumerate(rows) if r["base"] in held}


def setup_clip_pretraining(cfg: PretrainConfig) -> PretrainSetup:
    """The emoji pairs (training styles, minus held-out concepts), the cached caption
    vectors of the frozen text tower, the task with its evaluation, and a :class:`CLIPModel`
    builder whose ``text_dim`` is the text tower's."""
    assert isinstance(cfg.model, CLIPConfig)
    data, size = cfg.emoji, cfg.model.vision.image_size
    if cfg.model.vision.num_channels != 3:
        raise ConfigError("model.vision.num_channels must be 3: emoji are composited on white")
    home = Path(data.home).expanduser() if data.home else None
    rows = load_rows(home)
    held_out = split_rows(rows, data)
    matrix, text_index, text_s = caption_matrix(cfg.model.text_encoder, cfg.model.text_kind, rows)
    texts = list(text_index)
    cfg = replace(cfg, model=replace(cfg.model, text_dim=matrix.shape[1]))
    styles = [style_images(rows, s, size, home) for s in data.train_styles]
    train_ok = set(range(len(rows))) - held_out
    captions = [caption_options(r) for r in rows]
    batches = ContrastiveBatches(
        styles,
        train_ok,
        captions,
        text_index,
        cfg.train.batch_size,
        cfg.train.seed,
        data.zh_prob,
        data.keywords_prob,
        data.max_shift,
        data.max_zoom,
        data.views,
        data.max_rotation,
        data.max_blur,
    )
    evaluation = RetrievalEval(
        rows, style_images(rows, data.eval_style, size, home), held_out, matrix, text_index
    )
    model_cfg = cfg.model
    meta = {
        "task": "clip",
        "text_encoder": model_cfg.text_encoder,
        "text_kind": model_cfg.text_kind,
        # What the projection is trained on: llmos.load refuses a text tower with other weights.
        "text_encoder_digest": weights_digest(model_cfg.text_encoder),
        "train_styles": data.train_styles,
        "eval_style": data.eval_style,
        "holdout": data.holdout,
        "holdout_seed": data.holdout_seed,
        "held_out_emoji": len(held_out),
    }
    return PretrainSetup(
        cfg=cfg,
        tokenizer=None,
        task=CLIPTask(
            batches,
            matrix,
            evaluation,
            data.image_loss_weight,
            CaptionBank(captions, train_ok, text_index, matrix)
            if data.caption_negatives == "all"
            else None,
        ),
        build=lambda: CLIPModel(model_cfg),
        train=None,
        valid_targets=None,
        describe=(
            f"emoji: {len(batches.rows)} of {len(rows)} emoji trainable ({len(held_out)} "
            f"held out), styles {'+'.join(data.train_styles)}, {len(texts)} caption vectors "
            f"({text_s:.1f} s)"
        ),
        extra_report=lambda fitted: {"text_vectors": len(texts), "text_vectors_s": text_s},
        meta=meta,
    )


def load_clip(path: str | Path) -> CLIPModel:
    """A CLIP checkpoint written by ``llmos pretrain`` (``config.json`` + weights), in eval
    mode: the model alone (``llmos.load`` gives the pipeline with the text tower and image
    decoding, :mod:`llmos.inference.image`)."""
    path = Path(path)
    meta = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    meta.pop("llmos_version", None)
    cfg = from_dict(CLIPConfig, meta, source=str(path / CONFIG_FILE))
    model = CLIPModel(cfg)
    load_state_dict_strict(model, read_weights(path))
    return model.eval()
