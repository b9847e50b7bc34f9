"""Material suggestions: passages cut with their offsets, the poetry's real JSON format and its
OpenCC conversion, hybrid search with known answers, users' documents kept apart and followed
as they change, the saved index, and the command line's errors. The encoder is a character
histogram (a real, if crude, embedding: texts sharing characters are near), so every test runs
in milliseconds without a model."""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from llmos.apps.write.materials import (
    BM25_WEIGHTS,
    LEXICAL_UNITS,
    MAX_CHARS,
    MaterialIndex,
    MaterialsError,
    chunk,
    same_text,
)
from llmos.apps.write.suggestions import Materials
from llmos.cli import main
from llmos.data.materials import SourceDocument, poetry_files, read_poems, to_simplified
from llmos.errors import CheckpointError, DataError
from llmos.store.db import Store
from llmos.store.documents import WriteDocuments


class CharEmbedder:
    """Each text as the histogram of its characters hashed into 256 buckets, normalized;
    counts the passages it embeds."""

    name = "char-histogram-256"

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def __call__(self, texts: list[str], kind: str) -> np.ndarray:
        if kind == "passage":
            self.embedded += texts
        out = np.zeros((len(texts), 256), dtype=np.float32)
        for i, t in enumerate(texts):
            for c in t:
                if not c.isspace() and c not in "，。！？、：；“”":
                    out[i, ord(c) % 256] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def doc(corpus: str, name: str, *paragraphs: str) -> SourceDocument:
    return SourceDocument(corpus, name, name.upper(), paragraphs)


SHARED = [
    doc(
        "sanguo",
        "war",
        "刘备关羽张飞在桃园结义，誓同生死，共图大事。" * 6,
        "张飞大怒，挺矛直取敌将，关羽挥刀相助，刘备在后督战。" * 6,
    ),
    doc(
        "peoples_daily",
        "econ",
        "国家统计局公布去年国内生产总值增长，经济运行总体平稳，物价保持稳定。" * 5,
        "专家认为，今年经济增长的基础仍然稳固，消费和投资将继续扩大。" * 5,
    ),
    doc("tang", "moon", "床前明月光，疑是地上霜。", "举头望明月，低头思故乡。"),
    doc("songci", "river", "大江东去，浪淘尽，千古风流人物。", "故垒西边，人道是，三国周郎赤壁。"),
]


@pytest.fixture()
def shared() -> MaterialIndex:
    index = MaterialIndex(CharEmbedder.name)
    index.sync(SHARED, CharEmbedder())
    return index


# --- passages ------------------------------------------------------------------------------------


def test_chunks_are_slices_of_the_document_at_their_offsets() -> None:
    paragraphs = [
        "短段。",
        "另一个短段。",
        "长" * 235 + "。" + "句" * 200 + "。" + "尾" * 600,
        "末段。",
    ]
    text = "\n".join(paragraphs)
    passages = chunk(paragraphs)
    assert all(text[o : o + len(t)] == t for o, t in passages)
    assert all(len(t) <= MAX_CHARS for _, t in passages)
    # every non-newline character is in exactly one passage
    covered = "".join(t.replace("\n", "") for _, t in passages)
    assert covered == text.replace("\n", "")
    assert passages[0] == (0, "短段。\n另一个短段。")  # short paragraphs merge
    assert passages[1][1] == "长" * 235 + "。"  # a long paragraph is cut at its sentence end
    assert passages[3][1] == "尾" * MAX_CHARS  # a sentence too long is cut anywhere


def test_the_paragraph_itself_is_recognised_but_not_a_shared_phrase() -> None:
    paragraph = "国家统计局公布去年国内生产总值增长，经济运行总体平稳。"
    assert same_text(paragraph, "  " + paragraph + "\n")
    assert same_text(paragraph + "物价保持稳定。", paragraph)  # a passage holding it
    assert not same_text("国家统计局公布", "国家统计局公布的数字很好，大家都很满意。")  # < 20


# --- the poetry package --------------------------------------------------------------------------


