"""CLIP on emoji (issue 22): held-out evaluation of a ``llmos pretrain`` CLIP checkpoint
against a raw-pixel nearest-neighbour baseline, chance and the majority class, on a style the
model never trained on.

    python bench/clip_emoji.py [--run runs/clip-emoji] [--checkpoint DIR] [--threads 2]

Reads the run's ``config.yaml`` (styles, held-out concepts, image size) and its final
``checkpoint/``. Metrics (``llmos.train.tasks.clip.RetrievalEval``):

- image -> text R@1 / R@5: each image of the unseen style (twitter) against every distinct
  emoji name, Chinese and English separately (a hit: the image's own name ranks in the top k);
  also restricted to the held-out concepts (never trained on in any style).
- text -> image R@10: each emoji's Chinese name, then its English name, as a query against all
  the unseen style's images (over the emoji having both names, so the two compare).
- zero-shot category: held-out concepts' images (one per concept, the base emoji: skin-tone
  variations would make People & Body 60 % of them) against the category names (English, as
  emoji-datasource spells them; ``_zh_en``: each category the normalised mean of its
  English and Chinese names, CLIP's prompt ensembling; ``_subcategories``: the mean of those
  and its subcategories' names, e.g. "animal mammal", "plant flower"), vs the majority class.
  ``seen_category_*``: the same over the concepts trained on (their unseen-style drawing),
  where a choice among the three can be made without the held-out concepts.

Baseline: raw pixels. Each unseen-style image's nearest row by L2 over the model's input
pixels, a row's distance being its nearest drawing in the training styles (every concept's,
held-out ones included, so the baseline sees drawings the model never did); the ranked rows'
names give the captions. For categories, the nearest *training* concept's category.

Two more columns use the same drawings with the model's image vectors instead of pixels:
"nearest drawing" ranks the names as the baseline does, by cosine; "+ nearest drawing" adds
that cosine to each name's caption cosine (weight 1, chosen before any run: both are cosines
in the one projected space). A name none of the training styles draws gets the lowest drawing
score seen. These describe an image by its look-alikes among labelled drawings, as the
baseline does, so they compare with it; the CLIP column alone reads only the captions.

``--zooms 0.9,1,1.1`` adds a second table: the image -> text rows again with each unseen-style
image embedded as the mean of its scaled views (:mod:`llmos.inference.image_views`, what
``describe_images(zooms=...)`` does; the training drawings stay one view each), beside the
same rows from one view.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine

from llmos.config import PretrainConfig, load_config
from llmos.data.emoji_pairs import caption_options, load_rows, normalise, style_images
from llmos.inference.image_views import embed_views
from llmos.train.tasks.clip import (
    RetrievalEval,
    caption_matrix,
    load_clip,
    recall_at,
    split_rows,
)


def pixel_distances(query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """(Q, K) squared L2 distances between flattened uint8 images."""
    q, k = query.flatten(1).float() / 255, keys.flatten(1).float() / 255
    return (q * q).sum(1)[:, None] - 2 * q @ k.T + (k * k).sum(1)[None]


def row_scores(pairwise, queries: int, n_rows: int, train: list) -> torch.Tensor:
    """(Q, R): each query's best score over each row's drawings in the training styles
    (``pairwise(style)`` gives the (Q, M) scores against one style's drawings, higher
    nearer); -inf for a row drawn in none of them."""
    best = torch.full((queries, n_rows), float("-inf"))
    for st in train:
        s = pairwise(st)
        best.scatter_reduce_(1, torch.from_numpy(st.rows)[None].expand_as(s), s, reduce="amax")
    return best


def nearest_drawing_metrics(
    rows: list[dict],
    ev: RetrievalEval,
    best: torch.Tensor,
    held_out: set[int],
    text: dict[str, torch.Tensor] | None = None,
    weight: float = 1.0,
) -> dict[str, float]:
    """Image -> text by the nearest drawings (see the module docstring): a name's score is
    its best row's in ``best``; with ``text`` ({lang: (N, names) cosines, names in
    ``ev.candidates`` order}) ``text + weight * drawing``, a name with no drawing at the
    drawing floor (the lowest score seen)."""
    n_rows = len(rows)
    opts = [caption_options(r) for r in rows]
    out: dict[str, float] = {}
    floor = best[best > float("-inf")].min()
    for lang in ("zh", "en"):
        cands = ev.candidates[lang]
        pos = {t: i for i, t in enumerate(cands)}
        names = [o[f"{lang}_name"] for o in opts]
        cols = [r for r in range(n_rows) if names[r] in pos]
        score = torch.full((best.size(0), len(cands)), float("-inf"))
        col_name = torch.tensor([pos[names[r]] for r in cols])[None].expand(best.size(0), -1)
        score.scatter_reduce_(1, col_name, best[:, cols], reduce="amax")
        if text is not None:
            score = text[lang] + weight * score.clamp(min=floor)
        truth = torch.zeros(best.size(0), len(cands), dtype=torch.bool)
        for i, t in enumerate(ev.names[lang]):
            if t is not None:
                truth[i, pos[t]] = True
        named = torch.tensor([t is not None for t in ev.names[lang]])
        for k in (1, 5):
            hit = recall_at(score, truth, k)
            out[f"i2t_r{k}_{lang}"] = float(hit[named].float().mean())
            out[f"i2t_r{k}_{lang}_heldout"] = float(hit[named & ev.held_out].float().mean())
    if text is None:
        trained = [r for r in range(n_rows) if r not in held_out]
        nearest = best[ev.held_bases][:, trained].argmax(1)
        cat = [ev.category_names.index(rows[trained[i]]["category"] or "") for i in nearest]
        out["zeroshot_category_acc"] = float(
            (torch.tensor(cat) == ev.category[ev.held_bases]).float().mean()
        )
    return out


@torch.no_grad()
def embedded(model, pixels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N, D) unit vectors of uint8 images."""
    return torch.cat(
        [
            model.embed_images(normalise(pixels[i : i + batch_size])).float()
            for i in range(0, len(pixels), batch_size)
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="runs/clip-emoji")
    ap.add_argument("--checkpoint", help="a checkpoint of the run (default: RUN/checkpoint)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--zooms",
        type=lambda v: [float(z) for z in v.split(",")],
        help="also describe each unseen-style image by the mean of these scaled views "
        "(e.g. 0.9,1,1.1)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    cfg = load_config(PretrainConfig, run / "config.yaml", [])
    data = cfg.emoji
    home = Path(data.home).expanduser() if data.home else None
    model = load_clip(args.checkpoint or run / "checkpoint")
    rows = load_rows(home)
    held = split_rows(rows, data)
    matrix, index, _ = caption_matrix(cfg.model.text_encoder, cfg.model.text_kind, rows)
    size = cfg.model.vision.image_size
    ev = RetrievalEval(rows, style_images(rows, data.eval_style, size, home), held, matrix, index)
    t0 = time.perf_counter()
    with torch.no_grad():
        clip = ev.metrics(model)
    clip_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    train = [style_images(rows, s, size, home) for s in data.train_styles]
    n_img, n_rows = len(ev.images.rows), len(rows)
    pixels = row_scores(
        lambda st: -pixel_distances(ev.images.pixels, st.pixels), n_img, n_rows, train
    )
    pix = nearest_drawing_metrics(rows, ev, pixels, held)
    pix_s = time.perf_counter() - t0
    # The same nearest drawings by the model's image vectors, alone and added to its captions'
    # cosines (weight 1, fixed before any run).
    img = embedded(model, ev.images.pixels)
    drawn = row_scores(lambda st: img @ embedded(model, st.pixels).T, n_img, n_rows, train)
    with torch.no_grad():
        text = {lang: img @ ev.text_embeds(model, ev.ids[lang]).T for lang in ("zh", "en")}
    near = nearest_drawing_metrics(rows, ev, drawn, held)
    fused = nearest_drawing_metrics(rows, ev, drawn, held, text, weight=1.0)
    chance = {
        f"i2t_r{k}_{lang}": k / len(ev.candidates[lang]) for k in (1, 5) for lang in ("zh", "en")
    }
    chance |= {f"{m}_heldout": v for m, v in chance.items()}
    chance |= {"t2i_r10_zh": 10 / n_img, "t2i_r10_en": 10 / n_img}
    targets = {"i2t_r5_zh": ">= 0.5", "i2t_r5_en": ">= 0.5"}
    described = ("", "_zh_en", "_subcategories")
    for prefix in ("zeroshot", "seen"):
        chance |= {
            f"{prefix}_category_acc{s}": clip[f"{prefix}_category_majority"] for s in described
        }
    twice = f">= {2 * clip['zeroshot_category_majority']:.3f} (2x)"
    targets |= {f"zeroshot_category_acc{s}": twice for s in described}
    print(f"CPU: {machine()}, {args.threads} threads; {args.checkpoint or run / 'checkpoint'}")
    print(
        f"unseen style {data.eval_style}: {n_img} images; held-out concepts: "
        f"{int(ev.held_out.sum())} images, {int(ev.held_bases.sum())} concepts; "
        f"names: {len(ev.candidates['zh'])} zh, "
        f"{len(ev.candidates['en'])} en; train styles {'+'.join(data.train_styles)}"
    )
    print(
        "| metric | CLIP | CLIP nearest drawing | CLIP + nearest drawing | raw-pixel NN "
        "| chance / majority | target |"
    )
    print("|---|---|---|---|---|---|---|")

    def cell(values: dict[str, float], key: str) -> str:
        return f"{values[key]:.3f}" if key in values else "-"

    for key in [k for k in clip if k in chance]:
        others = " | ".join(cell(v, key) for v in (near, fused, pix))
        print(
            f"| {key} | {clip[key]:.3f} | {others} | {chance[key]:.4f} | {targets.get(key, '')} |"
        )
    gap = abs(clip["t2i_r10_zh"] - clip["t2i_r10_en"]) * 100
    print(f"| t2i R@10 gap zh vs en (points) | {gap:.1f} | - | - | <= 10 |")
    scale = clip["logit_scale"]
    print(f"logit scale {scale:.1f}; CLIP eval {clip_s:.1f} s, pixel NN {pix_s:.1f} s")
    if args.zooms:
        t0 = time.perf_counter()
        views = torch.from_numpy(
            embed_views(lambda px: embedded(model, px).numpy(), ev.images.pixels, args.zooms)
        )
        zoom_s = time.perf_counter() - t0
        table = {}
        drawings = {id(st): embedded(model, st.pixels) for st in train}

        def scores_of(vectors: torch.Tensor) -> torch.Tensor:
            return row_scores(lambda st: vectors @ drawings[id(st)].T, n_img, n_rows, train)

        for name, vectors in (("one view", img), (f"zooms {args.zooms}", views)):
            best = scores_of(vectors)
            with torch.no_grad():
                cos = {
                    lang: vectors @ ev.text_embeds(model, ev.ids[lang]).T for lang in ("zh", "en")
                }
            table[name] = {
                "captions": nearest_drawing_metrics(rows, ev, best, held, cos, weight=0.0),
                "nearest drawing": nearest_drawing_metrics(rows, ev, best, held),
                "captions + nearest drawing": nearest_drawing_metrics(rows, ev, best, held, cos),
            }
        print(f"\nthe unseen style's images as one view and as zooms {args.zooms} ({zoom_s:.1f} s)")
        names = list(table)
        print("| image -> text | by | " + " | ".join(names) + " |")
        print("|---|---|" + "---|" * len(names))
        keys = [
            f"i2t_r{k}_{lang}{h}" for h in ("", "_heldout") for k in (1, 5) for lang in ("zh", "en")
        ]
        for key in keys:
            for by in table[names[0]]:
                cells = " | ".join(f"{table[n][by][key]:.3f}" for n in names)
                print(f"| {key} | {by} | {cells} |")


if __name__ == "__main__":
    main()
