"""Passage pairs of the shared material corpus for ``task: embedding``: two neighbouring
passages of one document, so that an encoder learns what makes passages one document's (a
poem's rhyme, metre and imagery; an article's names and topic).

    python bench/materials_pairs.py      # -> $LLMOS_HOME/data/tasks/materials-pairs
    llmos finetune --config configs/finetune/embed-materials-zh.yaml

Only documents that ``bench/write_suggest_eval.py`` does not index contribute (its sample, the
same salted hash, is excluded whole), so the bench's valid and test paragraphs and every
passage they are searched among stay unseen. Passages are cut as the index cuts them
(:func:`~llmos.apps.write.materials.chunk`). Per document: its adjacent passage pairs, at most
``--per-doc`` of them, drawn by hash, each read in a direction drawn by hash (the bench holds
out any passage of a document); every pair is labelled with its document, so two pairs of one
document are never each other's negatives. ``--valid`` documents per group, drawn by hash,
give the validation pairs and no training pair. The corpus has only ~1,000 long poems outside
the sample; ``--song`` adds long poems of the Song shi (宋诗, a chinese-poetry collection the
corpus does not hold) to the training pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from write_suggest_eval import GROUPS, key, parser, sample

from llmos.apps.write.materials import chunk
from llmos.data.materials import (
    DOCUMENTS_FILE,
    MATERIALS_DIR,
    POETRY,
    SourceDocument,
    fetch_npm,
    poetry_files,
    read_documents,
    read_poems,
)
from llmos.paths import data_dir

PAIR_SALT = "materials-pairs"


def document_pairs(doc: SourceDocument, per_doc: int) -> list[dict[str, str]]:
    """Up to ``per_doc`` adjacent passage pairs of ``doc``, as ``read_pairs`` rows."""
    passages = [text for _, text in chunk(doc.paragraphs)]
    starts = sorted(range(len(passages) - 1), key=lambda i: key(PAIR_SALT, doc.doc, i))
    rows = []
    for i in sorted(starts[:per_doc]):
        a, b = passages[i], passages[i + 1]
        if int(key(PAIR_SALT, doc.doc, i, "direction"), 16) % 2:
            a, b = b, a
        rows.append({"query": a, "positive": b, "label": doc.doc})
    return rows


def song_poems(n: int) -> list[SourceDocument]:
    """``n`` long poems (two passages or more) of the Song shi, a chinese-poetry collection
    the shared corpus does not hold, from the tarball ``prepare_materials`` keeps: its files
    read in order until there are enough, not the whole collection (OpenCC converts each)."""
    files = poetry_files(fetch_npm(POETRY, data_dir() / "packages"), ["song"])
    names = sorted(files, key=lambda f: int(f.rsplit(".", 2)[-2]))
    taken, found = {}, 0
    for name in names:  # read once more together below: ids count across the files read
        if found >= n:
            break
        taken[name] = files[name]
        found += sum(len(chunk(d.paragraphs)) >= 2 for d in read_poems({name: files[name]}, "song"))
    long = [d for d in read_poems(taken, "song") if len(chunk(d.paragraphs)) >= 2]
    return long[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out",
        type=Path,
        help="a directory for train/valid.jsonl (default: the "
        "dataset materials-pairs under $LLMOS_HOME/data/tasks)",
    )
    ap.add_argument(
        "--per-doc",
        type=int,
        nargs=3,
        default=(4, 1, 2),
        metavar=("SANGUO", "PD", "POEM"),
        help="pairs per 三国 chapter, People's Daily article, poem",
    )
    ap.add_argument("--articles", type=int, default=1200, help="People's Daily articles used")
    ap.add_argument(
        "--valid",
        type=int,
        nargs=3,
        default=(6, 60, 90),
        metavar=("SANGUO", "PD", "POEM"),
        help="validation documents per group",
    )
    ap.add_argument(
        "--song",
        type=int,
        default=1500,
        help="long Song shi poems added to the poems' training pairs",
    )
    args = ap.parse_args()

    bench = parser().parse_args([])  # the bench's sample sizes: its indexed documents
    indexed = sample(bench)
    excluded = {(d.corpus, d.doc) for d in indexed}
    # A text the bench indexes may also stand in another document (a reprinted paragraph, a
    # "）。"): no pair holds one.
    seen = {text for d in indexed for _, text in chunk(d.paragraphs)}
    docs = read_documents(data_dir() / MATERIALS_DIR / DOCUMENTS_FILE)
    by: dict[str, list[SourceDocument]] = {"sanguo": [], "peoples_daily": [], "poetry": []}
    for d in sorted(docs, key=lambda d: key(PAIR_SALT, d.doc)):
        if (d.corpus, d.doc) not in excluded and len(chunk(d.paragraphs)) >= 2:
            by[GROUPS.get(d.corpus, "poetry")].append(d)
    by["peoples_daily"] = by["peoples_daily"][: args.articles + args.valid[1]]
    if args.song:  # after the valid poems: train only
        by["poetry"] += song_poems(args.song)
    splits: dict[str, list[dict[str, str]]] = {"train": [], "valid": []}
    counts = {}
    for (group, group_docs), per_doc, n_valid in zip(
        by.items(), args.per_doc, args.valid, strict=True
    ):
        valid = [r for d in group_docs[:n_valid] for r in document_pairs(d, 1)]
        train = [r for d in group_docs[n_valid:] for r in document_pairs(d, per_doc)]
        valid = [r for r in valid if r["query"] not in seen and r["positive"] not in seen]
        train = [r for r in train if r["query"] not in seen and r["positive"] not in seen]
        splits["valid"] += valid
        splits["train"] += train
        counts[group] = {"documents": len(group_docs), "train": len(train), "valid": len(valid)}
    out = args.out or data_dir() / "tasks" / "materials-pairs"
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        rows.sort(key=lambda r: key(PAIR_SALT, r["label"], r["query"]))
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    print(json.dumps({"excluded": len(excluded), **counts}, ensure_ascii=False))


if __name__ == "__main__":
    main()