def test_opencc_turns_a_known_traditional_line_into_its_simplified_form() -> None:
    assert to_simplified("牀前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。") == (
        "床前明月光，疑是地上霜。举头望明月，低头思故乡。"
    )
    assert to_simplified("大江东去") == "大江东去"  # simplified text stays


def poetry_tarball(path: Path) -> Path:
    """A tarball laid out as chinese-poetry 2.0.1's, with its JSON format."""
    files = {
        "package/dist/quantangshi/poet.tang.0.json": [
            {
                "author": "李白",
                "paragraphs": ["牀前明月光，疑是地上霜。", "舉頭望明月，低頭思故鄉。"],
                "title": "靜夜思",
                "id": "a",
            },
            {"author": "無名", "paragraphs": [], "title": "空", "id": "b"},
        ],
        "package/dist/quantangshi/poet.tang.1000.json": [
            {"author": "杜甫", "paragraphs": ["國破山河在，城春草木深。"], "title": "春望"}
        ],
        "package/dist/quantangshi/authors.tang.json": [{"name": "李白", "desc": "..."}],
        "package/dist/songci/ci.song.0.json": [
            {"author": "苏轼", "paragraphs": ["大江東去，浪淘盡。"], "rhythmic": "念奴嬌"}
        ],
        "package/dist/songci/ci.song.2019y.json": [{"author": "x", "paragraphs": ["不读"]}],
    }
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            raw = json.dumps(data, ensure_ascii=False).encode()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return path


def test_the_poetry_reader_reads_the_packages_format_in_file_order(tmp_path: Path) -> None:
    files = poetry_files(poetry_tarball(tmp_path / "chinese-poetry-2.0.1.tgz"), ["tang", "songci"])
    assert sorted(files) == [
        "dist/quantangshi/poet.tang.0.json",
        "dist/quantangshi/poet.tang.1000.json",
        "dist/songci/ci.song.0.json",
    ]
    tang = read_poems(files, "tang")
    assert [(d.doc, d.title) for d in tang] == [
        ("tang-000001", "静夜思 · 李白"),
        ("tang-000002", "春望 · 杜甫"),  # the empty poem is skipped
    ]
    assert tang[0].paragraphs == ("床前明月光，疑是地上霜。", "举头望明月，低头思故乡。")
    (ci,) = read_poems(files, "songci")
    assert (ci.title, ci.paragraphs) == ("念奴娇 · 苏轼", ("大江东去，浪淘尽。",))
    with pytest.raises(DataError, match="no poetry collection 'yuan'"):
        read_poems(files, "yuan")
    with pytest.raises(DataError, match="poem 0"):
        read_poems({"dist/songci/ci.song.0.json": b'[{"paragraphs": "not a list"}]'}, "songci")


# --- search --------------------------------------------------------------------------------------


def test_a_documents_other_passage_finds_it(shared: MaterialIndex) -> None:
    embed = CharEmbedder()
    query = "关羽张飞随刘备出战，张飞挺矛大喝，关羽挥刀，杀败敌将。"
    for mode in ("hybrid", "bm25", "dense"):
        found = shared.search(query, embed([query], "query")[0], k=2, mode=mode)
        assert found[0].doc == "war", mode
        assert (found[0].corpus, found[0].title) == ("sanguo", "WAR")
    text = "\n".join(SHARED[0].paragraphs)
    top = found[0]
    assert text[top.offset : top.offset + len(top.text)] == top.text


def test_the_paragraph_being_written_is_not_suggested(shared: MaterialIndex) -> None:
    embed = CharEmbedder()
    own = SHARED[1].paragraphs[0]
    found = shared.search(own, embed([own], "query")[0], k=4)
    assert own not in [s.text for s in found]
    assert found[0].doc == "econ"  # its document's other passage, not itself
    assert found[0].text == SHARED[1].paragraphs[1]


