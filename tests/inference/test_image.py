"""The CLIP pipeline (issue 22): decoding as training read the pixels, embeddings equal to the
model's own on the same pixels, zero-shot on a constructed alignment, image <-> text search
against hand-computed cosines, the text tower found, checked and overridden, and clear errors
for bad images.

A tiny random CLIP (16 px images) over a tiny random text tower, and a fake emoji home in
the layout ``llmos data prepare --with-emoji`` writes (:mod:`tiny_models`).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import fake_emoji_home, save_tiny_clip, save_tiny_text_tower

import llmos
from llmos.checkpoint.clip import read_clip, text_encoder_path
from llmos.data.emoji import load_images
from llmos.data.emoji_pairs import load_rows, normalise, style_images, to_pixels, trained_texts
from llmos.errors import CheckpointError, LlmosError
from llmos.inference.image import ImagePipeline, load_image_pipeline
from llmos.inference.image_decode import ImageError, decode_image, decode_images, image_files
from llmos.inference.pipeline import UnsupportedTaskError
from llmos.train.tasks.clip import load_clip, text_vectors


def png(rgba: np.ndarray, mode: str = "RGBA", fmt: str = "PNG", **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgba, mode if rgba.ndim == 3 else None).save(buf, fmt, **save)
    return buf.getvalue()


@pytest.fixture(scope="module")
def tower(tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_text_tower(tiny_tokenizer, tmp_path_factory.mktemp("tower") / "e5")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_emoji_home(tmp_path_factory.mktemp("emoji-home"))


@pytest.fixture(scope="module")
def ckpt(tower: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "checkpoint", tower)


@pytest.fixture()
def pipe(ckpt: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ImagePipeline:
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "llmos-home"))  # the text-vector cache
    return load_image_pipeline(ckpt, emoji_home=home)


@pytest.fixture(scope="module")
def twitter(home: Path) -> np.ndarray:
    return load_images(home, "twitter")[1]  # (N, 64, 64, 4) RGBA


# --- decoding -------------------------------------------------------------------------------


def test_a_prepared_emoji_png_decodes_to_the_training_pixels(
    home: Path, twitter: np.ndarray, tmp_path: Path
) -> None:
    rows = load_rows(home)
    trained = style_images(rows, "twitter", 16, home).pixels  # what training/eval read
    for i in range(len(twitter)):
        data = png(twitter[i])
        assert torch.equal(decode_image(data, size=16), trained[i])
        assert torch.equal(decode_image(data, size=64), to_pixels(twitter[i : i + 1], 64)[0])
    (tmp_path / "e.png").write_bytes(png(twitter[3]))
    assert torch.equal(decode_images([tmp_path / "e.png"], size=16)[0], trained[3])
    assert torch.equal(decode_image(Image.fromarray(twitter[3]), size=16), trained[3])


def test_other_formats_and_modes_decode_as_their_rgba(twitter: np.ndarray) -> None:
    rgba = twitter[0]
    want = decode_image(png(rgba), size=16)
    assert torch.equal(decode_image(png(rgba, fmt="WEBP", lossless=True), size=16), want)
    rgb = np.array(Image.fromarray(rgba).convert("RGB"))  # alpha dropped: a BMP keeps colours
    assert torch.equal(
        decode_image(png(rgb, "RGB", "BMP"), size=16),
        to_pixels(np.dstack([rgb, 255 + 0 * rgb[..., :1]])[None], 16)[0],
    )
    assert decode_image(png(rgb, "RGB", "JPEG", quality=95), size=16).shape == (3, 16, 16)
    # GIF: a palette with a transparent index, two frames; the first is read, on white
    first = Image.new("P", (8, 8), 1)
    first.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    first.paste(0, (0, 0, 4, 8))  # left half: index 0, transparent
    second = Image.new("P", (8, 8), 0)
    second.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    buf = io.BytesIO()
    first.save(buf, "GIF", save_all=True, append_images=[second], transparency=0)
    px = decode_image(buf.getvalue(), size=8)
    assert px[:, :, :4].eq(255).all() and px[:, :, 4:].tolist() == [
        [[255] * 4] * 8,
        [[0] * 4] * 8,
        [[0] * 4] * 8,
    ]
    # grey, and 16-bit grey (scaled to 8 bits, not clipped)
    grey = np.full((4, 4), 100, dtype=np.uint8)
    assert decode_image(png(grey, "L"), size=4).eq(100).all()
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(buf, "PNG")
    assert decode_image(buf.getvalue(), size=4).eq(255).all()


def test_a_non_square_image_is_padded_with_white_not_stretched() -> None:
    red = np.zeros((4, 8, 3), dtype=np.uint8)
    red[..., 0] = 255
    px = decode_image(png(red, "RGB"), size=8)  # 8 wide, 4 high: 2 white rows above and below
    assert px[:, :2].eq(255).all() and px[:, 6:].eq(255).all()
    assert px[:, 2:6].tolist() == [[[255] * 8] * 4, [[0] * 8] * 4, [[0] * 8] * 4]


def test_a_large_image_is_shrunk_first_and_stays_close_to_a_direct_resize() -> None:
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, size=(4, 4, 4)).astype(np.uint8)
    big = blocks.repeat(160, 0).repeat(160, 1)  # 640 x 640 of 160-px blocks: shrunk first
    direct = to_pixels(big[None], 16)[0].int()
    assert (decode_image(png(big), size=16).int() - direct).abs().max() <= 2


def _bomb(side: int) -> bytes:
    """A 1 x 1 PNG whose header claims ``side`` x ``side`` pixels."""
    data = bytearray(png(np.zeros((1, 1, 3), dtype=np.uint8), "RGB"))
    ihdr = data[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", side, side)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def test_bad_images_are_clear_errors_naming_the_input(tmp_path: Path, twitter: np.ndarray) -> None:
    good = png(twitter[0])
    cases = [
        (b"hello, not an image", "images[0]: not an image (expected a PNG, JPEG"),
        (b"", "images[0]: empty"),
        (good[: len(good) // 2], "images[0]: a corrupt or truncated image"),
        (_bomb(10_000), "images[0]: 10000 x 10000 = 100,000,000 pixels, more than the limit"),
        (_bomb(50_000), "images[0]: too many pixels, more than the limit of 40,000,000"),
        (12, "images[0]: expected image bytes, a file path or a PIL image, got int"),
        (tmp_path / "missing.png", "missing.png): no such file"),
    ]
    tiff = io.BytesIO()
    Image.fromarray(twitter[0]).save(tiff, "TIFF")
    cases.append((tiff.getvalue(), "not an image"))  # a format Pillow reads, but refused
    for data, message in cases:
        with pytest.raises(ImageError, match=re.escape(message)):
            decode_images([data], size=16)  # type: ignore[list-item]
    with pytest.raises(
        ImageError, match=r"images\[0\]: 64 x 64 = 4,096 pixels, more than .* 1,000"
    ):
        decode_images([good], size=16, max_pixels=1000)
    with pytest.raises(ImageError, match=r"bytes, more than the limit of 100"):
        decode_images([good], size=16, max_bytes=100)
    big = tmp_path / "big.png"
    big.write_bytes(good)
    with pytest.raises(ImageError, match=r"big.png\): \d+ bytes, more than the limit of 100"):
        decode_images([big], size=16, max_bytes=100)
    assert issubclass(ImageError, LlmosError)


def test_image_files_expands_directories_and_globs(tmp_path: Path) -> None:
    for name in ("b.png", "a.JPG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert image_files([tmp_path]) == [tmp_path / "a.JPG", tmp_path / "b.png"]
    assert image_files([str(tmp_path / "*.png"), tmp_path / "notes.txt"]) == [
        tmp_path / "b.png",
        tmp_path / "notes.txt",
    ]
    with pytest.raises(ImageError, match="no file matches"):
        image_files([str(tmp_path / "*.gif")])
    with pytest.raises(ImageError, match="no such file"):
        image_files([tmp_path / "nope.png"])


# --- the pipeline ---------------------------------------------------------------------------


def test_llmos_load_gives_the_image_pipeline(ckpt: Path, tiny_encoder: Path) -> None:
    pipe = llmos.load(ckpt)
    assert isinstance(pipe, ImagePipeline) and pipe.image_size == 16
    with pytest.raises(UnsupportedTaskError, match="CLIP image-text model: it can embed_images"):
        pipe.embed(["text"])
    assert not hasattr(pipe, "classify")
    with pytest.raises(UnsupportedTaskError, match="spec is for a text checkpoint"):
        pipe.spec  # noqa: B018 - what `llmos predict` reads first
    with pytest.raises(LlmosError, match="text_encoder is for CLIP checkpoints"):
        llmos.load(tiny_encoder, text_encoder=ckpt)
    with pytest.raises(LlmosError, match="zero-shot classification needs an encoder"):
        llmos.zero_shot(ckpt, {"a": "x", "b": "y"})


def test_embed_images_equals_the_model_on_the_training_pixels(
    pipe: ImagePipeline, ckpt: Path, twitter: np.ndarray
) -> None:
    images = [png(x) for x in twitter]
    got = pipe.embed_images(images, batch_size=5)  # batches of 5, 5, 2
    model = load_clip(ckpt)  # training's reader
    with torch.no_grad():
        want = model.embed_images(normalise(to_pixels(twitter, 16))).numpy()
    assert got.dtype == np.float32 and got.shape == (len(twitter), 16)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    assert pipe.embed_images([]).shape == (0, 16)
    with pytest.raises(ImageError, match=r"images\[6\]: not an image"):
        pipe.embed_images([*images[:6], b"nope"], batch_size=4)  # named in the caller's list


def test_embed_texts_projects_the_towers_vectors_as_training_did(
    pipe: ImagePipeline, ckpt: Path, tower: Path
) -> None:
    texts = ["book big", "习人", "city read"]
    model = load_clip(ckpt)
    with torch.no_grad():
        want = model.embed_texts(torch.from_numpy(text_vectors(tower, "query", texts))).numpy()
    np.testing.assert_allclose(pipe.embed_texts(texts), want, atol=1e-5)


def _align(pipe: ImagePipeline, texts: list[str], targets: np.ndarray) -> None:
    """Set the text projection so that each text's vector is exactly ``targets``' row."""
    raw = pipe.tower_vectors(texts).astype(np.float64)  # (k, text_dim)
    weight = targets.astype(np.float64).T @ np.linalg.pinv(raw.T)  # (D, text_dim)
    with torch.no_grad():
        pipe.model.text_projection.weight.copy_(torch.from_numpy(weight).float())


def test_zero_shot_picks_the_label_whose_text_was_aligned_with_the_image(
    pipe: ImagePipeline, twitter: np.ndarray
) -> None:
    images = [png(twitter[2]), png(twitter[7])]
    _align(pipe, ["book", "city"], pipe.embed_images(images))
    out = pipe.classify_images(images[::-1], {"cat": "book", "dog": ["city"]})
    assert [r["label"] for r in out] == ["dog", "cat"]
    # Scores: a softmax of the model's scale times the cosines, by hand.
    img, lab = pipe.embed_images(images[::-1]), pipe.embed_texts(["book", "city"])
    logits = pipe.logit_scale * img.astype(np.float64) @ lab.T
    want = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    for r, w in zip(out, want, strict=True):
        assert list(r["scores"]) == ["cat", "dog"]
        np.testing.assert_allclose(list(r["scores"].values()), w, rtol=1e-5)
        assert r["score"] == max(r["scores"].values())
    # Several descriptions: their projected vectors averaged, renormalised.
    clf = pipe.zero_shot({"cat": ["book", "习人"], "dog": "city"})
    mean = pipe.embed_texts(["book", "习人"]).mean(0)
    np.testing.assert_allclose(clf.prototypes[0], mean / np.linalg.norm(mean), atol=1e-6)
    with pytest.raises(LlmosError, match="at least two labels"):
        pipe.classify_images(images, {"cat": "book"})
    with pytest.raises(LlmosError, match="label 'dog' has an empty description"):
        pipe.classify_images(images, {"cat": "book", "dog": [""]})


def test_describe_images_ranks_the_emoji_names_by_cosine(
    pipe: ImagePipeline, home: Path, twitter: np.ndarray
) -> None:
    rows = load_rows(home)
    out = pipe.describe_images([png(twitter[4])], k=50)[0]
    names = [(r["en_name"] or r["name"]) for r in rows] + [
        r["zh_name"] for r in rows if r["zh_name"]
    ]
    assert sorted(h["text"] for h in out) == sorted(names)  # every name, both languages
    cos = pipe.embed_texts([h["text"] for h in out]) @ pipe.embed_images([png(twitter[4])])[0]
    np.testing.assert_allclose([h["score"] for h in out], cos, atol=1e-5)
    assert [h["score"] for h in out] == sorted((h["score"] for h in out), reverse=True)
    hit = next(h for h in out if h["text"] == rows[4]["zh_name"])
    assert (hit["lang"], hit["emoji"], hit["unified"]) == (
        "zh",
        rows[4]["emoji"],
        rows[4]["unified"],
    )
    assert {h["lang"] for h in pipe.describe_images([png(twitter[4])], k=50, lang="en")[0]} == {
        "en"
    }
    # the flag-like row without CLDR goes by emoji-datasource's English name
    assert any(h["text"] == rows[-1]["name"] for h in out)
    # given texts
    mine = pipe.describe_images([png(twitter[4])], k=1, captions=["book", "city"])[0]
    assert len(mine) == 1 and mine[0]["text"] in ("book", "city") and "lang" not in mine[0]


def test_the_caption_index_reuses_the_vectors_training_cached(
    pipe: ImagePipeline, home: Path, tower: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text_vectors(tower, "query", trained_texts(load_rows(home)))  # as training leaves them

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("embedded again")

    monkeypatch.setattr(pipe, "tower_vectors", fail)
    assert len(pipe.caption_index(lang="zh")) == len(load_rows(home)) - 1


def test_search_images_ranks_the_default_gallery_by_cosine(
    pipe: ImagePipeline, home: Path, twitter: np.ndarray
) -> None:
    rows = load_rows(home)
    out = pipe.search_images(["book big", "城"], k=3)
    gallery = pipe.embed_images([png(x) for x in twitter])
    for hits, q in zip(out, pipe.embed_texts(["book big", "城"]), strict=True):
        cos = gallery @ q
        assert [h["index"] for h in hits] == np.argsort(-cos)[:3].tolist()
        np.testing.assert_allclose([h["score"] for h in hits], np.sort(cos)[::-1][:3], atol=1e-5)
        for h in hits:
            row = rows[h["index"]]
            assert (h["emoji"], h["unified"], h["style"]) == (
                row["emoji"],
                row["unified"],
                "twitter",
            )
            assert h["zh_name"] == row["zh_name"]
    apple = pipe.search_images("book big", k=1, style="apple")[0][0]
    assert apple["style"] == "apple"
    # given images, with names
    mine = pipe.search_images(["book"], k=2, gallery=[png(twitter[0]), png(twitter[1])])[0]
    assert sorted(h["index"] for h in mine) == [0, 1] and mine[0]["name"] is None
    gallery_index = pipe.image_gallery([png(twitter[0])], names=["zero"])
    assert pipe.search_images(["x"], gallery=gallery_index)[0][0]["name"] == "zero"
    with pytest.raises(LlmosError, match="expected images or an image gallery"):
        pipe.search_images(["x"], gallery=pipe.caption_index(["a", "b"]))


# --- the text tower -------------------------------------------------------------------------


def test_a_relative_text_tower_is_found_from_the_checkpoints_parents(
    tower: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "repo"
    shutil.copytree(tower, root / "runs" / "e5")
    ckpt = save_tiny_clip(root / "runs" / "clip" / "checkpoint", tower, text_encoder="runs/e5")
    monkeypatch.chdir(tmp_path)  # not the repository root
    assert text_encoder_path(read_clip(ckpt)) == root / "runs" / "e5"
    monkeypatch.chdir(root)
    assert text_encoder_path(read_clip(ckpt)) == Path.cwd() / "runs" / "e5"
    pipe = llmos.load(ckpt)
    assert pipe.embed_texts(["book"]).shape == (1, 16)


def test_a_missing_or_other_text_tower_is_a_clear_error(
    tower: Path, tiny_tokenizer: Path, tmp_path: Path
) -> None:
    lost = save_tiny_clip(tmp_path / "lost", tower, text_encoder="runs/nowhere")
    with pytest.raises(CheckpointError, match="its text tower 'runs/nowhere' was not found"):
        llmos.load(lost).embed_texts(["book"])
    # the override: the same weights elsewhere are fine, other weights are refused
    moved = shutil.copytree(tower, tmp_path / "moved")
    assert llmos.load(lost, text_encoder=moved).embed_texts(["book"]).shape == (1, 16)
    other = save_tiny_text_tower(tiny_tokenizer, tmp_path / "other", seed=1)
    with pytest.raises(CheckpointError, match="trained on the vectors of a text tower"):
        llmos.load(lost, text_encoder=other).embed_texts(["book"])
    # a checkpoint from before the digest was recorded is not checked
    old = save_tiny_clip(tmp_path / "old", tower, meta={"task": "clip", "text_kind": "query"})
    assert llmos.load(old, text_encoder=other).embed_texts(["book"]).shape == (1, 16)


def test_corrupt_clip_checkpoints_are_clear_errors(ckpt: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(ckpt, tmp_path / "broken")
    config = json.loads((broken / "config.json").read_text())
    config["projection_dim"] = -1
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="projection_dim must be positive"):
        llmos.load(broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="not a CLIP checkpoint"):
        load_image_pipeline(broken)


def test_training_records_the_text_towers_digest(home: Path, tower: Path) -> None:
    from llmos.checkpoint.digest import weights_digest
    from llmos.config import PretrainConfig, load_config
    from llmos.train.tasks.clip import setup_clip_pretraining

    overrides = [
        "model.model_type=clip",
        f"model.text_encoder={tower}",
        "model.vision.image_size=16",
        "model.vision.patch_size=4",
        f"emoji.home={home}",
        "emoji.train_styles=[apple]",
        "train.batch_size=4",
    ]
    setup = setup_clip_pretraining(load_config(PretrainConfig, None, overrides))
    assert setup.meta["text_encoder_digest"] == weights_digest(tower)
