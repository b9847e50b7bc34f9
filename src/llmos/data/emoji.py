"""Emoji images with their names in English and Chinese, for image-text alignment (issue 22).

Opt-in (``llmos data prepare --with-emoji``): the six npm tarballs weigh 370 MB. Layout under
the data directory (``$LLMOS_HOME/data``)::

    packages/emoji-datasource*-16.0.0.tgz, cldr-annotations-full-48.2.0.tgz   (sha256 pinned)
    emoji/emoji.jsonl          one emoji a line (the fields: :func:`emoji_rows`)
    emoji/images/<style>.npz   ``unified`` (N,) codes and ``pixels`` (N, 64, 64, 4) uint8 RGBA
    emoji/manifest.json        written last: versions, sha256s, licenses, counts, files

Sources: ``emoji-datasource`` (https://github.com/iamcal/emoji-data, MIT) lists 1,911 emoji
and 1,875 skin-tone variations with names, categories and which vendor draws each;
``emoji-datasource-{apple,google,twitter,facebook}`` carry one 64 px PNG per emoji and style
(``img/<style>/64/``, used as they are; the sprite sheets are not needed). Unicode CLDR's
``cldr-annotations-full`` gives each emoji a short name (``tts``) and keywords per language;
``en`` and ``zh`` (simplified) are kept. CLDR lists single emoji only (no flags, keycaps or
ZWJ sequences: those are in its derived annotations, another package), keyed without the
variation selector U+FE0F. A skin-tone variation gets its base emoji's CLDR name and the
tones' names joined as CLDR's derived annotations do (``Santa Claus: light skin tone``).

Images go into one compressed npz per style rather than 3,786 PNG files: measured on the
Twitter set, the npz is 9.9 MB (the PNGs 10.4 MB), loads in 0.31 s as one array ready for a
tensor, where decoding the PNGs takes 0.40 s plus opening 3,786 files, and a style is one
atomic write.

Licenses (recorded in the manifest from the packages' own files): the data and code of
emoji-datasource are MIT; the images are their vendors' (Apple: not licensed for commercial
use; Google's Noto: Apache 2.0; Twitter's Twemoji: CC-BY 4.0; Facebook: no clear license);
CLDR is under the Unicode License v3.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from llmos.data.materials import NpmPackage, fetch_npm
from llmos.data.packages import sha256_file
from llmos.errors import DataError
from llmos.files import atomic_path, atomic_write, atomic_write_json
from llmos.paths import data_dir

logger = logging.getLogger("llmos.data")

EMOJI_DIR = "emoji"
ROWS_FILE, MANIFEST_FILE = "emoji.jsonl", "manifest.json"
MANIFEST_VERSION = 1
IMAGE_SIZE = 64
LANGUAGES = ("en", "zh")

METADATA = NpmPackage(
    "emoji-datasource",
    "16.0.0",
    "2006725061dc0098daa832d65f854a7bec0740af2eb47cb5b23d89f7e2c849f9",
)
STYLES: dict[str, NpmPackage] = {
    "apple": NpmPackage(
        "emoji-datasource-apple",
        "16.0.0",
        "b34d1665e136f163b0d4433318df151895b785186e8c729b2211b43017945075",
    ),
    "google": NpmPackage(
        "emoji-datasource-google",
        "16.0.0",
        "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
    ),
    "twitter": NpmPackage(
        "emoji-datasource-twitter",
        "16.0.0",
        "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877",
    ),
    "facebook": NpmPackage(
        "emoji-datasource-facebook",
        "16.0.0",
        "017038cf5a4e7fcf03dd9133cbed43d4c281c4b3ce7b927c7160261b92b8821e",
    ),
}
CLDR = NpmPackage(
    "cldr-annotations-full",
    "48.2.0",
    "28576e51225deb51e3ddd734b0f824a0079682cb5d8c27faa9f68149317a14d1",
)
# The word that names each style's vendor in emoji-datasource's README license list.
_VENDORS = {"apple": "Apple", "google": "Google", "twitter": "Twitter", "facebook": "Facebook"}
_WITHOUT_NPM = "leave the emoji out (`llmos data prepare` without --with-emoji)"
_VS16 = "\ufe0f"


def read_members(tarball: Path, package: str, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """The files of an npm tarball whose names (without the ``package/`` folder) ``wanted``
    accepts, read in one pass (the tarball is decompressed once, not once a file).

    Raises:
        DataError: the tarball cannot be read.
    """
    files = {}
    try:
        with tarfile.open(tarball, "r:gz") as tf:
            for member in tf:
                name = member.name.removeprefix("package/")
                if member.isfile() and wanted(name):
                    fh = tf.extractfile(member)
                    if fh is not None:
                        files[name] = fh.read()
    except (OSError, tarfile.TarError, EOFError) as e:
        raise DataError(f"{package}: cannot read {tarball}: {e}") from e
    return files


def _json(files: Mapping[str, bytes], name: str, package: str) -> Any:
    if name not in files:
        raise DataError(f"{package}: {name} not found in its tarball")
    try:
        return json.loads(files[name].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{package}: {name} is not valid JSON: {e}") from e


def _license(files: Mapping[str, bytes], package: str) -> dict[str, str]:
    """The license package.json declares, and the first line of its LICENSE file."""
    declared = str(_json(files, "package.json", package).get("license") or "not declared")
    text = files.get("LICENSE", b"").decode("utf-8", "replace").strip()
    return {"declared": declared, "license_file": text.splitlines()[0] if text else "none"}


def image_licenses(readme: str) -> dict[str, str]:
    """Each style's image license as emoji-datasource's README states it (its ``* Apple
    images, ...`` lines); a style the README does not mention is left out."""
    found = {}
    for line in readme.splitlines():
        line = line.strip()
        if not line.startswith("* ") or " images" not in line:
            continue
        for style, vendor in _VENDORS.items():
            if vendor in line.split(" images", 1)[0] and style not in found:
                found[style] = line[2:]
    return found


def _chars(unified: str) -> str:
    """``1F385-1F3FB`` -> the emoji's characters."""
    return "".join(chr(int(cp, 16)) for cp in unified.split("-"))


