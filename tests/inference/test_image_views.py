"""Test-time views of a query image (``zooms``): the mean of the views' vectors equals a
recomputation by hand from the model's own vectors of each image scaled by
:func:`llmos.data.emoji_pairs.zoom`; a blank image, the same at every scale, keeps its one
vector; ``describe_images(zooms=...)`` ranks by those vectors; bad factors are refused.

A tiny random CLIP (16 px images) over a tiny random text tower, and a fake emoji home
(:mod:`tiny_models`): 12 emoji drawn in apple and twitter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from inference.test_image import png
from tiny_models import fake_emoji_home, save_tiny_clip, save_tiny_text_tower

from llmos.data.emoji import load_images
from llmos.data.emoji_pairs import zoom
from llmos.errors import LlmosError
from llmos.inference.image import ImagePipeline, load_image_pipeline
from llmos.inference.image_views import MAX_VIEWS, check_zooms, embed_views

ZOOMS = (0.9, 1.0, 1.1)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_emoji_home(tmp_path_factory.mktemp("emoji-home"))


@pytest.fixture()
def pipe(
    tiny_tokenizer: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ImagePipeline:
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path / "llmos-home"))  # the text-vector cache
    tower = save_tiny_text_tower(tiny_tokenizer, tmp_path / "e5")
    return load_image_pipeline(save_tiny_clip(tmp_path / "clip", tower), emoji_home=home)


@pytest.fixture(scope="module")
def twitter(home: Path) -> list[bytes]:
    return [png(x) for x in load_images(home, "twitter")[1][:5]]


def test_the_views_vectors_are_averaged_and_normalised(
    pipe: ImagePipeline, twitter: list[bytes]
) -> None:
    pixels = pipe.decode(twitter)
    got = pipe.embed_pixels(pixels, zooms=ZOOMS)
    # by hand: each view through the model alone, as float64
    views = [zoom(pixels, np.full(len(pixels), f)) if f != 1.0 else pixels for f in ZOOMS]
    total = sum(pipe.embed_pixels(v).astype(np.float64) for v in views)
    want = total / np.linalg.norm(total, axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    # the scaled views are other images: the mean is not the one view
    one = pipe.embed_pixels(pixels)
    assert np.abs(got - one).max() > 1e-3
    # one factor of 1 is the image as it is; the same through embed_images
    np.testing.assert_allclose(pipe.embed_pixels(pixels, zooms=[1.0]), one, atol=1e-6)
    np.testing.assert_allclose(pipe.embed_images(twitter, zooms=ZOOMS), got, atol=1e-6)


def test_a_blank_image_is_the_same_at_every_scale(pipe: ImagePipeline) -> None:
    white = torch.full((2, 3, pipe.image_size, pipe.image_size), 255, dtype=torch.uint8)
    for f in ZOOMS:  # zoom fills with white what it uncovers
        assert torch.equal(zoom(white, np.full(2, f)), white)
    np.testing.assert_allclose(
        pipe.embed_pixels(white, zooms=ZOOMS), pipe.embed_pixels(white), atol=1e-6
    )


def test_describe_ranks_by_the_views_vectors(pipe: ImagePipeline, twitter: list[bytes]) -> None:
    vectors = pipe.embed_images(twitter, zooms=ZOOMS)
    for by in ("captions", "drawings", "both"):
        got = pipe.describe_images(twitter, k=4, lang="en", by=by, zooms=ZOOMS)
        want = pipe.describe_vectors(vectors, 4, lang="en", by=by)
        assert [[h["text"] for h in hits] for hits in got] == [
            [h["text"] for h in hits] for hits in want
        ]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose([h["score"] for h in g], [h["score"] for h in w], atol=1e-5)
    # custom captions too
    texts = ["a cat", "a book", "城市"]
    got = pipe.describe_images(twitter[:2], k=3, captions=texts, zooms=ZOOMS)
    cos = vectors[:2] @ pipe.embed_texts(texts).T
    for hits, row in zip(got, cos, strict=True):
        assert [h["text"] for h in hits] == [texts[i] for i in np.argsort(-row)]


def test_bad_zooms_are_refused_before_any_work(pipe: ImagePipeline, twitter: list[bytes]) -> None:
    assert check_zooms(None) is None and check_zooms([1, 0.9]) == (1.0, 0.9)
    cases = [
        ([], "1 to 8 scale factors, got 0"),
        ([1.0] * (MAX_VIEWS + 1), "got 9"),
        ([1.0, 3.0], "in [0.5, 2.0]"),
        ([0.0], "got 0.0"),
        ([float("nan")], "got nan"),
    ]
    for zooms, message in cases:
        with pytest.raises(LlmosError, match=message.replace("[", r"\[").replace("]", r"\]")):
            pipe.describe_images(twitter, zooms=zooms)
    calls = []
    with pytest.raises(LlmosError):
        embed_views(lambda px: calls.append(px) or np.zeros((len(px), 4)), torch.zeros(1), [])
    assert not calls