def test_a_saved_index_answers_as_the_built_one(shared: MaterialIndex, tmp_path: Path) -> None:
    shared.save(tmp_path / "idx")
    loaded = MaterialIndex.load(tmp_path / "idx")
    embed = CharEmbedder()
    q = "明月照故乡"
    v = embed([q], "query")[0]
    assert [s.as_json() for s in loaded.search(q, v)] == [s.as_json() for s in shared.search(q, v)]
    (tmp_path / "idx" / "meta.json").unlink()
    with pytest.raises(CheckpointError, match=r"no meta\.json"):
        MaterialIndex.load(tmp_path / "idx")


def test_bm25_reads_characters_and_pairs_where_jieba_words_share_nothing() -> None:
    """jieba keeps 江东父老 and 大江东去 whole, so by words the query shares nothing with the
    ci; by characters it shares 江, 东 and 江东 with it alone."""
    embed = CharEmbedder()
    q = "江东父老"
    v = embed([q], "query")[0]
    by = {}
    for units in ("words", "chars"):
        index = MaterialIndex(CharEmbedder.name, units=units)
        index.sync(SHARED, embed)
        by[units] = [s.doc for s in index.search(q, v, k=3, mode="bm25")]
    assert LEXICAL_UNITS == "chars"
    assert by == {"words": [], "chars": ["river"]}


def test_the_fusion_weight_follows_the_index_units(shared: MaterialIndex) -> None:
    embed = CharEmbedder()
    q = "大江东去，关羽挥刀"
    v = embed([q], "query")[0]
    weights = {w: [s.as_json() for s in shared.search(q, v, bm25_weight=w)] for w in (0.1, 4.0)}
    assert weights[0.1] != weights[4.0]  # the weight matters for this query
    assert [s.as_json() for s in shared.search(q, v)] == weights[BM25_WEIGHTS["chars"]]
    words = MaterialIndex(CharEmbedder.name, units="words")
    words.sync(SHARED, embed)
    assert [s.as_json() for s in words.search(q, v)] == [
        s.as_json() for s in words.search(q, v, bm25_weight=BM25_WEIGHTS["words"])
    ]


def test_an_index_saved_with_jieba_words_is_cut_into_characters_when_loaded(
    tmp_path: Path,
) -> None:
    """An index saved before the units were stored (jieba words, no "units" in meta.json) is
    searched as one built over characters, without embedding anything again; loaded with
    units=None it stays as saved."""
    embed = CharEmbedder()
    words = MaterialIndex(CharEmbedder.name, units="words")
    words.sync(SHARED, embed)
    words.save(tmp_path / "idx")
    meta_path = tmp_path / "idx" / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    assert meta["units"] == "words"
    del meta["units"]  # as written before this field existed
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    chars = MaterialIndex(CharEmbedder.name)
    chars.sync(SHARED, embed)
    loaded, kept = MaterialIndex.load(tmp_path / "idx"), MaterialIndex.load(tmp_path / "idx", None)
    assert (loaded.units, kept.units) == ("chars", "words")
    assert [r.words for r in loaded.rows.values()] == [r.words for r in chars.rows.values()]
    for q in ("举头望明月", "江东父老", "关羽张飞随刘备出战"):
        v = embed([q], "query")[0]
        got = [s.as_json() for s in loaded.search(q, v)]
        assert got == [s.as_json() for s in chars.search(q, v)]
        assert [s.as_json() for s in kept.search(q, v)] == [s.as_json() for s in words.search(q, v)]
    loaded.save(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "meta.json").read_text("utf-8"))["units"] == "chars"
    meta["units"] = "letters"
    meta_path.write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(CheckpointError, match="unknown lexical units 'letters'"):
        MaterialIndex.load(tmp_path / "idx")
    with pytest.raises(ValueError, match="words, chars"):
        MaterialIndex(CharEmbedder.name, units="letters")


def test_bad_requests_name_the_field(shared: MaterialIndex) -> None:
    materials = Materials(CharEmbedder(), shared)
    with pytest.raises(MaterialsError, match=r"^text:"):
        materials.suggest(None, "   ")
    with pytest.raises(MaterialsError, match=r"^k:"):
        materials.suggest(None, "明月", k=0)
    other = CharEmbedder()
    other.name = "another-encoder"
    with pytest.raises(CheckpointError, match="rebuild it"):
        Materials(other, shared)


