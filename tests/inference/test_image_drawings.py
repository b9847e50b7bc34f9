"""Image -> text by look-alike drawings (``describe_images(by=...)``): an image that is a
training-style drawing names its emoji first with a drawing cosine of 1; every drawing score
equals a recomputation by hand (the best cosine over the emoji's drawings of the model's own
vectors, as ``bench/clip_emoji.py`` scores them); ``both`` is the caption cosine plus that,
a name no training style draws counting the image's lowest row score; clear errors.

A tiny random CLIP (16 px images) over a tiny random text tower, and a fake emoji home
(:mod:`tiny_models`): 12 emoji drawn in apple and twitter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from inference.test_image import png
from tiny_models import fake_emoji_home, save_tiny_clip, save_tiny_text_tower

from llmos.data.emoji import load_images
from llmos.data.emoji_pairs import caption_options, load_rows, style_images
from llmos.errors import LlmosError
from llmos.inference import image_drawings
from llmos.inference.image import ImagePipeline, load_image_pipeline
from llmos.inference.image_drawings import train_styles


@pytest.fixture(scope="module")
def tower(tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_text_tower(tiny_tokenizer, tmp_path_factory.mktemp("tower") / "e5")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_emoji_home(tmp_path_factory.mktemp("emoji-home"))


@pytest.fixture(scope="module")
def ckpts(tower: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny CLIP trained (by its task.json) on apple, and the same on apple + twitter."""
    root = tmp_path_factory.mktemp("clip")
    apple = save_tiny_clip(root / "apple", tower)
    meta = {
        "task": "clip",
        "text_kind": "query",
        "train_styles": ["apple", "twitter"],
        "eval_style": "google",
    }
    return {"apple": apple, "two": save_tiny_clip(root / "two", tower, meta=meta)}


@pytest.fixture()
def llmos_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "llmos-home"))  # the text-vector cache
    return tmp_path / "llmos-home"


def by_hand(pipe: ImagePipeline, home: Path, styles: list[str], images: list[bytes]) -> dict:
    """``{(lang, name): (N,) drawing scores}``: each name's best cosine over its emoji's
    drawings in ``styles``, from embed_pixels' vectors (NaN where none draws it)."""
    rows = load_rows(home)
    img = pipe.embed_images(images).astype(np.float64)  # (N, D)
    best = np.full((len(images), len(rows)), -np.inf)
    for style in styles:
        drawn = style_images(rows, style, pipe.image_size, home)
        cos = img @ pipe.embed_pixels(drawn.pixels).astype(np.float64).T  # (N, M)
        for j, r in enumerate(drawn.rows.tolist()):
            best[:, r] = np.maximum(best[:, r], cos[:, j])
    out: dict[tuple[str, str], np.ndarray] = {}
    for r, row in enumerate(rows):
        for lang in ("zh", "en"):
            name = caption_options(row)[f"{lang}_name"]
            if name:
                out[lang, name] = np.maximum(out.get((lang, name), -np.inf), best[:, r])
    return {key: np.where(np.isinf(v), np.nan, v) for key, v in out.items()}


def test_a_training_drawing_names_its_own_emoji_first(
    ckpts: dict[str, Path], home: Path, llmos_home: Path
) -> None:
    pipe = load_image_pipeline(ckpts["apple"], emoji_home=home)
    rows, apple = load_rows(home), load_images(home, "apple")[1]
    for r in (0, 4, 9):
        hits = pipe.describe_images([png(apple[r])], k=3, by="drawings", lang="en")[0]
        first = hits[0]
        assert (first["text"], first["emoji"], first["unified"]) == (
            rows[r]["en_name"],
            rows[r]["emoji"],
            rows[r]["unified"],
        )
        assert first["drawing_score"] == pytest.approx(1.0, abs=1e-5)
        assert first["score"] == first["drawing_score"] and "caption_score" not in first
        assert hits[1]["score"] < first["score"]
        # both languages: the emoji's two names share its drawing score, ahead of the rest
        both = pipe.describe_images([png(apple[r])], k=3, by="drawings")[0]
        assert {h["text"] for h in both[:2]} == {rows[r]["en_name"], rows[r]["zh_name"]}
    assert pipe.drawing_index() is pipe.drawing_index()  # embedded once
    assert pipe.drawing_index().styles == ("apple",) and len(pipe.drawing_index()) == len(rows)