def _cldr_entry(annotations: Mapping[str, Any], emoji: str) -> dict[str, Any] | None:
    """CLDR's name and keywords of ``emoji`` (looked up as is, then without U+FE0F)."""
    entry = annotations.get(emoji) or annotations.get(emoji.replace(_VS16, ""))
    if not isinstance(entry, dict) or not entry.get("tts"):
        return None
    return {"name": entry["tts"][0], "keywords": list(entry.get("default") or [])}


def emoji_rows(
    emoji_json: list[dict[str, Any]],
    annotations: Mapping[str, Mapping[str, Any]],
    styles: Iterable[str],
) -> list[dict[str, Any]]:
    """One row per emoji and per skin-tone variation, in emoji-datasource's sort order.

    A row: ``unified`` (``1F385-1F3FB``), ``emoji`` (its characters), ``base`` (the unified
    code of the emoji it varies; its own for a base emoji), ``skin_tones`` (the modifier codes,
    empty for a base emoji), ``category``, ``subcategory``, ``name`` (emoji-datasource's,
    lower case), ``short_name``, per language in ``annotations`` ``<lang>_name`` and
    ``<lang>_keywords`` (None / [] where CLDR has none), ``cldr`` (``exact``, ``base+tones``
    or None) and ``images`` (the styles that draw it).

    Args:
        emoji_json: emoji-datasource's ``emoji.json``.
        annotations: per language, CLDR's ``annotations`` object (emoji -> tts, default).
        styles: the styles whose ``has_img_<style>`` flags are read.
    """
    styles = list(styles)
    rows = []
    for e in sorted(emoji_json, key=lambda e: (e.get("sort_order", 0), e["unified"])):
        variants = [(e["unified"], [], e)]
        for tones, v in sorted((e.get("skin_variations") or {}).items()):
            variants.append((v["unified"], tones.split("-"), v))
        for unified, tones, info in variants:
            row: dict[str, Any] = {
                "unified": unified,
                "emoji": _chars(unified),
                "base": e["unified"],
                "skin_tones": tones,
                "category": e.get("category"),
                "subcategory": e.get("subcategory"),
                "name": (e.get("name") or e.get("short_name") or "").lower(),
                "short_name": e.get("short_name"),
            }
            match = None
            for lang, ann in annotations.items():
                entry = _cldr_entry(ann, _chars(e["unified"]))
                tone_names = [_cldr_entry(ann, _chars(t)) for t in tones]
                if entry is not None and all(tone_names):
                    if tones:  # CLDR's derived form: "Santa Claus: light skin tone"
                        # Two people of one tone (1F3FB-1F3FB) name it once, as CLDR does.
                        names = list(dict.fromkeys(t["name"] for t in tone_names if t))
                        entry = {
                            "name": f"{entry['name']}: {', '.join(names)}",
                            "keywords": entry["keywords"] + names,
                        }
                    match = "base+tones" if tones else "exact"
                else:
                    entry = None
                row[f"{lang}_name"] = entry["name"] if entry else None
                row[f"{lang}_keywords"] = entry["keywords"] if entry else []
            row["cldr"] = match
            row["images"] = [s for s in styles if info.get(f"has_img_{s}")]
            rows.append(row)
    return rows


