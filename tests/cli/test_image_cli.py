"""The CLIP commands (issue 22): ``llmos embed --image``, ``llmos classify-zero --image``,
``llmos search-images`` and ``llmos describe-images`` give the Python API's answers, and a
user's mistakes exit with status 2 and one line naming the file or flag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_models import fake_emoji_home, save_tiny_clip, save_tiny_text_tower

from llmos.cli import main
from llmos.data.emoji import load_images
from llmos.inference.image import load_image_pipeline


@pytest.fixture(scope="module")
def setup(tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny CLIP, its tower, a fake emoji home (as $LLMOS_HOME/data) and 5 of its PNGs."""
    root = tmp_path_factory.mktemp("clip-cli")
    tower = save_tiny_text_tower(tiny_tokenizer, root / "e5")
    home = fake_emoji_home(root / "llmos" / "data")
    pngs = root / "pngs"
    pngs.mkdir()
    for i, rgba in enumerate(load_images(home, "twitter")[1][:5]):
        Image.fromarray(rgba).save(pngs / f"{i}.png")
    return {"clip": save_tiny_clip(root / "clip", tower), "home": home, "pngs": pngs}


@pytest.fixture()
def pipe(setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LLMOS_HOME", str(setup["home"].parent))  # the emoji data, the cache
    return load_image_pipeline(setup["clip"])


def files(setup: dict[str, Path]) -> list[Path]:
    return sorted(setup["pngs"].glob("*.png"))


def lines(out: str) -> list[dict]:
    return [json.loads(x) for x in out.splitlines() if x.strip()]


def test_embed_image_writes_the_apis_vectors(setup, pipe, tmp_path, capsys) -> None:
    out = tmp_path / "vectors.npy"
    argv = ["embed", str(setup["clip"]), "--image", str(setup["pngs"]), "--output", str(out)]
    assert main(argv) == 0
    assert "5 image embeddings of size 16 written" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(out), pipe.embed_images(files(setup)), atol=1e-6)
    # texts through a CLIP checkpoint: its text side, in the same space
    texts = tmp_path / "texts.txt"
    texts.write_text("book\ncity\n", encoding="utf-8")
    assert main(["embed", str(setup["clip"]), "--input", str(texts), "--output", str(out)]) == 0
    np.testing.assert_allclose(np.load(out), pipe.embed_texts(["book", "city"]), atol=1e-6)


