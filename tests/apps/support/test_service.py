"""The knowledge-base service on a real store and a real (tiny, random-init) encoder: the
hybrid ranking checked against BM25 and cosine similarity computed independently, incremental
index updates, restarts, changes made by another process, and per-owner isolation."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import bm25s
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from llmos.apps.support.index import BM25_WEIGHT, RRF_K
from llmos.apps.support.indexes import UnknownEncoder
from llmos.apps.support.local import PipelineEmbedder
from llmos.apps.support.service import SupportService
from llmos.errors import DataError, LlmosError
from llmos.store.db import Store
from llmos.store.kb import FaqPair, UnknownKnowledgeBase
from llmos.text.words import words

PAIRS = [
    FaqPair("老师今天讨论经济", "经济讨论在周一。", ("老师讨论经济吗",)),
    FaqPair("学生经常学习历史", "历史课每天都有。"),
    FaqPair("公司去年发展市场", "市场发展很快。", ("公司发展市场",)),
    FaqPair("农民一直保护环境", "环境保护是大事。"),
    FaqPair("记者现在介绍艺术", "艺术介绍在晚上。"),
]


class Counting:
    """A real embedder that records every text it is asked to embed."""

    def __init__(self, inner: PipelineEmbedder) -> None:
        self.inner, self.name, self.seen = inner, inner.name, []

    def __call__(self, texts: list[str], kind: str) -> np.ndarray:
        self.seen += [(t, kind) for t in texts]
        return self.inner(texts, kind)


@pytest.fixture(scope="module")
def embedder(tiny_encoder: Path) -> PipelineEmbedder:
    return PipelineEmbedder(tiny_encoder)


Setup = tuple[Store, int, SupportService, Counting]


@pytest.fixture()
def setup(tmp_path: Path, embedder: PipelineEmbedder) -> Iterator[Setup]:
    """A store with the user "shop" and its empty knowledge base "faq", and the service."""
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    owner, _ = store.create_user("shop")
    embed = Counting(embedder)
    svc = SupportService(store, embed, tmp_path / "indexes")
    svc.create_kb(owner.id, "faq")
    yield store, owner.id, svc, embed
    store.close()


def texts_of(pair: FaqPair) -> list[tuple[str, str]]:
    """The rows an entry is indexed as: (text, embedding kind)."""
    return (
        [(pair.question, "query")]
        + [(a, "query") for a in pair.alternatives]
        + [(pair.answer, "passage")]
    )


def test_hits_fuse_independent_bm25_and_cosine_ranks(
    setup: Setup, embedder: PipelineEmbedder
) -> None:
    _, owner, svc, _ = setup
    ids = svc.add(owner, "faq", PAIRS)
    query = "老师和学生讨论经济历史"
    hits = svc.search(owner, "faq", query, k=len(PAIRS))
    assert sorted(h.entry for h in hits) == sorted(ids)

    # the reference: every entry's rows, scored outside the index
    rows = [(e, t, kind) for e, p in zip(ids, PAIRS, strict=True) for t, kind in texts_of(p)]
    ref = bm25s.BM25()
    ref.index([words(t) for _, t, _ in rows], show_progress=False)
    bm25 = ref.get_scores([w for w in words(query) if w in ref.vocab_dict])
    vectors = np.concatenate([embedder([t], kind) for _, t, kind in rows])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    q = embedder([query], "query")[0]
    cosine = vectors @ (q / np.linalg.norm(q))

    def best(scores: np.ndarray) -> dict[int, float]:
        out: dict[int, float] = {}
        for (e, _, _), s in zip(rows, scores, strict=True):
            out[e] = max(out.get(e, -np.inf), float(s))
        return out

    best_bm25, best_cos = best(bm25), best(cosine)
    # ranks as the index breaks ties: by score, then by entry id
    dense_order = sorted(best_cos, key=lambda e: (-best_cos[e], e))
    lexical = {e: s for e, s in best_bm25.items() if s > 0}
    bm25_order = sorted(lexical, key=lambda e: (-lexical[e], e))
    assert lexical, "the query shares words with the entries"
    for h in hits:
        assert h.bm25 == pytest.approx(best_bm25[h.entry], rel=1e-5)
        assert h.similarity == pytest.approx(best_cos[h.entry], abs=1e-5)
        assert h.dense_rank == dense_order.index(h.entry) + 1
        assert h.bm25_rank == (bm25_order.index(h.entry) + 1 if h.entry in lexical else None)
        expected = 1 / (RRF_K + h.dense_rank)
        if h.bm25_rank is not None:
            expected += BM25_WEIGHT / (RRF_K + h.bm25_rank)
        assert h.score == pytest.approx(expected)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # the matched text is the entry's row nearest the query
    top = hits[0]
    nearest = max(
        ((t, s) for (e, t, _), s in zip(rows, cosine, strict=True) if e == top.entry),
        key=lambda x: x[1],
    )
    assert top.matched == nearest[0]


def test_a_word_match_ranks_first_in_the_lexical_ranking(setup: Setup) -> None:
    _, owner, svc, _ = setup
    ids = svc.add(owner, "faq", PAIRS)
    hits = {h.entry: h for h in svc.search(owner, "faq", "农民保护环境", k=5)}
    assert hits[ids[3]].bm25_rank == 1


def test_updates_embed_only_what_changed(setup: Setup, tmp_path: Path) -> None:
    store, owner, svc, embed = setup
    first = svc.add(owner, "faq", PAIRS[:3])
    assert sorted(embed.seen) == sorted(r for p in PAIRS[:3] for r in texts_of(p))
    embed.seen.clear()
    [new] = svc.add(owner, "faq", PAIRS[3:4])
    assert sorted(embed.seen) == sorted(texts_of(PAIRS[3]))
    embed.seen.clear()
    assert svc.remove(owner, "faq", [first[0]]) == 1
    assert embed.seen == []  # removing embeds nothing
    hits = svc.search(owner, "faq", PAIRS[0].question, k=5)
    assert first[0] not in {h.entry for h in hits}
    assert {h.entry for h in hits} == {first[1], first[2], new}
    index, _ = svc.indexes.synced(owner, "faq")
    assert index.dense.ntotal == sum(len(texts_of(p)) for p in PAIRS[1:4])

    # a restarted service loads the saved index: nothing is embedded again but the query
    embed.seen.clear()
    again = SupportService(store, embed, tmp_path / "indexes")
    hits_again = again.search(owner, "faq", PAIRS[0].question, k=5)
    assert embed.seen == [(PAIRS[0].question, "query")]
    assert [(h.entry, h.score) for h in hits_again] == [(h.entry, h.score) for h in hits]


def test_another_process_change_is_seen_at_the_next_search(setup: Setup, tmp_path: Path) -> None:
    store, owner, svc, embed = setup
    svc.add(owner, "faq", PAIRS[:2])
    svc.search(owner, "faq", "经济", k=2)
    # another server on the same database, with its own index directory
    other_store = Store(store.url)
    other = SupportService(other_store, embed, tmp_path / "other-indexes")
    [added] = other.add(owner, "faq", PAIRS[4:5])
    assert added in {h.entry for h in svc.search(owner, "faq", PAIRS[4].question, k=3)}
    other_store.close()


def test_an_index_of_another_encoder_is_rebuilt(setup: Setup, tmp_path: Path) -> None:
    store, owner, svc, embed = setup
    svc.add(owner, "faq", PAIRS)
    embed.name = "another-encoder"
    embed.seen.clear()
    fresh = SupportService(store, embed, tmp_path / "indexes")
    fresh.search(owner, "faq", "经济", k=1)
    assert len(embed.seen) == sum(len(texts_of(p)) for p in PAIRS) + 1  # every row, the query


def test_owners_never_see_each_other(setup: Setup) -> None:
    store, owner, svc, _ = setup
    svc.add(owner, "faq", PAIRS)
    other, _ = store.create_user("rival")
    with pytest.raises(UnknownKnowledgeBase):
        svc.search(other.id, "faq", "经济")
    with pytest.raises(UnknownKnowledgeBase):
        svc.entries(other.id, "faq")
    svc.create_kb(other.id, "faq")
    assert svc.search(other.id, "faq", "经济") == []  # their own, empty knowledge base


def test_a_bad_file_stores_and_indexes_nothing(setup: Setup, tmp_path: Path) -> None:
    _, owner, svc, embed = setup
    bad = tmp_path / "faq.csv"
    bad.write_text("question,answer\n经济,讨论\n历史\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"faq\.csv:3:"):
        svc.add_file(owner, "faq", bad)
    assert svc.kb(owner, "faq").entries == 0
    assert embed.seen == []
    with pytest.raises(LlmosError, match="k must be 1-50"):
        svc.search(owner, "faq", "经济", k=0)
    with pytest.raises(LlmosError, match="the query is empty"):
        svc.search(owner, "faq", "  ")


def test_deleting_a_knowledge_base_removes_its_index(setup: Setup, tmp_path: Path) -> None:
    _, owner, svc, _ = setup
    svc.add(owner, "faq", PAIRS[:1])
    kb_id = svc.kb(owner, "faq").id
    assert (tmp_path / "indexes" / f"kb-{kb_id}" / "meta.json").is_file()
    svc.delete_kb(owner, "faq")
    assert not (tmp_path / "indexes" / f"kb-{kb_id}").exists()


@pytest.fixture(scope="module")
def other_encoder(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny encoder with every weight moved: another encoder (another digest, other
    vectors), as one fine-tuned on a knowledge base would be."""
    out = tmp_path_factory.mktemp("other") / "enc"
    shutil.copytree(tiny_encoder, out)
    weights = load_file(out / "model.safetensors")
    gen = torch.Generator().manual_seed(3)
    moved = {k: v + 0.5 * torch.randn(v.shape, generator=gen) for k, v in weights.items()}
    save_file(moved, out / "model.safetensors")
    return out


