"""Vector index and semantic search: exact cosine top-k, persistence, rebuild on change."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from llmos.cli import main
from llmos.errors import CheckpointError, DataError
from llmos.recipes.search import build_index, search
from llmos.store.vectors import DocumentIndex, VectorIndex


def test_index_equals_brute_force_cosine_and_persists(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(200, 16)).astype(np.float32)
    q = rng.normal(size=(5, 16)).astype(np.float32)
    ids = [f"d{i}" for i in range(200)]
    index = VectorIndex.build(v, ids, {"corpus": "x"})
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    qs = q / np.linalg.norm(q, axis=1, keepdims=True)
    expected = np.argsort(-(qs @ unit.T), axis=1)[:, :7]
    got = index.search(q, 7)
    assert [[i for i, _ in row] for row in got] == [[ids[j] for j in row] for row in expected]
    index.save(tmp_path / "ix")
    again = VectorIndex.load(tmp_path / "ix")
    reloaded = again.search(q, 7)
    assert [[i for i, _ in r] for r in reloaded] == [[i for i, _ in r] for r in got]
    np.testing.assert_allclose(
        [[s for _, s in r] for r in reloaded],
        (qs @ unit.T)[np.arange(5)[:, None], expected],
        atol=1e-5,
    )
    assert again.source == {"corpus": "x"}
    (tmp_path / "ix" / "meta.json").unlink()  # as if a save was interrupted
    with pytest.raises(CheckpointError, match="not a complete vector index"):
        VectorIndex.load(tmp_path / "ix")
    with pytest.raises(Exception, match="ids must be unique"):
        VectorIndex.build(v[:2], ["a", "a"], {})


def test_a_document_index_keeps_its_texts_beside_the_vectors(tmp_path: Path) -> None:
    docs = [{"id": "a", "text": "今天老师参观城市。"}, {"id": "b", "text": "the market grew"}]
    v = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    DocumentIndex.build(v, docs, {"corpus": "x"}).save(tmp_path / "ix")
    lines = (tmp_path / "ix" / "docs.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == docs
    again = DocumentIndex.load(tmp_path / "ix")
    assert again.texts == {"a": "今天老师参观城市。", "b": "the market grew"}
    assert again.search(np.array([[0.1, 1.0]]), 1) == [
        [{"id": "b", "score": pytest.approx(0.995, abs=1e-3), "text": "the market grew"}]
    ]
    (tmp_path / "ix" / "docs.jsonl").unlink()  # an index without its texts still answers ids
    assert DocumentIndex.load(tmp_path / "ix").search(v[:1], 1)[0][0]["text"] == ""


def test_search_finds_documents_and_rebuilds_when_the_corpus_changes(
    tiny_encoder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = tmp_path / "docs.jsonl"
    docs = ["今天老师参观城市。", "记者研究经济。", "the market grew", "我们喜欢音乐和艺术。"]
    corpus.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "text": t}, ensure_ascii=False) + "\n"
            for i, t in enumerate(docs)
        ),
        encoding="utf-8",
    )
    out = tmp_path / "ix"
    build_index(tiny_encoder, corpus, out)
    hits = search(out, docs, k=2)
    assert [h[0]["id"] for h in hits] == ["q0", "q1", "q2", "q3"]  # each finds itself first
    assert all(h[0]["score"] == pytest.approx(1.0, abs=1e-4) for h in hits)
    assert hits[1][0]["text"] == "记者研究经济。"
    with corpus.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "new", "text": "农民保护环境。"}, ensure_ascii=False) + "\n")
    with caplog.at_level(logging.WARNING, logger="llmos.search"):
        hit = search(out, ["农民保护环境。"], k=1)[0][0]
    assert "rebuilding" in caplog.text and hit["id"] == "new"
    assert len(VectorIndex.load(out).ids) == 5


def test_index_and_search_cli(tiny_encoder: Path, tmp_path: Path, capsys) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("今天老师参观城市。\n记者研究经济。\n", encoding="utf-8")
    out = tmp_path / "ix"
    assert (
        main(["index", "build", str(tiny_encoder), "--corpus", str(corpus), "--out", str(out)]) == 0
    )
    capsys.readouterr()
    assert main(["search", str(out), "记者研究经济。", "--k", "1", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["hits"][0]["id"] == "2"  # line numbers are the ids of a text file
    corpus.write_text("a\na\n", encoding="utf-8")
    bad = tmp_path / "dup.jsonl"
    bad.write_text('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n')
    assert main(["index", "build", str(tiny_encoder), "--corpus", str(bad), "--out", str(out)]) == 2
    assert "id '1' appears more than once" in capsys.readouterr().err
    with pytest.raises(DataError, match="corpus file not found"):
        build_index(tiny_encoder, tmp_path / "missing.txt", out)