def test_classify_zero_image_gives_the_apis_answers(setup, pipe, capsys) -> None:
    labels = ["--labels", "a=book", "a=习人", "b=city"]
    argv = ["classify-zero", str(setup["clip"]), "--image", str(setup["pngs"] / "*.png")]
    assert main([*argv, *labels, "--json"]) == 0
    want = pipe.classify_images(files(setup), {"a": ["book", "习人"], "b": "city"})
    got = lines(capsys.readouterr().out)
    assert [g.pop("image") for g in got] == [str(f) for f in files(setup)]
    assert [g["label"] for g in got] == [w["label"] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g["scores"] == pytest.approx(w["scores"], abs=1e-6)
    assert main([*argv, *labels]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"{want[0]['score']:.3f}  {want[0]['label']}") and "0.png" in first


def test_search_and_describe_images_give_the_apis_hits(setup, pipe, capsys) -> None:
    clip = str(setup["clip"])
    assert main(["search-images", clip, "book read", "城", "--k", "3", "--json"]) == 0
    got = lines(capsys.readouterr().out)
    want = pipe.search_images(["book read", "城"], k=3)
    assert [g["query"] for g in got] == ["book read", "城"]
    assert [[h["unified"] for h in g["images"]] for g in got] == [
        [h["unified"] for h in w] for w in want
    ]
    assert main(["search-images", clip, "book read", "--k", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "book read" and want[0][0]["emoji"] in out[1] and "[twitter #" in out[1]
    # a gallery of files: hits named by path
    assert main(["search-images", clip, "book", "--gallery", str(setup["pngs"]), "--json"]) == 0
    hits = lines(capsys.readouterr().out)[0]["images"]
    assert {h["name"] for h in hits} == {str(f) for f in files(setup)}

    assert main(["describe-images", clip, str(setup["pngs"] / "2.png"), "--lang", "zh"]) == 0
    out = capsys.readouterr().out.splitlines()
    want = pipe.describe_images([setup["pngs"] / "2.png"], k=5, lang="zh")[0]
    assert out[0].endswith("2.png") and len(out) == 6
    assert out[1] == f"  {want[0]['score']:.3f}  {want[0]['emoji']}  {want[0]['text']}"


def test_describe_images_by_drawings_and_both_give_the_apis_hits(setup, pipe, capsys) -> None:
    clip, image = str(setup["clip"]), setup["pngs"] / "3.png"
    for by in ("drawings", "both"):
        assert main(["describe-images", clip, str(image), "--by", by, "--k", "4", "--json"]) == 0
        (got,) = lines(capsys.readouterr().out)
        want = pipe.describe_images([image], k=4, by=by)[0]
        assert [h["text"] for h in got["captions"]] == [h["text"] for h in want]
        for g, w in zip(got["captions"], want, strict=True):
            assert g["drawing_score"] == pytest.approx(w["drawing_score"], abs=1e-5)
            assert ("caption_score" in g) == (by == "both")
    assert main(["describe-images", clip, str(image), "--by", "both", "--lang", "en"]) == 0
    out = capsys.readouterr().out.splitlines()
    w = pipe.describe_images([image], k=5, by="both", lang="en")[0][0]
    assert out[1] == (
        f"  {w['score']:.3f}  {w['emoji']}  {w['text']}  "
        f"(caption {w['caption_score']:.3f} + drawing {w['drawing_score']:.3f})"
    )


def test_describe_images_by_scaled_views_gives_the_apis_hits(setup, pipe, capsys) -> None:
    clip, image = str(setup["clip"]), setup["pngs"] / "3.png"
    argv = ["describe-images", clip, str(image), "--by", "drawings", "--zooms", "0.9,1,1.1"]
    assert main([*argv, "--json"]) == 0
    (got,) = lines(capsys.readouterr().out)
    want = pipe.describe_images([image], k=5, by="drawings", zooms=[0.9, 1, 1.1])[0]
    assert [h["text"] for h in got["captions"]] == [h["text"] for h in want]
    for g, w in zip(got["captions"], want, strict=True):
        assert g["drawing_score"] == pytest.approx(w["drawing_score"], abs=1e-5)


def test_mistakes_exit_2_with_one_line(setup, tiny_encoder, tmp_path, capsys) -> None:
    clip = str(setup["clip"])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not really a png")
    zero = ["classify-zero", clip, "--image", str(setup["pngs"])]
    cases = [
        (["embed", clip, "--image", str(bad), "--output", str(tmp_path / "x.npy")], "bad.png"),
        (["embed", clip, "--image", str(tmp_path / "none*.png"), "--output", "x.npy"], "matches"),
        (["embed", str(tiny_encoder), "--image", str(setup["pngs"]), "--output", "x.npy"], "CLIP"),
        ([*zero, "--labels", "a=x", "b=y", "--method", "logreg"], "--method is for texts"),
        (zero, "no labels"),
        (["describe-images", clip, str(bad)], "not an image"),
        (
            ["describe-images", clip, str(setup["pngs"]), "--by", "both", "--captions", "x.txt"],
            "--by both: only the emoji names have drawings",
        ),
        (["describe-images", clip, str(setup["pngs"])], "run `llmos data prepare --with-emoji`"),
        (
            ["describe-images", clip, str(bad), "--zooms", "0.9,big"],
            "e.g. 0.9,1,1.1; got '0.9,big'",
        ),
        (["describe-images", clip, str(setup["pngs"]), "--zooms", "1,3"], "in [0.5, 2.0]"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("llmos: error:") and message in err and err.count("\n") == 1, err
