"""CLIP on emoji (issue 22): the loss against a hand computation, the captions' language mix,
the held-out concepts never reaching training, the pixels, an end-to-end run through
``llmos pretrain`` (report, checkpoint, exact resume) and retrieval above chance.

The data is a fake emoji directory in the layout ``prepare_emoji`` writes (``emoji.jsonl`` and
``images/<style>.npz``): 24 base emoji, 4 of them with two skin-tone variants, each drawn as a
random 4 x 4 grid of colours, nudged per style. The text tower is a random 1-layer encoder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import EMOJI_EN, EMOJI_ZH, save_tiny_text_tower

from llmos.checkpoint.io import read_weights
from llmos.config import PretrainConfig, load_config
from llmos.data.emoji_pairs import (
    ContrastiveBatches,
    blur,
    caption_options,
    caption_texts,
    holdout_bases,
    load_rows,
    sample_caption,
    shift,
    style_images,
    to_pixels,
    zoom,
)
from llmos.errors import ConfigError
from llmos.models.clip import CLIPModel
from llmos.recipes.pretrain import pretrain
from llmos.train.tasks.clip import (
    CaptionBank,
    CLIPTask,
    RetrievalEval,
    info_nce_sums,
    load_clip,
    split_rows,
)

STYLES = ("apple", "google", "twitter", "facebook")
CATEGORIES = ("Smileys & Emotion", "Animals & Nature", "Food & Drink")
SUBCATEGORIES = (
    ("face-smiling", "cat-face"),
    ("animal-mammal", "plant-flower"),
    ("drink", "food-fruit"),
)


# Names from the tiny tokenizer's vocabulary (anything else reads as [UNK] to it).
EN, ZH = EMOJI_EN, EMOJI_ZH
TONES = {"1F3FB": ("the", "一"), "1F3FF": ("is", "天")}


def fake_emoji(home: Path, bases: int = 24) -> Path:
    """``home/emoji/``: rows with zh/en names and keywords, and one npz per style."""
    rng = np.random.default_rng(0)
    rows = []
    for b in range(bases):
        code = f"1F{b:03X}"
        en = f"{EN[b % 10]} {EN[(b // 10 + b) % 10]} {EN[b // 10]}"
        zh = ZH[b % 20] + ZH[(b * 7 + 3) % 20] + ZH[b // 20]
        for tones in ([], ["1F3FB"], ["1F3FF"]) if b % 6 == 0 else ([],):
            unified = "-".join([code, *tones])
            en_t, zh_t = (f": {TONES[tones[0]][0]}", TONES[tones[0]][1]) if tones else ("", "")
            has_cldr = b % 5 != 4  # some rows lack CLDR (no zh name), like flags
            rows.append(
                {
                    "unified": unified,
                    "base": code,
                    "skin_tones": tones,
                    "category": CATEGORIES[b % 3],
                    "name": f"{en} market{en_t}",
                    "en_name": en + en_t if has_cldr else None,
                    "en_keywords": [EN[b % 10], "city"] if has_cldr else [],
                    "zh_name": zh + zh_t if has_cldr else None,
                    "zh_keywords": [ZH[b % 20], "公"] if has_cldr else [],
                    "images": list(STYLES),
                }
            )
    out = home / "emoji"
    (out / "images").mkdir(parents=True)
    (out / "emoji.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    grids = rng.integers(0, 256, size=(len(rows), 4, 4, 3))
    for s, style in enumerate(STYLES):
        rgb = np.clip(grids + 12 * s, 0, 255).repeat(16, 1).repeat(16, 2)  # (N, 64, 64, 3)
        alpha = np.full((*rgb.shape[:3], 1), 255)
        pixels = np.concatenate([rgb, alpha], -1).astype(np.uint8)
        codes = np.array([r["unified"] for r in rows])
        np.savez_compressed(out / "images" / f"{style}.npz", unified=codes, pixels=pixels)
    return home


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_emoji(tmp_path_factory.mktemp("emoji-home"))


@pytest.fixture(scope="module")
def text_tower(tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_text_tower(tiny_tokenizer, tmp_path_factory.mktemp("e5") / "e5")


def overrides(home: Path, text_tower: Path, out: Path, steps: int) -> list[str]:
    return [
        "name=clip",
        f"out_dir={out}",
        "model.model_type=clip",
        f"model.text_encoder={text_tower}",
        "model.projection_dim=16",
        "model.vision.image_size=16",
        "model.vision.patch_size=4",
        "model.vision.hidden_size=32",
        "model.vision.num_layers=2",
        "model.vision.num_heads=2",
        "model.vision.intermediate_size=64",
        "model.vision.pooler=false",
        f"emoji.home={home.parent if home.name == 'emoji' else home}",
        "emoji.holdout=0.2",
        "emoji.max_shift=1",
        "emoji.keywords_prob=0.0",  # names only: the tiny tower barely tells keywords apart
        f"train.max_steps={steps}",
        "train.batch_size=8",
        f"train.eval_every={steps}",
        f"train.save_every={steps // 2}",
        "train.keep_last=3",
        "train.log_every=2",
        "train.progress=false",
        "train.precision=fp32",
        "train.num_threads=1",
        "optim.lr=0.003",
        "optim.warmup_steps=2",
    ]


def test_info_nce_is_the_mean_of_both_cross_entropies_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 1.5, 0.3], [-0.2, 0.4, 0.9]])
    i2t, t2i = info_nce_sums(logits)
    x = logits.numpy().astype(np.float64)
    rows = sum(np.log(np.exp(x[i]).sum()) - x[i, i] for i in range(3))
    cols = sum(np.log(np.exp(x[:, j]).sum()) - x[j, j] for j in range(3))
    assert float(i2t) == pytest.approx(rows, rel=1e-6)
    assert float(t2i) == pytest.approx(cols, rel=1e-6)
    assert rows != pytest.approx(cols)  # the matrix is not symmetric: both directions count


def test_captions_mix_languages_and_kinds_as_configured() -> None:
    row = {
        "name": "x",
        "zh_name": "笑脸",
        "en_name": "smiling face",
        "zh_keywords": ["笑", "脸"],
        "en_keywords": ["smile", "face"],
    }
    opts = caption_options(row)
    assert opts == {
        "zh_name": "笑脸",
        "en_name": "smiling face",
        "zh_keywords": "笑、脸",
        "en_keywords": "smile, face",
    }
    rng = np.random.default_rng(0)
    drawn = [sample_caption(opts, rng, 0.5, 0.3) for _ in range(4000)]
    zh = np.mean([t in ("笑脸", "笑、脸") for t in drawn])
    kw = np.mean([t in ("笑、脸", "smile, face") for t in drawn])
    assert zh == pytest.approx(0.5, abs=0.03) and kw == pytest.approx(0.3, abs=0.03)
    # Without CLDR: the datasource's English name, always.
    bare = caption_options({"name": "flag: x", "zh_name": None, "en_name": None})
    assert {sample_caption(bare, rng, 0.9, 0.9) for _ in range(50)} == {"flag: x"}


def test_held_out_concepts_never_reach_training(home: Path) -> None:
    rows = load_rows(home)
    held_bases = holdout_bases(rows, 0.25, seed=3)
    assert len(held_bases) == 6 and held_bases == holdout_bases(rows, 0.25, seed=3)
    held = {i for i, r in enumerate(rows) if r["base"] in held_bases}
    styles = [style_images(rows, s, 16, home) for s in ("apple", "google", "facebook")]
    texts = caption_texts(rows)
    index = {t: i for i, t in enumerate(texts)}
    opts = [caption_options(r) for r in rows]
    allowed = set(range(len(rows))) - held
    batches = ContrastiveBatches(styles, allowed, opts, index, 8, 0, 0.5, 0.3, 2)
    seen_rows, seen_texts = set(), set()
    for n in range(300):
        b = batches.batch(n)
        assert len(set(b["rows"].tolist())) == 8  # distinct emoji: no false negatives
        seen_rows |= set(b["rows"].tolist())
        seen_texts |= {texts[i] for i in b["text_ids"].tolist()}
    assert seen_rows == allowed
    held_names = {opts[i][k] for i in held for k in ("zh_name", "en_name")} - {None}
    assert held_names and not seen_texts & held_names  # (keywords like "city" are shared)
    # split_rows takes every skin tone of a held-out base with it
    cfg = load_config(PretrainConfig, None, ["model.model_type=clip", "emoji.holdout=0.5"])
    picked = split_rows(rows, cfg.emoji)
    assert {rows[i]["base"] for i in picked} == holdout_bases(rows, 0.5, 0)
    picked_bases = {rows[j]["base"] for j in picked}
    assert picked == {i for i, r in enumerate(rows) if r["base"] in picked_bases}
    # batch n is a function of (seed, n)
    again = ContrastiveBatches(styles, allowed, opts, index, 8, 0, 0.5, 0.3, 2)
    assert torch.equal(again.batch(17)["pixel_values"], batches.batch(17)["pixel_values"])


def test_pixels_are_composited_on_white_and_shifted_with_white_fill() -> None:
    rgba = np.zeros((1, 4, 4, 4), dtype=np.uint8)
    rgba[0, 0, 0] = (255, 0, 0, 255)  # opaque red; the rest transparent black
    rgba[0, 0, 1] = (0, 0, 0, 128)  # half-transparent black
    px = to_pixels(rgba, 4)
    assert px[0, :, 0, 0].tolist() == [255, 0, 0]
    assert px[0, :, 0, 1].tolist() == [127, 127, 127]
    assert px[0, :, 3, 3].tolist() == [255, 255, 255]
    moved = shift(px, np.array([1]), np.array([2]))  # right 1, down 2
    assert moved[0, :, 2, 1].tolist() == [255, 0, 0]
    assert (moved[0, :, :2] == 255).all() and (moved[0, :, :, 0] == 255).all()
    assert to_pixels(np.zeros((2, 64, 64, 4), dtype=np.uint8), 16).shape == (2, 3, 16, 16)


def test_zoom_scales_about_the_centre_with_white_fill() -> None:
    px = torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)
    px[:, :, 2:6, 2:6] = 0  # a black 4 x 4 square in the middle
    same, small, big = zoom(px[:1], np.array([1.0])), *zoom(px, np.array([0.5, 2.0]))
    assert torch.equal(same, px[:1])
    assert (small[:, 3:5, 3:5] == 0).all() and (small[:, :, :3] == 255).all()  # 2 x 2 left
    assert (small[:, :, 5:] == 255).all() and (small[:, :2] == 255).all()
    assert (big[:, 1:7, 1:7] == 0).all() and (big < 255).all()  # 8 x 8: no white left


def test_rotation_turns_about_the_centre_and_blur_spreads_ink_keeping_white() -> None:
    px = torch.randint(
        0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    turned = zoom(px, np.ones(2), np.array([90.0, 0.0]))
    assert torch.equal(turned[0], torch.rot90(px[0], 1, (1, 2)))  # a quarter turn
    assert torch.equal(turned[1], px[1])
    dot = torch.full((2, 3, 9, 9), 255, dtype=torch.uint8)
    dot[:, :, 4, 4] = 0  # one black pixel on white
    out = blur(dot, np.array([0.0, 1.0]))
    assert torch.equal(out[0], dot[0])  # sigma 0: untouched
    ink = 255 - out[1].int()
    assert abs(int(ink.sum()) - 3 * 255) <= 3 * 25  # the ink spread, not lost (rounding)
    assert 0 < int(ink[0, 4, 4]) < 255 and int(ink[0, 4, 5]) > 0 and int(ink[0, 0, 0]) == 0
    assert ink[:, 4, 5].tolist() == ink[:, 5, 4].tolist() == ink[:, 4, 3].tolist()
    white = torch.full((1, 3, 6, 6), 255, dtype=torch.uint8)
    assert torch.equal(blur(white, np.array([2.0])), white)  # white beyond the edges


def test_two_views_draw_each_emoji_in_two_styles(home: Path) -> None:
    rows = load_rows(home)
    styles = [style_images(rows, s, 16, home) for s in ("apple", "google", "facebook")]
    texts = caption_texts(rows)
    index = {t: i for i, t in enumerate(texts)}
    opts = [caption_options(r) for r in rows]
    allowed = set(range(len(rows)))
    args = (styles, allowed, opts, index, 8, 0, 0.5, 0.3, 0)
    one, two = ContrastiveBatches(*args).batch(5), ContrastiveBatches(*args, views=2).batch(5)
    assert "pixel_values_2" not in one and two["num_tokens"] == 16
    a, b = two["pixel_values"], two["pixel_values_2"]
    for i, r in enumerate(two["rows"].tolist()):  # unshifted: each is one style's drawing
        drawn = [
            next(k for k, st in enumerate(styles) if torch.equal(normalise_px(st, r), x[i]))
            for x in (a, b)
        ]
        assert drawn[0] != drawn[1], (r, drawn)
    # zoom draws its own factors; one view and no zoom keep the batches they always had
    zoomed = ContrastiveBatches(*args[:-1], 2, max_zoom=0.2).batch(5)
    assert zoomed["text_ids"].tolist() == one["text_ids"].tolist()
    assert not torch.equal(zoomed["pixel_values"], one["pixel_values"])
    turned = ContrastiveBatches(*args, max_rotation=10.0, max_blur=1.0).batch(5)
    assert turned["text_ids"].tolist() == one["text_ids"].tolist()
    assert not torch.equal(turned["pixel_values"], one["pixel_values"])


def normalise_px(st, row: int) -> torch.Tensor:
    from llmos.data.emoji_pairs import normalise

    return normalise(st.pixels[st.rows.tolist().index(row)][None])[0]


def tiny_clip_model() -> CLIPModel:
    """A seeded CLIP of one 16-wide layer over 8 px images and 6-dim text vectors."""
    from llmos.config.model import CLIPConfig, ViTConfig

    torch.manual_seed(0)
    vision = ViTConfig(
        image_size=8,
        patch_size=4,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        pooler=False,
    )
    return CLIPModel(CLIPConfig(vision=vision, text_dim=6, projection_dim=5))


def test_the_two_view_loss_is_both_clip_losses_plus_the_weighted_image_loss() -> None:
    model = tiny_clip_model()
    vectors = torch.randn(10, 6)
    a, b = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    batch = {"pixel_values": a, "pixel_values_2": b, "text_ids": torch.tensor([3, 1, 7, 0])}
    task = CLIPTask(None, vectors, None, image_loss_weight=0.5)  # type: ignore[arg-type]
    loss, logs = task.loss(model, batch, [4.0])
    text = vectors[batch["text_ids"]]
    ce = torch.nn.functional.cross_entropy
    t = torch.arange(4)

    def clip(logits: torch.Tensor) -> torch.Tensor:
        return (ce(logits, t) + ce(logits.T, t)) / 2

    ia, ib = model.embed_images(a), model.embed_images(b)
    tx, s = model.embed_texts(text), model.scale()
    want = (clip(s * ia @ tx.T) + clip(s * ib @ tx.T)) / 2 + 0.5 * clip(s * ia @ ib.T)
    assert torch.allclose(loss, want, atol=1e-5), (loss, want)
    assert logs["image_loss"] == pytest.approx(float(clip(s * ia @ ib.T)), abs=1e-5)


def test_the_caption_bank_scores_each_image_against_every_trainable_caption() -> None:
    """``caption_negatives: all``: image -> text is a cross-entropy over every caption of the
    trainable rows (not the held-out row's), the image's other captions masked; text -> image
    and the image loss stay in-batch."""
    model = tiny_clip_model()
    texts = ["a", "b", "c", "d", "e", "f", "g"]
    index = {t: i for i, t in enumerate(texts)}
    vectors = torch.randn(len(texts), 6)

    def opts(zh: str | None, en: str, kw: str | None = None) -> dict[str, str | None]:
        return {"zh_name": zh, "en_name": en, "zh_keywords": None, "en_keywords": kw}

    # row 1 is row 0's skin-tone variant (same names); row 3 is held out
    captions = [
        opts("a", "b"),
        opts("a", "b"),
        opts(None, "c", "d"),
        opts("e", "f"),
        opts("g", "c"),
    ]
    bank = CaptionBank(captions, {0, 1, 2, 4}, index, vectors)
    assert bank.ids.tolist() == [0, 1, 2, 3, 6]  # e and f belong to the held-out row only
    assert torch.equal(bank.vectors, vectors[[0, 1, 2, 3, 6]])
    rows, text_ids = torch.tensor([0, 2, 4]), torch.tensor([1, 3, 6])  # b, d, g
    target, mask = bank.targets(rows, text_ids)
    assert target.tolist() == [1, 3, 4]
    # each image's other own captions: a for row 0; c for rows 2 and 4
    assert mask.tolist() == [
        [True, False, False, False, False],
        [False, False, True, False, False],
        [False, False, True, False, False],
    ]
    a, b = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    batch = {"pixel_values": a, "pixel_values_2": b, "text_ids": text_ids, "rows": rows}
    task = CLIPTask(None, vectors, None, image_loss_weight=0.5, bank=bank)  # type: ignore[arg-type]
    loss, _ = task.loss(model, batch, [3.0])
    ce = torch.nn.functional.cross_entropy
    t = torch.arange(3)
    ia, ib = model.embed_images(a), model.embed_images(b)
    s = model.scale()
    tx = model.embed_texts(vectors[text_ids])
    every = model.embed_texts(vectors[[0, 1, 2, 3, 6]])

    def i2t(img: torch.Tensor) -> torch.Tensor:
        logits = (s * img @ every.T).masked_fill(mask, float("-inf"))
        return ce(logits, target)

    def pair(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (ce(s * x @ y.T, t) + ce(s * y @ x.T, t)) / 2

    want = (
        (i2t(ia) + ce(s * tx @ ia.T, t)) / 2 + (i2t(ib) + ce(s * tx @ ib.T, t)) / 2
    ) / 2 + 0.5 * pair(ia, ib)
    assert torch.allclose(loss, want, atol=1e-5), (loss, want)


def test_caption_negatives_must_be_batch_or_all() -> None:
    with pytest.raises(ConfigError, match=r"emoji.caption_negatives must be one of"):
        load_config(PretrainConfig, None, ["model.model_type=clip", "emoji.caption_negatives=some"])


@pytest.fixture(scope="module")
def run(home: Path, text_tower: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("clip-run")
    cfg = load_config(PretrainConfig, None, overrides(home, text_tower, out, 240))
    return pretrain(cfg)


def test_pretrain_writes_the_checkpoint_metrics_and_report(run) -> None:
    ckpt = run.checkpoint
    assert {p.name for p in ckpt.iterdir()} == {"config.json", "model.safetensors", "task.json"}
    task = json.loads((ckpt / "task.json").read_text())
    assert task["task"] == "clip" and task["eval_style"] == "twitter"
    rows = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"]
    assert {"i2t_r5_zh", "t2i_r10_en", "zeroshot_category_acc"} <= set(run.last_valid)
    assert 0 <= run.last_valid["zeroshot_category_acc_zh_en"] <= 1
    assert (run.run_dir / "loss.png").is_file()
    report = json.loads((run.run_dir / "report.json").read_text())
    assert report["steps"] == 240 and "unigram_perplexity" not in report
    model = load_clip(ckpt)
    assert model.cfg.vision.hidden_size == 32 and model.cfg.text_dim == 32


def test_a_killed_run_resumes_bit_identically(run, tmp_path: Path) -> None:
    killed = tmp_path / "clip"
    shutil.copytree(run.run_dir, killed)  # as if killed right after the step-120 checkpoint
    shutil.rmtree(killed / "checkpoints" / "step-0000240")
    shutil.rmtree(killed / "checkpoint")
    cfg = load_config(PretrainConfig, run.run_dir / "config.yaml", [f"out_dir={tmp_path}"])
    resumed = pretrain(cfg, resume=True)
    a, b = read_weights(run.checkpoint), read_weights(resumed.checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_tiny_run_retrieves_its_own_training_images_above_chance(run, home: Path) -> None:
    from llmos.train.tasks.clip import caption_matrix

    model = load_clip(run.checkpoint)
    cfg = load_config(PretrainConfig, run.run_dir / "config.yaml", [])
    # subcategories given here, not in the fake data the run trained on
    rows = [dict(r, subcategory=SUBCATEGORIES[i % 3][i % 2]) for i, r in enumerate(load_rows(home))]
    held = split_rows(rows, cfg.emoji)
    matrix, index, _ = caption_matrix(cfg.model.text_encoder, "query", rows)
    assert {"Food & Drink", "食物和饮料"} <= set(index) and len(matrix) == len(index)
    own = RetrievalEval(rows, style_images(rows, "apple", 16, home), held, matrix, index)
    with torch.no_grad():
        m = own.metrics(model)
    n_en = len(own.candidates["en"])
    assert m["i2t_r5_en"] > 2 * 5 / n_en, m  # chance: 5 of the names
    assert m["i2t_r1_en"] > 2 / n_en, m
    # the prompt ensembles, by hand: each category the normalised mean of its names (and of
    # its subcategories' names), over the held-out and over the trained concepts
    from llmos.data.emoji_pairs import category_descriptions, category_subcategories

    subs = category_subcategories(rows)
    assert "face smiling" in category_descriptions("Smileys & Emotion", subs["Smileys & Emotion"])
    for suffix, sub in (("_zh_en", False), ("_subcategories", True)):
        with torch.no_grad():
            means = torch.stack(
                [
                    torch.nn.functional.normalize(
                        model.embed_texts(
                            matrix[
                                [index[d] for d in category_descriptions(c, subs[c] if sub else ())]
                            ]
                        ).sum(0),
                        dim=0,
                    )
                    for c in own.category_names
                ]
            )
            img = own.image_embeds(model)
        for prefix, concepts in (("zeroshot", own.held_bases), ("seen", own.seen_bases)):
            guess = (img[concepts] @ means.T).argmax(1)
            want = (guess == own.category[concepts]).float().mean()
            assert m[f"{prefix}_category_acc{suffix}"] == pytest.approx(float(want))
    assert own.seen_bases.any() and not (own.seen_bases & own.held_out).any()


def test_clip_configs_are_checked() -> None:
    cfg = load_config(PretrainConfig, Path("configs/pretrain/clip-emoji.yaml"), [])
    assert cfg.model.model_type == "clip" and cfg.data.objective == "contrastive"
    with pytest.raises(ConfigError, match="eval_style"):
        load_config(PretrainConfig, None, ["model.model_type=clip", "emoji.train_styles=[twitter]"])
    with pytest.raises(ConfigError, match="does not fit"):
        load_config(PretrainConfig, None, ["model.model_type=clip", "data.objective=mlm"])
    with pytest.raises(ConfigError, match=r"emoji.max_rotation must be in \[0, 45\)"):
        load_config(PretrainConfig, None, ["model.model_type=clip", "emoji.max_rotation=90"])
    with pytest.raises(ConfigError, match=r"emoji.max_blur must be in \[0, 2\]"):
        load_config(PretrainConfig, None, ["model.model_type=clip", "emoji.max_blur=3"])