def test_a_knowledge_base_searches_with_its_own_encoder(
    setup: Setup, other_encoder: Path, tmp_path: Path
) -> None:
    store, owner, svc, default = setup
    other = Counting(PipelineEmbedder(other_encoder))
    assert other.name != default.name

    def encoders(name: str) -> Counting:
        if name != "tuned":
            raise UnknownEncoder(f"no model named {name!r}")
        return other

    svc = SupportService(store, default, tmp_path / "indexes", encoders=encoders)
    with pytest.raises(UnknownEncoder):
        svc.create_kb(owner, "own", encoder="missing")
    assert [kb.name for kb in svc.list_kbs(owner)] == ["faq"]  # nothing stored
    assert svc.create_kb(owner, "own", encoder="tuned").encoder == "tuned"
    svc.add(owner, "faq", PAIRS)
    assert other.seen == []  # the default base embeds with the default encoder
    default.seen.clear()
    svc.add(owner, "own", PAIRS)
    assert default.seen == [] and sorted(other.seen) == sorted(
        r for p in PAIRS for r in texts_of(p)
    )

    # the base's own encoder embeds the query, and its cosines are that encoder's
    query = "老师和学生讨论经济历史"
    other.seen.clear()
    hits = svc.search(owner, "own", query, k=len(PAIRS))
    assert other.seen == [(query, "query")] and default.seen == []
    q = other([query], "query")[0]
    for h in hits:
        p = PAIRS[[x.question for x in PAIRS].index(h.question)]
        rows = np.concatenate([other.inner([t], kind) for t, kind in texts_of(p)])
        assert h.similarity == pytest.approx(float((rows @ q).max()), abs=1e-5)
    mine = {h.entry: h.similarity for h in svc.search(owner, "faq", query, k=len(PAIRS))}
    assert sorted(mine.values()) != sorted(h.similarity for h in hits)
    # a customer's message to that base is embedded by its encoder too
    other.seen.clear()
    default.seen.clear()
    reply = svc.message(owner, PAIRS[3].question, kb="shop/own")
    assert other.seen == [(PAIRS[3].question, "query")] and default.seen == []
    assert reply.sources[0]["question"] == PAIRS[3].question

    # switching the default base to the tuned encoder rebuilds its index at once, and a
    # restarted service loads it as saved: only the query is embedded then
    other.seen.clear()
    assert svc.set_encoder(owner, "faq", "tuned").encoder == "tuned"
    assert len(other.seen) == sum(len(texts_of(p)) for p in PAIRS)
    other.seen.clear()
    again = SupportService(store, default, tmp_path / "indexes", encoders=encoders)
    again.search(owner, "faq", query, k=1)
    assert other.seen == [(query, "query")]
    with pytest.raises(UnknownEncoder):
        svc.set_encoder(owner, "faq", "missing")
    assert svc.kb(owner, "faq").encoder == "tuned"

    # back to the default
    default.seen.clear()
    assert svc.set_encoder(owner, "faq", None).encoder is None
    assert len(default.seen) == sum(len(texts_of(p)) for p in PAIRS)
    # a desk without encoders serves only bases of its default encoder
    plain = SupportService(store, default, tmp_path / "indexes")
    with pytest.raises(UnknownEncoder, match="default encoder only"):
        plain.search(owner, "own", query)
