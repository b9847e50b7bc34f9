"""A CLIP model over HTTP (issue 22): images in base64, data: URLs and multipart uploads to
/v1/embed, zero-shot /v1/classify over images, /v1/images/describe and /v1/images/search,
each answer equal to the Python API's on the same bytes; every bad image a clear 4xx naming
it (never a 500); the per-route body limit; authentication.

A real uvicorn server on localhost serving a tiny random CLIP over a tiny text tower, with a
fake emoji home (:func:`serve.conftest.build_clip_models`).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from llmos.data.emoji import load_images
from llmos.inference.image import ImagePipeline, load_image_pipeline
from serve.conftest import (
    CLIP_ALIGNED,
    CLIP_TEXTS,
    Live,
    build_clip_models,
    metric,
    png,
    start,
)
from serve.test_reliability import assert_error

# The fields of a name described by captions (by drawings adds drawing_score).
Description = ("text", "lang", "emoji", "unified", "score")
MAX_IMAGES, MAX_IMAGE_BYTES = 4, 100_000  # the test server's (smaller than the defaults)
LABELS = {"cat": CLIP_TEXTS[0], "dog": [CLIP_TEXTS[1]]}


@pytest.fixture(scope="module")
def clip_home(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path) -> tuple[Path, Path]:
    return build_clip_models(tmp_path_factory.mktemp("images"), tiny_tokenizer)


@pytest.fixture(scope="module")
def live(clip_home: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    models, home = clip_home
    d = tmp_path_factory.mktemp("images-db")
    runner, server = start(
        models,
        f"sqlite:///{d / 'llmos.db'}",
        rate_limit=0,
        emoji_home=home,
        max_images=MAX_IMAGES,
        max_image_bytes=MAX_IMAGE_BYTES,
        apps_dir=d,
    )
    with runner:
        yield server


@pytest.fixture(scope="module")
def ref(clip_home: tuple[Path, Path]) -> ImagePipeline:
    """The same checkpoint through the Python API."""
    models, home = clip_home
    return load_image_pipeline(models / "clip" / "checkpoint", emoji_home=home)


@pytest.fixture(scope="module")
def emoji(clip_home: tuple[Path, Path]) -> list[bytes]:
    """The twitter style's emoji as PNG files."""
    return [png(x) for x in load_images(clip_home[1], "twitter")[1]]


@pytest.fixture
def api(live: Live) -> Iterator[httpx.Client]:
    with live.client(live.alice) as c:
        yield c


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def files(*items: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (name, data, "image/png")) for name, data in items]


def big_blank_png(side: int) -> bytes:
    """A real ``side`` x ``side`` PNG, small by compression (1 bit a pixel, all black)."""
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, "PNG")
    return buf.getvalue()


def test_a_clip_model_is_served_with_its_routes(api: httpx.Client) -> None:
    models = {m["name"]: m for m in api.get("/v1/models").json()["models"]}
    assert set(models) == {"clip", "e5"}
    assert models["clip"]["task"] == models["clip"]["model_type"] == "clip"
    assert models["clip"]["capabilities"] == [
        "embed",
        "classify",
        "images/describe",
        "images/search",
    ]
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/v1/images/describe", "/v1/images/search"} <= set(paths)
    content = paths["/v1/embed"]["post"]["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}


def test_embed_images_in_every_form_equals_the_python_api(
    api: httpx.Client, ref: ImagePipeline, emoji: list[bytes]
) -> None:
    images = emoji[:3]
    want = ref.embed_images(images)
    wrapped = base64.encodebytes(images[2]).decode()  # line breaks, as `base64` writes
    bodies = [
        [b64(x) for x in images],
        [f"data:image/png;base64,{b64(x)}" for x in images],
        [b64(images[0]), f"data:;base64,{b64(images[1])}", wrapped],
    ]
    for body in bodies:
        r = api.post("/v1/embed", json={"model": "clip", "images": body})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["model"] == "clip" and answer["dim"] == 16
        np.testing.assert_allclose(answer["embeddings"], want, atol=1e-5)
    r = api.post("/v1/embed", data={"model": "clip"}, files=files(*zip("abc", images, strict=True)))
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["embeddings"], want, atol=1e-5)


