"""emoji/: the rows, the images per style and the manifest, from tiny fake tarballs laid out
as the real npm packages (nothing is downloaded); idempotence, the pinned sha256, npm
missing."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llmos.data import emoji as em
from llmos.data.emoji import EMOJI_DIR, MANIFEST_FILE, ROWS_FILE, load_images, prepare_emoji
from llmos.errors import DataError

README = """# emoji-data
## Licensing
* Apple images, Copyright © Apple Inc., are not licensed for commercial usage.
* Android/Google/Noto images, are available under the Apache License 2.0.
* Twitter images are available under the Creative Commons Attribution 4.0 license.
* Facebook images, © Facebook, Inc., have no clear licensing.
"""
EMOJI = [
    {
        "name": "GRINNING FACE",
        "unified": "1F600",
        "short_name": "grinning",
        "category": "Smileys & Emotion",
        "subcategory": "face-smiling",
        "sort_order": 1,
        **{f"has_img_{s}": True for s in em.STYLES},
    },
    {
        "name": "FATHER CHRISTMAS",
        "unified": "1F385",
        "short_name": "santa",
        "category": "People & Body",
        "subcategory": "person-fantasy",
        "sort_order": 3,
        **{f"has_img_{s}": True for s in em.STYLES},
        "skin_variations": {
            "1F3FB": {
                "unified": "1F385-1F3FB",
                **{f"has_img_{s}": s != "facebook" for s in em.STYLES},
            }
        },
    },
    {  # CLDR keys it without U+FE0F: "☺"
        "name": "WHITE SMILING FACE",
        "unified": "263A-FE0F",
        "short_name": "relaxed",
        "category": "Smileys & Emotion",
        "subcategory": "face-affection",
        "sort_order": 2,
        **{f"has_img_{s}": True for s in em.STYLES},
    },
    {  # flags are not in CLDR's (non-derived) annotations
        "name": None,
        "unified": "1F1E8-1F1F3",
        "short_name": "cn",
        "category": "Flags",
        "subcategory": "country-flag",
        "sort_order": 4,
        **{f"has_img_{s}": s != "apple" for s in em.STYLES},
    },
]
CLDR = {
    "en": {
        "😀": {"default": ["face", "grin"], "tts": ["grinning face"]},
        "🎅": {"default": ["christmas", "santa"], "tts": ["Santa Claus"]},
        "🏻": {"default": ["light", "skin"], "tts": ["light skin tone"]},
        "☺": {"default": ["smile"], "tts": ["smiling face"]},
    },
    "zh": {
        "😀": {"default": ["笑脸", "高兴"], "tts": ["嘿嘿"]},
        "🎅": {"default": ["圣诞", "圣诞老人"], "tts": ["圣诞老人"]},
        "🏻": {"default": ["肤色", "较浅肤色"], "tts": ["较浅肤色"]},
        "☺": {"default": ["微笑"], "tts": ["微笑"]},
    },
}
ALL = ["1F600", "263A-FE0F", "1F385", "1F385-1F3FB", "1F1E8-1F1F3"]


def colour(style: str, unified: str) -> tuple[int, int, int, int]:
    """A colour per (style, emoji), so that each image in the npz can be told apart."""
    return (list(em.STYLES).index(style) * 60, ALL.index(unified) * 50, 7, 255)


def png(rgba: tuple[int, int, int, int], size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (size, size), rgba).save(buf, format="PNG")
    return buf.getvalue()


def tarball(path: Path, members: dict[str, bytes | str]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return path


def fake_packages(d: Path, broken_png: bool = False) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    common = {"LICENSE": "The MIT License (MIT)\n\nCopyright", "README.md": README}
    paths = {}
    meta = {**common, "emoji.json": json.dumps(EMOJI), "package.json": '{"license": "MIT"}'}
    paths[em.METADATA.name] = tarball(d / em.METADATA.tarball, meta)
    cldr = {
        "LICENSE": "UNICODE LICENSE V3\n\nCOPYRIGHT",
        "package.json": '{"license": "Unicode-3.0"}',
        **{
            f"annotations/{lang}/annotations.json": json.dumps(
                {"annotations": {"identity": {"language": lang}, "annotations": ann}},
                ensure_ascii=False,
            )
            for lang, ann in CLDR.items()
        },
        "annotations/fr/annotations.json": "{}",
    }
    paths[em.CLDR.name] = tarball(d / em.CLDR.tarball, cldr)
    for style, spec in em.STYLES.items():
        members: dict[str, bytes | str] = {**common, "package.json": '{"license": "MIT"}'}
        for e in EMOJI:
            for v in [e, *e.get("skin_variations", {}).values()]:
                if v[f"has_img_{style}"]:
                    name = f"img/{style}/64/{v['unified'].lower()}.png"
                    members[name] = png(colour(style, v["unified"]))
        members[f"img/{style}/sheets/32.png"] = png((0, 0, 0, 0), 32)  # a sheet: not read
        if broken_png and style == "google":
            members["img/google/64/1f600.png"] = b"not a png"
        paths[spec.name] = tarball(d / spec.tarball, members)
    return paths


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict[str, Path]]:
    home = tmp_path_factory.mktemp("home")
    packages = fake_packages(home / "fake")
    return home, prepare_emoji(home, packages=packages), packages


def rows(home: Path) -> dict[str, dict]:
    lines = (home / EMOJI_DIR / ROWS_FILE).read_text(encoding="utf-8").splitlines()
    return {r["unified"]: r for r in map(json.loads, lines)}


def test_rows_carry_the_names_in_both_languages(prepared) -> None:
    home, _, _ = prepared
    got = rows(home)
    assert list(got) == ALL  # sort order, each variation after its base
    grin = got["1F600"]
    assert grin["emoji"] == "😀" and grin["base"] == "1F600" and grin["skin_tones"] == []
    assert (grin["category"], grin["subcategory"]) == ("Smileys & Emotion", "face-smiling")
    assert (grin["name"], grin["short_name"]) == ("grinning face", "grinning")
    assert (grin["en_name"], grin["zh_name"]) == ("grinning face", "嘿嘿")
    assert grin["zh_keywords"] == ["笑脸", "高兴"] and grin["cldr"] == "exact"
    assert grin["images"] == list(em.STYLES)
    assert got["263A-FE0F"]["zh_name"] == "微笑"  # found without its U+FE0F
    santa = got["1F385-1F3FB"]
    assert santa["base"] == "1F385" and santa["skin_tones"] == ["1F3FB"]
    assert santa["en_name"] == "Santa Claus: light skin tone"
    assert santa["zh_name"] == "圣诞老人: 较浅肤色" and santa["cldr"] == "base+tones"
    assert santa["zh_keywords"] == ["圣诞", "圣诞老人", "较浅肤色"]
    assert santa["images"] == ["apple", "google", "twitter"]
    flag = got["1F1E8-1F1F3"]
    assert flag["zh_name"] is None and flag["zh_keywords"] == [] and flag["cldr"] is None
    assert flag["name"] == "cn" and flag["images"] == ["google", "twitter", "facebook"]


def test_each_style_is_one_npz_of_its_images_in_row_order(prepared) -> None:
    home, _, _ = prepared
    for style in em.STYLES:
        codes, pixels = load_images(home, style)
        expected = [u for u, r in rows(home).items() if style in r["images"]]
        assert codes.tolist() == expected
        assert pixels.shape == (len(expected), 64, 64, 4) and pixels.dtype == np.uint8
        for code, image in zip(codes, pixels, strict=True):
            assert (image == np.array(colour(style, str(code)), dtype=np.uint8)).all()


def test_the_manifest_records_versions_sha256s_licenses_and_counts(prepared) -> None:
    home, manifest, packages = prepared
    assert json.loads((home / EMOJI_DIR / MANIFEST_FILE).read_text()) == manifest
    sources = manifest["sources"]
    assert set(sources) == set(packages)
    assert sources["emoji-datasource"]["license"] == {
        "declared": "MIT",
        "license_file": "The MIT License (MIT)",
    }
    assert sources["cldr-annotations-full"]["license"]["declared"] == "Unicode-3.0"
    assert sources["cldr-annotations-full"]["version"] == "48.2.0"
    assert "Creative Commons Attribution 4.0" in manifest["image_licenses"]["twitter"]
    assert "not licensed for commercial usage" in manifest["image_licenses"]["apple"]
    assert "Apache License 2.0" in manifest["image_licenses"]["google"]
    assert manifest["counts"] == {
        "emoji": 5,
        "base_emoji": 4,
        "skin_tone_variations": 1,
        "en_names": 4,
        "en_names_base_emoji": 3,
        "zh_names": 4,
        "zh_names_base_emoji": 3,
        "images_apple": 4,
        "images_google": 5,
        "images_twitter": 5,
        "images_facebook": 4,
    }
    assert manifest["files"]["images/google.npz"]["images"] == 5
    assert manifest["files"][ROWS_FILE]["rows"] == 5
    assert manifest["warnings"] == []


def test_a_second_run_does_nothing(prepared, monkeypatch: pytest.MonkeyPatch) -> None:
    home, manifest, packages = prepared
    monkeypatch.setattr(em, "read_members", lambda *a: pytest.fail("rebuilt"))
    assert prepare_emoji(home, packages=packages) == manifest


def test_a_changed_output_or_style_list_is_rebuilt(tmp_path: Path) -> None:
    packages = fake_packages(tmp_path / "fake")
    first = prepare_emoji(tmp_path, ["twitter"], packages=packages)
    assert list(first["files"]) == ["emoji.jsonl", "images/twitter.npz"]
    assert rows(tmp_path)["1F600"]["images"] == ["twitter"]
    (tmp_path / EMOJI_DIR / "images" / "twitter.npz").write_bytes(b"damaged")
    again = prepare_emoji(tmp_path, ["twitter"], packages=packages)
    assert again["files"] == first["files"]
    assert load_images(tmp_path, "twitter")[1].shape == (5, 64, 64, 4)
    both = prepare_emoji(tmp_path, ["google", "twitter"], packages=packages)
    assert both["styles"] == ["google", "twitter"] and "images/google.npz" in both["files"]


def test_a_tarball_that_is_not_the_pinned_one_is_refused(tmp_path: Path) -> None:
    fake_packages(tmp_path / "packages")  # in the download folder, under the real names
    with pytest.raises(DataError, match=r"sha256 .* expected 2006725061dc.*delete the file"):
        prepare_emoji(tmp_path)
    assert not (tmp_path / EMOJI_DIR / MANIFEST_FILE).exists()


def test_without_npm_the_error_says_how_to_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("llmos.data.materials.shutil.which", lambda name: None)
    with pytest.raises(DataError, match=r"npm, which is not installed .*without --with-emoji"):
        prepare_emoji(tmp_path)


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no emoji style 'android'"):
        prepare_emoji(tmp_path, ["android"])
    with pytest.raises(DataError, match="--with-emoji"):
        load_images(tmp_path, "twitter")
    packages = fake_packages(tmp_path / "fake", broken_png=True)
    with pytest.raises(DataError, match=r"img/google/64/1f600\.png is not a readable PNG"):
        prepare_emoji(tmp_path, ["google"], packages=packages)
    assert not (tmp_path / EMOJI_DIR / MANIFEST_FILE).exists()