def style_images(
    files: Mapping[str, bytes], style: str, rows: list[dict[str, Any]], warnings: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """The ``(unified (N,), pixels (N, 64, 64, 4) uint8 RGBA)`` of the rows drawn in ``style``,
    decoded from its ``img/<style>/64/<code>.png`` files (those ``files`` holds). A row whose
    image is missing is dropped from its ``images`` (and a warning added).

    Raises:
        DataError: a PNG that cannot be decoded or is not 64 x 64.
    """
    from PIL import Image, UnidentifiedImageError

    codes, pixels = [], []
    for row in rows:
        if style not in row["images"]:
            continue
        name = f"img/{style}/{IMAGE_SIZE}/{row['unified'].lower()}.png"
        if name not in files:
            row["images"].remove(style)
            warnings.append(f"{style}: {row['unified']} is flagged as drawn but has no {name}")
            continue
        try:
            with Image.open(io.BytesIO(files[name])) as im:
                rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(f"{STYLES[style].name}: {name} is not a readable PNG: {e}") from e
        if rgba.shape != (IMAGE_SIZE, IMAGE_SIZE, 4):
            raise DataError(
                f"{STYLES[style].name}: {name} is {rgba.shape[1]}x{rgba.shape[0]}, "
                f"expected {IMAGE_SIZE}x{IMAGE_SIZE}"
            )
        codes.append(row["unified"])
        pixels.append(rgba)
    empty = np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 4), dtype=np.uint8)
    return np.array(codes, dtype=str), np.stack(pixels) if pixels else empty


def load_images(home: Path | None, style: str) -> tuple[np.ndarray, np.ndarray]:
    """A prepared style's ``(unified (N,), pixels (N, 64, 64, 4) uint8 RGBA)``.

    Raises:
        DataError: the style was not prepared (the message says what to run).
    """
    path = (Path(home) if home is not None else data_dir()) / EMOJI_DIR / "images" / f"{style}.npz"
    if not path.is_file():
        raise DataError(f"{path} is missing: run `llmos data prepare --with-emoji` first")
    with np.load(path) as npz:
        return npz["unified"], npz["pixels"]