def test_the_shared_index_is_read_when_it_appears_or_changes(
    shared: MaterialIndex, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As the server's suggestions do while a job builds the index: nothing until its
    meta.json appears, then the index; read again only when the file's content changes; one
    of another encoder refused (with a warning) until the right one is back."""
    d = tmp_path / "materials"
    materials = Materials(CharEmbedder(), shared_dir=d)
    q = "明月照故乡"
    assert materials.suggest(None, q) == [] and materials.shared is None  # not built yet
    shared.save(d)
    assert materials.suggest(None, q)[0].doc == "moon"
    held = materials.shared
    assert held is not None and held is not shared  # read from the directory
    materials.suggest(None, q)
    os.utime(d / "meta.json", ns=(0, 10**18))  # its stat changes, not its content
    materials.suggest(None, q)
    assert materials.shared is held  # not read again
    other = MaterialIndex.load(d)
    other.encoder = "another-encoder"
    other.save(d)
    with caplog.at_level(logging.WARNING, logger="llmos.apps.write"):
        assert materials.suggest(None, q) == [] and materials.shared is None
    assert f"{d} was built with another encoder (another-encoder)" in caplog.text
    shared.save(d)
    assert materials.suggest(None, q)[0].doc == "moon" and materials.shared is not None


# --- users' documents ----------------------------------------------------------------------------


def test_users_documents_are_theirs_alone_and_followed_as_they_change(
    database_url: str, shared: MaterialIndex, tmp_path: Path
) -> None:
    store = Store(database_url)
    try:
        alice, _ = store.create_user("alice")
        bob, _ = store.create_user("bob")
        docs = WriteDocuments(store)
        secret = docs.add(alice.id, "我的游记", "我们乘船游览西湖，湖光山色，苏堤春晓，断桥残雪。")
        embed = CharEmbedder()
        materials = Materials(embed, shared, docs, tmp_path / "users")
        query = "西湖的苏堤和断桥，湖光山色最美。"

        def sources(user: int) -> list[tuple[str, str]]:
            return [(s.corpus, s.doc) for s in materials.suggest(user, query, k=5)]

        assert sources(alice.id)[0] == ("user", str(secret.id))
        assert all(c != "user" for c, _ in sources(bob.id))  # never another user's text
        assert all(
            c != "user" for c, _ in [(s.corpus, s.doc) for s in materials.suggest(None, query)]
        )

        # a document added: the stale index takes it in, embedding only its passage
        embed.embedded.clear()
        added = docs.add(bob.id, "笔记", "西湖断桥边的柳树，苏堤上的桃花。")
        assert ("user", str(added.id)) in sources(bob.id)
        assert embed.embedded == ["西湖断桥边的柳树，苏堤上的桃花。"]
        embed.embedded.clear()
        sources(bob.id)
        assert embed.embedded == []  # unchanged revision: nothing rebuilt

        # removed: gone from the suggestions, and from the index saved on disk
        assert docs.remove(alice.id, secret.id)
        assert ("user", str(secret.id)) not in sources(alice.id)
        saved = MaterialIndex.load(tmp_path / "users" / f"user-{alice.id}")
        assert len(saved) == 0 and saved.version == list(docs.revision(alice.id))

        # a new process: the saved index is current, nothing is embedded again
        embed.embedded.clear()
        again = Materials(embed, shared, docs, tmp_path / "users")
        assert ("user", str(added.id)) in [(s.corpus, s.doc) for s in again.suggest(bob.id, query)]
        assert embed.embedded == []
    finally:
        store.close()


# --- command line --------------------------------------------------------------------------------


def test_suggest_without_an_index_names_the_command_that_builds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["write", "suggest", "明月", "--index", str(tmp_path / "none")]) != 0
    err = capsys.readouterr().err
    assert "llmos write materials build" in err and "Traceback" not in err
    assert main(["write", "suggest", "明月", "--k", "0"]) != 0
    assert "k:" in capsys.readouterr().err
