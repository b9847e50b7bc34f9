"""corpus/zh-poetry: the prepared Chinese corpus plus the shared corpus's poems, each poem a
document in exactly one split (the split prepare gives pretraining-only sources)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmos.data.materials import (
    DOCUMENTS_FILE,
    MANIFEST_FILE,
    MANIFEST_VERSION,
    MATERIALS_DIR,
    prepare_poetry_corpus,
)
from llmos.data.packages import sha256_file
from llmos.data.prepare import CORPUS_RATIOS, assign_split
from llmos.errors import DataError

POEMS = [(f"tang-{i:06d}", [f"第{i}首诗的第一句，", f"第{i}首诗的第二句。"]) for i in range(60)]


def materials(home: Path) -> None:
    """A prepared materials directory (documents + a manifest that says it is current)."""
    d = home / MATERIALS_DIR
    d.mkdir(parents=True)
    rows = [{"corpus": "sanguo", "doc": "sanguo-001", "title": "第一回", "paragraphs": ["话说"]}]
    rows += [{"corpus": "tang", "doc": doc, "title": doc, "paragraphs": p} for doc, p in POEMS]
    (d / DOCUMENTS_FILE).write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "poetry": ["tang", "songci"],
        "sha256": sha256_file(d / DOCUMENTS_FILE),
    }
    (d / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")


def test_poems_join_the_prose_each_in_its_split(tmp_path: Path) -> None:
    zh = tmp_path / "corpus" / "zh"
    zh.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (zh / f"{split}.txt").write_text(
            f"{split}的第一句。\n第二句。\n\n另一篇。\n", encoding="utf-8"
        )
    materials(tmp_path)
    out = prepare_poetry_corpus(tmp_path)
    assert out == tmp_path / "corpus" / "zh-poetry"
    seen = []
    for split in ("train", "valid", "test"):
        docs = (out / f"{split}.txt").read_text(encoding="utf-8").rstrip("\n").split("\n\n")
        assert docs[:2] == [f"{split}的第一句。\n第二句。", "另一篇。"]  # the prose, as it was
        poems = docs[2:]
        assert all(assign_split(p, CORPUS_RATIOS) == split for p in poems)
        seen += poems
    assert sorted(seen) == sorted("\n".join(p) for _, p in POEMS)  # each poem once, no 三国
    assert "话说" not in "".join(seen)


def test_without_the_prepared_corpus_it_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="run `llmos data prepare` first"):
        prepare_poetry_corpus(tmp_path)