def test_drawing_scores_equal_the_best_cosine_over_each_emojis_drawings(
    ckpts: dict[str, Path], home: Path, llmos_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = load_image_pipeline(ckpts["two"], emoji_home=home)
    apple, twitter = load_images(home, "apple")[1], load_images(home, "twitter")[1]
    noise = np.random.default_rng(1).integers(0, 256, size=(64, 64, 4), dtype=np.uint8)
    images = [png(twitter[2]), png(apple[5]), png(noise)]
    want = by_hand(pipe, home, ["apple", "twitter"], images)
    monkeypatch.setattr(image_drawings, "CHUNK", 2)  # images scored 2 at a time
    got = pipe.describe_images(images, k=50, by="drawings")
    for i, hits in enumerate(got):
        assert len(hits) == len(want)  # every name, both languages
        for h in hits:
            assert h["drawing_score"] == pytest.approx(want[h["lang"], h["text"]][i], abs=1e-6)
            assert h["score"] == h["drawing_score"]
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True)
    assert pipe.drawing_index().styles == ("apple", "twitter")


def test_both_adds_the_caption_and_drawing_cosines(
    ckpts: dict[str, Path], home: Path, llmos_home: Path
) -> None:
    pipe = load_image_pipeline(ckpts["two"], emoji_home=home)
    twitter = load_images(home, "twitter")[1]
    images = [png(twitter[3]), png(twitter[8])]
    captions = pipe.describe_images(images, k=50, lang="zh")
    drawings = pipe.describe_images(images, k=50, lang="zh", by="drawings")
    both = pipe.describe_images(images, k=50, lang="zh", by="both")
    for cap, draw, hits in zip(captions, drawings, both, strict=True):
        cap_of = {h["text"]: h["score"] for h in cap}
        draw_of = {h["text"]: h["drawing_score"] for h in draw}
        assert {h["text"] for h in hits} == set(cap_of) and {h["lang"] for h in hits} == {"zh"}
        for h in hits:
            assert h["caption_score"] == pytest.approx(cap_of[h["text"]], abs=1e-5)
            assert h["drawing_score"] == pytest.approx(draw_of[h["text"]], abs=1e-6)
            assert h["score"] == pytest.approx(h["caption_score"] + h["drawing_score"], abs=1e-6)
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_a_name_no_training_style_draws(
    ckpts: dict[str, Path], home: Path, llmos_home: Path, tmp_path: Path
) -> None:
    """Left out by drawings; by both, its drawing score is the image's lowest row score."""
    partial = tmp_path / "home"
    (partial / "emoji" / "images").mkdir(parents=True)
    (partial / "emoji" / "emoji.jsonl").write_bytes((home / "emoji" / "emoji.jsonl").read_bytes())
    codes, pixels = load_images(home, "apple")
    keep = np.arange(len(codes)) != 3  # row 3 is not drawn
    np.savez(partial / "emoji" / "images" / "apple.npz", unified=codes[keep], pixels=pixels[keep])
    pipe = load_image_pipeline(ckpts["apple"], emoji_home=partial)
    rows = load_rows(partial)
    image = [png(load_images(home, "twitter")[1][3])]
    drawn = pipe.describe_images(image, k=50, by="drawings", lang="en")[0]
    assert rows[3]["en_name"] not in {h["text"] for h in drawn} and len(drawn) == len(rows) - 1
    floor = min(h["drawing_score"] for h in drawn)  # one name per row here
    both = pipe.describe_images(image, k=50, by="both", lang="en")[0]
    (lost,) = [h for h in both if h["text"] == rows[3]["en_name"]]
    assert lost["drawing_score"] == pytest.approx(floor, abs=1e-6)
    assert lost["score"] == pytest.approx(lost["caption_score"] + floor, abs=1e-6)


def test_drawings_need_the_emoji_names_and_a_known_by(
    ckpts: dict[str, Path], home: Path, llmos_home: Path
) -> None:
    pipe = load_image_pipeline(ckpts["apple"], emoji_home=home)
    image = [png(load_images(home, "apple")[1][0])]
    for by in ("drawings", "both"):
        with pytest.raises(LlmosError, match=r"only the emoji names .* have drawings"):
            pipe.describe_images(image, captions=["book", "city"], by=by)
    with pytest.raises(LlmosError, match="by must be one of captions, drawings, both"):
        pipe.describe_images(image, by="pixels")
    with pytest.raises(LlmosError, match="k must be at least 1"):
        pipe.describe_images(image, k=0, by="drawings")
    assert train_styles({"train_styles": ["google"]}) == ["google"]
    assert train_styles({}) == ["apple", "google", "facebook"]  # EmojiDataConfig's default