def test_texts_to_a_clip_model_embed_into_the_image_space(
    api: httpx.Client, ref: ImagePipeline
) -> None:
    texts = ["book big", "城市", "a red heart"]
    r = api.post("/v1/embed", json={"model": "clip", "texts": texts})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["embeddings"], ref.embed_texts(texts), atol=1e-5)
    r = api.post("/v1/embed", json={"model": "clip", "texts": texts, "pooling": "cls"})
    assert_error(r, 422, "invalid_request", "a CLIP model embeds texts its own way")
    # the OpenAI-compatible surface too, counting the tower's tokens (with its prefix)
    r = api.post("/openai/v1/embeddings", json={"model": "clip", "input": texts})
    assert r.status_code == 200, r.text
    got = [d["embedding"] for d in r.json()["data"]]
    np.testing.assert_allclose(got, ref.embed_texts(texts), atol=1e-5)
    tokens = sum(ref.text_tower.count_tokens(texts, ref.checkpoint.text_kind))
    assert r.json()["usage"]["prompt_tokens"] == tokens


def test_classify_images_zero_shot_picks_the_aligned_label(
    api: httpx.Client, ref: ImagePipeline, emoji: list[bytes]
) -> None:
    images = [emoji[CLIP_ALIGNED[1]], emoji[CLIP_ALIGNED[0]]]
    body = {"model": "clip", "images": [b64(x) for x in images], "labels": LABELS}
    r = api.post("/v1/classify", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert [x["label"] for x in answer["results"]] == ["dog", "cat"]
    assert answer["method"] == "similarity"
    for got, want in zip(answer["results"], ref.classify_images(images, LABELS), strict=True):
        assert list(got["scores"]) == ["cat", "dog"] and got["windows"] == 1
        np.testing.assert_allclose(list(got["scores"].values()), list(want["scores"].values()))
        assert got["score"] == max(got["scores"].values())
    # descriptions in Chinese and English together, averaged as the Python API does
    mixed = {"cat": ["book", "书"], "dog": "城市"}
    r = api.post("/v1/classify", json={**body, "labels": mixed})
    want = ref.classify_images(images, mixed)
    np.testing.assert_allclose(
        [list(x["scores"].values()) for x in r.json()["results"]],
        [list(x["scores"].values()) for x in want],
        rtol=1e-5,
    )
    assert_error(
        api.post("/v1/classify", json={"model": "clip", "images": body["images"]}),
        422,
        "invalid_request",
        "labels: Field required",
    )
    assert_error(
        api.post("/v1/classify", json={**body, "labels": {"cat": "book"}}),
        422,
        "invalid_request",
        "at least two labels",
    )
    assert_error(
        api.post("/v1/classify", json={"model": "clip", "texts": ["猫"]}),
        400,
        "wrong_model",
        "'clip' is a CLIP model: it classifies zero-shot, from labels",
    )
    # texts with labels: on the fly, in the model's space (its text vectors)
    r = api.post("/v1/classify", json={"model": "clip", "texts": ["book"], "labels": LABELS})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["label"] == "cat"  # "book" is the cat's own description


def test_describe_images_gives_the_nearest_names_in_each_language(
    api: httpx.Client, ref: ImagePipeline, emoji: list[bytes]
) -> None:
    images = [emoji[4], emoji[9]]
    r = api.post("/v1/images/describe", json={"model": "clip", "images": [b64(x) for x in images]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 2 and all(set(x) == {"zh", "en"} for x in results)
    for lang in ("zh", "en"):
        want = ref.describe_images(images, k=5, lang=lang)
        for got, hits in zip(results, want, strict=True):
            assert [h["text"] for h in got[lang]] == [h["text"] for h in hits]
            assert [(h["emoji"], h["unified"]) for h in got[lang]] == [
                (h["emoji"], h["unified"]) for h in hits
            ]
            assert {h["lang"] for h in got[lang]} == {lang}
            np.testing.assert_allclose(
                [h["score"] for h in got[lang]], [h["score"] for h in hits], atol=1e-5
            )
    # an upload, one language, k
    r = api.post(
        "/v1/images/describe",
        data={"model": "clip", "k": "2", "lang": "en"},
        files=files(("face.png", images[0])),
    )
    assert r.status_code == 200, r.text
    (one,) = r.json()["results"]
    want = ref.describe_images(images[:1], k=2, lang="en")[0]
    assert list(one) == ["en"] and [h["text"] for h in one["en"]] == [h["text"] for h in want]


def test_describe_images_by_drawings_or_both(
    api: httpx.Client, ref: ImagePipeline, emoji: list[bytes]
) -> None:
    images = [emoji[1], emoji[6]]
    body = {"model": "clip", "images": [b64(x) for x in images], "k": 3, "by": "drawings"}
    r = api.post("/v1/images/describe", json=body)
    assert r.status_code == 200, r.text
    for lang in ("zh", "en"):
        want = ref.describe_images(images, k=3, lang=lang, by="drawings")
        for got, hits in zip(r.json()["results"], want, strict=True):
            assert [h["text"] for h in got[lang]] == [h["text"] for h in hits]
            assert all(set(h) - {"drawing_score"} == set(Description) for h in got[lang])
            np.testing.assert_allclose(
                [h["drawing_score"] for h in got[lang]],
                [h["drawing_score"] for h in hits],
                atol=1e-5,
            )
    # an upload, by both: each score the caption's plus the drawing's
    r = api.post(
        "/v1/images/describe",
        data={"model": "clip", "lang": "en", "by": "both"},
        files=files(("face.png", images[0])),
    )
    assert r.status_code == 200, r.text
    (one,) = r.json()["results"]
    want = ref.describe_images(images[:1], k=5, lang="en", by="both")[0]
    assert [h["text"] for h in one["en"]] == [h["text"] for h in want]
    for h in one["en"]:
        assert h["score"] == pytest.approx(h["caption_score"] + h["drawing_score"], abs=1e-5)
    # by captions (the default) answers as before: no drawing or caption score
    r = api.post("/v1/images/describe", json={"model": "clip", "images": [b64(images[0])]})
    assert all(set(h) == set(Description) for h in r.json()["results"][0]["en"])
    for send in (
        lambda: api.post("/v1/images/describe", json={**body, "by": "pixels"}),
        lambda: api.post(
            "/v1/images/describe",
            data={"model": "clip", "by": "pixels"},
            files=files(("face.png", images[0])),
        ),
    ):
        assert_error(send(), 422, "invalid_request", "by", "'captions', 'drawings' or 'both'")


def test_describe_images_by_the_mean_of_scaled_views(
    api: httpx.Client, ref: ImagePipeline, emoji: list[bytes]
) -> None:
    images = [emoji[2], emoji[7]]
    zooms = [0.9, 1, 1.1]
    body = {"model": "clip", "images": [b64(x) for x in images], "k": 3, "by": "drawings"}
    r = api.post("/v1/images/describe", json={**body, "zooms": zooms})
    assert r.status_code == 200, r.text
    want = ref.describe_images(images, k=3, lang="zh", by="drawings", zooms=zooms)
    plain = ref.describe_images(images, k=3, lang="zh", by="drawings")
    assert want != plain  # the views change the scores, so the answer tells them apart
    for got, hits in zip(r.json()["results"], want, strict=True):
        assert [h["text"] for h in got["zh"]] == [h["text"] for h in hits]
        np.testing.assert_allclose(
            [h["score"] for h in got["zh"]], [h["score"] for h in hits], atol=1e-5
        )
    # an upload: one form part per factor
    r = api.post(
        "/v1/images/describe",
        data={"model": "clip", "lang": "en", "zooms": ["0.9", "1", "1.1"]},
        files=files(("face.png", images[0])),
    )
    assert r.status_code == 200, r.text
    want = ref.describe_images(images[:1], k=5, lang="en", zooms=zooms)[0]
    assert [h["text"] for h in r.json()["results"][0]["en"]] == [h["text"] for h in want]
    one = api.post(
        "/v1/images/describe",
        data={"model": "clip", "lang": "en", "zooms": "1.1"},
        files=files(("face.png", images[0])),
    )
    want = ref.describe_images(images[:1], k=5, lang="en", zooms=[1.1])[0]
    assert [h["text"] for h in one.json()["results"][0]["en"]] == [h["text"] for h in want]
    for bad, words in (
        ([3.0], ("zooms[0]", "less than or equal to 2")),
        ([], ("zooms", "at least 1")),
        ([1.0] * 9, ("zooms", "at most 8")),
    ):
        r = api.post("/v1/images/describe", json={**body, "zooms": bad})
        assert_error(r, 422, "invalid_request", *words)


def test_search_images_gives_the_nearest_emoji_with_their_pngs(
    api: httpx.Client, ref: ImagePipeline, clip_home: tuple[Path, Path]
) -> None:
    home = clip_home[1]
    for query, style in (("book", None), ("城市", "apple")):
        body = {"model": "clip", "query": query, "k": 3} | ({"style": style} if style else {})
        r = api.post("/v1/images/search", json=body)
        assert r.status_code == 200, r.text
        answer = r.json()
        want = ref.search_images([query], k=3, style=style)[0]
        assert answer["style"] == (style or "twitter")  # the model's held-out style
        assert [h["unified"] for h in answer["hits"]] == [h["unified"] for h in want]
        np.testing.assert_allclose(
            [h["score"] for h in answer["hits"]], [h["score"] for h in want], atol=1e-5
        )
        codes, rgba = load_images(home, answer["style"])
        for hit, w in zip(answer["hits"], want, strict=True):
            assert (hit["emoji"], hit["name"], hit["zh_name"]) == (
                w["emoji"],
                w["name"],
                w["zh_name"],
            )
            head, _, data = hit["image"].partition(",")
            assert head == "data:image/png;base64"
            shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))
            assert np.array_equal(shown, rgba[codes.tolist().index(hit["unified"])])
    r = api.post("/v1/images/search", json={"model": "clip", "query": "x", "style": "windows"})
    assert_error(r, 422, "invalid_request", "style 'windows' is not prepared", "apple, twitter")
    r = api.post("/v1/images/search", json={"model": "e5", "query": "x"})
    assert_error(r, 400, "wrong_model", "'e5' is a embedding model", "not /v1/images/search")


def _bodies(images: list[str]) -> dict[str, dict[str, Any]]:
    """The same images to each route that takes them."""
    return {
        "/v1/embed": {"model": "clip", "images": images},
        "/v1/classify": {"model": "clip", "images": images, "labels": LABELS},
        "/v1/images/describe": {"model": "clip", "images": images},
    }


def test_bad_images_are_clear_4xx_naming_the_image(
    api: httpx.Client, live: Live, emoji: list[bytes]
) -> None:
    good = emoji[0]
    cases = [
        (
            [b64(good), b64(b"hello, not an image")],
            422,
            "invalid_image",
            "images[1]: not an image (expected a PNG, JPEG",
        ),
        ([b64(good[: len(good) // 2])], 422, "invalid_image", "images[0]: a corrupt or truncated"),
        (["%%% not base64 %%%"], 422, "invalid_image", "images[0]: not base64"),
        (["data:image/png,rawbytes"], 422, "invalid_image", "images[0]: a data: URL must carry"),
        (
            [b64(good), b64(bytes(150_000))],
            413,
            "too_large",
            "images[1]: 150,000 bytes, more than the limit of 100,000",
        ),
        (
            [b64(big_blank_png(10_000))],
            413,
            "too_large",
            "images[0]: 10000 x 10000 = 100,000,000 pixels, more than the limit of 16,000,000",
        ),
        (
            [b64(good)] * (MAX_IMAGES + 1),
            422,
            "invalid_request",
            f"images has {MAX_IMAGES + 1} items; this server takes at most {MAX_IMAGES}",
        ),
    ]
    errors_before = metric(api, "llmos_requests_total", route="/v1/embed", status="500")
    for images, status, kind, message in cases:
        for path, body in _bodies(images).items():
            assert_error(api.post(path, json=body), status, kind, message)
    # an image to a model that reads texts only
    for path, body in _bodies([b64(good)]).items():
        r = api.post(path, json={**body, "model": "e5"})
        assert_error(r, 400, "wrong_model", "'e5' is a embedding model: it reads texts, not images")
    r = api.post("/v1/embed", json={"model": "clip", "images": [b64(good)], "texts": ["x"]})
    assert_error(r, 422, "invalid_request", "give texts or images, not both")
    assert_error(
        api.post("/v1/embed", json={"model": "clip"}), 422, "invalid_request", "texts: Field"
    )
    assert metric(api, "llmos_requests_total", route="/v1/embed", status="500") == errors_before


def test_bad_uploads_are_clear_4xx_naming_the_file(api: httpx.Client, emoji: list[bytes]) -> None:
    good = emoji[0]
    for path in ("/v1/embed", "/v1/images/describe"):
        r = api.post(
            path,
            data={"model": "clip"},
            files=files(("ok.png", good), ("broken.png", good[:100])),
        )
        assert_error(r, 422, "invalid_image", "files[1] (broken.png): a corrupt or truncated")
        r = api.post(path, data={"model": "clip"}, files=files(("big.png", bytes(150_000))))
        assert_error(r, 413, "too_large", "files[0] (big.png): 150,000 bytes, more than")
        r = api.post(path, data={"model": "clip"}, files=files(*[("a.png", good)] * 5))
        assert_error(r, 422, "invalid_request", "files has 5 items; this server takes at most 4")
        r = api.post(path, data={"model": "e5"}, files=files(("a.png", good)))
        assert_error(r, 400, "wrong_model", "reads texts, not images")
        r = api.post(path, files={"model": (None, "clip"), "other": (None, "x")})
        assert_error(r, 422, "invalid_request", "files: Field required")
        r = api.post(path, data={"model": "clip", "extra": "1"}, files=files(("a.png", good)))
        assert_error(r, 422, "invalid_request", "extra", "Extra inputs are not permitted")
        r = api.post(path, files=files(("a.png", good)))
        assert_error(r, 422, "invalid_request", "model", "Field required")
        broken = {"Content-Type": "multipart/form-data; boundary=xyz"}
        r = api.post(path, content=b"--xyz\r\nnot a part", headers=broken)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request", r.text
        r = api.post(path, content=b"{}", headers={"Content-Type": "multipart/form-data"})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request", r.text


def test_a_long_thin_image_is_cheap(api: httpx.Client) -> None:
    """A 16,000,000 x 1 PNG (2 KB, within the pixel limit) is shrunk by its long side before
    it is padded to a square: embedded at once, not a square of 2.5e14 pixels."""
    buf = io.BytesIO()
    Image.new("1", (16_000_000, 1)).save(buf, "PNG")
    r = api.post("/v1/embed", json={"model": "clip", "images": [b64(buf.getvalue())]})
    assert r.status_code == 200, r.text


def test_the_image_routes_take_larger_bodies_than_the_others(api: httpx.Client) -> None:
    """2 MiB is over the server's body limit (1 MiB) but under its image routes' (16 MiB):
    /v1/embed reads the body (and refuses the image it holds, by its own limit), /v1/tag
    refuses the body unread."""
    image = b64(bytes(1_500_000))
    r = api.post("/v1/embed", json={"model": "clip", "images": [image]})
    assert_error(r, 413, "too_large", "images[0]: 1,500,000 bytes, more than the limit of")
    r = api.post("/v1/tag", json={"model": "clip", "texts": [image]})
    assert_error(r, 413, "too_large", "request body is larger than this server's limit of 1048576")


def test_every_image_route_needs_an_api_key(live: Live, emoji: list[bytes]) -> None:
    image = [b64(emoji[0])]
    requests = [
        *_bodies(image).items(),
        ("/v1/images/search", {"model": "clip", "query": "book"}),
    ]
    for key in (None, "llmos_not-a-key"):
        with live.client(key) as c:
            for path, body in requests:
                assert_error(c.post(path, json=body), 401, "unauthorized")
            r = c.post("/v1/embed", data={"model": "clip"}, files=files(("a.png", emoji[0])))
            assert_error(r, 401, "unauthorized")


def test_without_emoji_data_describe_and_search_are_503_and_embedding_works(
    clip_home: tuple[Path, Path], tmp_path: Path, emoji: list[bytes]
) -> None:
    models, _ = clip_home
    runner, server = start(
        models,
        f"sqlite:///{tmp_path / 'llmos.db'}",
        rate_limit=0,
        emoji_home=tmp_path / "nothing",
        apps_dir=tmp_path,
    )
    image = [b64(emoji[0])]
    with runner, server.client(server.alice) as c:
        r = c.post("/v1/images/describe", json={"model": "clip", "images": image})
        assert_error(r, 503, "no_emoji_data", "llmos data prepare --with-emoji")
        r = c.post("/v1/images/search", json={"model": "clip", "query": "book"})
        assert_error(r, 503, "no_emoji_data", "llmos data prepare --with-emoji")
        assert c.post("/v1/embed", json={"model": "clip", "images": image}).status_code == 200