def _current(home: Path, styles: list[str]) -> dict[str, Any] | None:
    """The manifest if it is this version's, for these styles, and every file unchanged."""
    d = home / EMOJI_DIR
    try:
        manifest = json.loads((d / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("manifest_version") != MANIFEST_VERSION or manifest.get("styles") != styles:
        return None
    for rel, entry in manifest.get("files", {}).items():
        path = d / rel
        if not path.is_file() or sha256_file(path) != entry.get("sha256"):
            return None
    return manifest


def prepare_emoji(
    home: Path | None = None,
    styles: Iterable[str] = tuple(STYLES),
    *,
    force: bool = False,
    packages: Mapping[str, Path] | None = None,
) -> dict[str, Any]:
    """Write ``emoji/`` (see the module docstring): the rows, one npz per style, the manifest.

    Args:
        home: the data directory; default :func:`llmos.paths.data_dir`.
        styles: the image styles to prepare (a subset of :data:`STYLES`).
        force: rebuild even when the manifest says everything is in place.
        packages: tarballs already at hand by npm name (not checked against the pins); the
            others are downloaded into ``<home>/packages`` with ``npm pack`` and checked.

    Returns:
        The manifest (also written to ``<home>/emoji/manifest.json``).

    Raises:
        DataError: an unknown style, npm missing, a download that fails or does not match its
            pinned sha256, a malformed tarball.
    """
    home = Path(home) if home is not None else data_dir()
    styles = list(dict.fromkeys(styles))
    unknown = [s for s in styles if s not in STYLES]
    if unknown:
        raise DataError(f"no emoji style {unknown[0]!r} (there are: {', '.join(STYLES)})")
    if not force and (manifest := _current(home, styles)) is not None:
        logger.info("emoji already prepared: %s", home / EMOJI_DIR)
        return manifest
    given = dict(packages or {})
    specs = [METADATA, CLDR, *(STYLES[s] for s in styles)]
    tarballs = {
        s.name: Path(given.get(s.name) or fetch_npm(s, home / "packages", _WITHOUT_NPM))
        for s in specs
    }
    meta_files = ("emoji.json", "package.json", "LICENSE", "README.md")
    meta = read_members(tarballs[METADATA.name], METADATA.name, meta_files.__contains__)
    cldr_wanted = {f"annotations/{lang}/annotations.json" for lang in LANGUAGES}
    cldr = read_members(
        tarballs[CLDR.name], CLDR.name, lambda n: n in cldr_wanted or n in meta_files
    )
    annotations = {
        lang: _json(cldr, f"annotations/{lang}/annotations.json", CLDR.name)["annotations"][
            "annotations"
        ]
        for lang in LANGUAGES
    }
    emoji_json = _json(meta, "emoji.json", METADATA.name)
    rows = emoji_rows(emoji_json, annotations, styles)
    warnings: list[str] = []
    licenses = {METADATA.name: _license(meta, METADATA.name), CLDR.name: _license(cldr, CLDR.name)}
    drawn = image_licenses(meta.get("README.md", b"").decode("utf-8", "replace"))
    out = home / EMOJI_DIR
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # incomplete until the manifest is back
    files: dict[str, dict[str, Any]] = {}
    for style in styles:
        spec = STYLES[style]
        prefix = f"img/{style}/{IMAGE_SIZE}/"
        found = read_members(
            tarballs[spec.name], spec.name, lambda n, p=prefix: n.startswith(p) or n in meta_files
        )
        licenses[spec.name] = _license(found, spec.name)
        readme = found.get("README.md", b"").decode("utf-8", "replace")
        drawn.update(image_licenses(readme))
        codes, pixels = style_images(found, style, rows, warnings)
        rel = f"images/{style}.npz"
        with atomic_path(out / rel) as tmp:
            np.savez_compressed(tmp, unified=codes, pixels=pixels)
        files[rel] = {"sha256": sha256_file(out / rel), "images": len(codes)}
        logger.info("emoji: %d %s images", len(codes), style)
    for style in styles:
        if style not in drawn:
            warnings.append(f"{style}: no image license line found in the README; check it")
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    atomic_write(out / ROWS_FILE, body)
    files[ROWS_FILE] = {"sha256": hashlib.sha256(body).hexdigest(), "rows": len(rows)}
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "styles": styles,
        "image_size": IMAGE_SIZE,
        "sources": {
            s.name: {
                "package": f"npm:{s.name}",
                "version": s.version,
                "sha256": sha256_file(tarballs[s.name]),
                "license": licenses[s.name],
            }
            for s in specs
        },
        "image_licenses": {s: drawn.get(s, "unknown: see the package's README") for s in styles},
        "counts": _counts(rows, styles),
        "files": dict(sorted(files.items())),
        "warnings": warnings,
    }
    atomic_write_json(out / MANIFEST_FILE, manifest)
    logger.info("prepared %d emoji in %s", len(rows), out)
    return manifest


def _counts(rows: list[dict[str, Any]], styles: list[str]) -> dict[str, int]:
    counts = {
        "emoji": len(rows),
        "base_emoji": sum(not r["skin_tones"] for r in rows),
        "skin_tone_variations": sum(bool(r["skin_tones"]) for r in rows),
    }
    for lang in LANGUAGES:
        counts[f"{lang}_names"] = sum(r[f"{lang}_name"] is not None for r in rows)
        counts[f"{lang}_names_base_emoji"] = sum(
            r[f"{lang}_name"] is not None and not r["skin_tones"] for r in rows
        )
    for style in styles:
        counts[f"images_{style}"] = sum(style in r["images"] for r in rows)
    return counts
