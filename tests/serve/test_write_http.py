"""The writing assistant over HTTP on a real server: ``/v1/correct`` answers what the Python
API answers, ``/v1/apps/write/correct`` applies the caller's own dictionary (and nobody
else's), and the dictionary routes keep each user's entries to that user."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import llmos
from llmos.apps.write.corrector import Corrector, classic_corrector, english_speller
from llmos.apps.write.dictionary import UserDictionary
from llmos.apps.write.edits import Edit, apply_edits
from llmos.checkpoint.io import save_checkpoint
from llmos.inference.correct import CharVocab
from llmos.models.csc import BertForSpellingCorrection
from llmos.models.ngram import CharNgramLM
from llmos.text.tokenizer import load_tokenizer
from serve.conftest import Live, bert_config, start

TEXTS = ["我们今天参观城市。", "老师讨论经济", "学生学习历史和艺术，记者介绍文化。"]
ENGLISH = [
    "The film was good and the music was better.",
    "We watched the film in the evening with friends.",
    "The story of the film is about a family and their house.",
    "Good music makes a good evening better.",
]


@pytest.fixture(scope="module")
def live_write(
    tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path
) -> Iterator[tuple[Live, Path]]:
    root = tmp_path_factory.mktemp("write")
    tok = load_tokenizer(tiny_tokenizer)
    cfg = bert_config(tok.get_vocab_size())
    vocab = CharVocab.from_tokenizer(tok)
    torch.manual_seed(0)
    model = BertForSpellingCorrection(cfg, len(vocab.ids))
    model.init_correction(torch.from_numpy(vocab.ids))
    task = {"task": "spelling", "chars": len(vocab.ids), "max_length": 32, "threshold": 0.5}
    path = root / "models" / "csc"
    save_checkpoint(path, model, cfg, tok, task)
    # The same model decoding with an n-gram LM that prefers 史 to 城 (llmos write lm's files).
    with_lm = root / "models" / "csc-lm"
    lm = {"file": "lm.json.gz", "alpha": 0.5, "beta": 0.5, "threshold": 0.0}
    save_checkpoint(with_lm, model, cfg, tok, task | {"lm": lm})
    (with_lm / "confusion").mkdir()
    rows = "#汉字\t同音同调\t同音异调\n城\t史\t\n经\t京\t\n"
    (with_lm / "confusion" / "same_pinyin.txt").write_text(rows, encoding="utf-8")
    (with_lm / "confusion" / "same_stroke.txt").write_text("", encoding="utf-8")
    CharNgramLM.train(["我们今天参观史市。", "老师讨论经济"] * 20, progress=False).save(
        with_lm / "lm.json.gz"
    )
    english = root / "en.txt"  # the English speller's words and character LM
    english.write_text("\n".join(ENGLISH * 20) + "\n", encoding="utf-8")
    runner, server = start(
        root / "models",
        f"sqlite:///{root / 'llmos.db'}",
        rate_limit=0,
        write_model="csc",
        write_english_corpus=english,
    )
    with runner:
        yield server, path


def test_correct_route_equals_the_python_api(live_write: tuple[Live, Path]) -> None:
    live, path = live_write
    pipe = llmos.load(path)
    with live.client(live.alice) as c:
        for threshold in (0.0, 0.5, None):
            r = c.post("/v1/correct", json={"model": "csc", "texts": TEXTS, "threshold": threshold})
            assert r.status_code == 200, r.text
            want = pipe.correct(TEXTS, threshold=threshold)
            got = r.json()["results"]
            assert [[(e["start"], e["original"], e["suggestion"]) for e in row] for row in got] == [
                [(w.offset, w.original, w.suggestion) for w in row] for row in want
            ]
            flat = [e["score"] for row in got for e in row]
            assert flat == pytest.approx([w.detect for row in want for w in row], abs=1e-6)
        assert sum(map(len, got)) >= 0
        # Threshold 0 flags every character: a random model changes some.
        r = c.post("/v1/correct", json={"model": "csc", "texts": TEXTS, "threshold": 0})
        assert sum(map(len, r.json()["results"])) > 0
        r = c.post("/v1/correct", json={"model": "csc", "texts": TEXTS, "threshold": 2})
        assert r.status_code == 422


def test_a_model_with_an_ngram_lm_decodes_with_it_over_http(
    live_write: tuple[Live, Path],
) -> None:
    live, path = live_write
    pipe = llmos.load(path.parent / "csc-lm")
    want = pipe.correct(TEXTS)
    assert [(c.offset, c.suggestion) for c in want[0]] == [(6, "史")]  # the LM's preference
    assert want != pipe.correct(TEXTS, lm=False)
    with live.client(live.alice) as c:
        r = c.post("/v1/correct", json={"model": "csc-lm", "texts": TEXTS})
        assert r.status_code == 200, r.text
        got = r.json()["results"]
        assert [[(e["start"], e["suggestion"]) for e in row] for row in got] == [
            [(w.offset, w.suggestion) for w in row] for row in want
        ]
        r = c.post("/v1/apps/write/correct", json={"model": "csc-lm", "texts": TEXTS[:1]})
        assert r.json()["results"][0]["corrected"] == "我们今天参观史市。"


def test_app_applies_each_users_own_dictionary(live_write: tuple[Live, Path]) -> None:
    live, path = live_write
    pipe = llmos.load(path)
    raw = pipe.correct(TEXTS, threshold=0.0)
    edits = [
        [Edit(c.offset, c.offset + 1, c.original, c.suggestion, c.detect) for c in row]
        for row in raw
    ]
    with live.client(live.alice) as alice, live.client(live.bob) as bob:
        r = alice.put(
            "/v1/apps/write/dictionary",
            json={"protect": ["城市", "历史"], "pairs": {"老师": "教师"}},
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"protect": ["城市", "历史"], "pairs": {"老师": "教师"}, "size": 3}
        assert bob.get("/v1/apps/write/dictionary").json() == {
            "protect": [],
            "pairs": {},
            "size": 0,
        }
        body = {"texts": TEXTS, "threshold": 0.0}
        got_alice = alice.post("/v1/apps/write/correct", json=body).json()
        got_bob = bob.post("/v1/apps/write/correct", json=body).json()
        assert got_alice["model"] == "csc"
        d = UserDictionary(frozenset({"城市", "历史"}), {"老师": "教师"})
        for i, text in enumerate(TEXTS):
            want = d.apply(text, edits[i])
            got = [Edit(**e) for e in got_alice["results"][i]["edits"]]
            assert [(e.start, e.end, e.suggestion, e.kind) for e in got] == [
                (e.start, e.end, e.suggestion, e.kind) for e in want
            ]
            assert got_alice["results"][i]["corrected"] == apply_edits(text, want)
            # Bob has no dictionary: the model's edits as they are.
            assert [(e["start"], e["suggestion"]) for e in got_bob["results"][i]["edits"]] == [
                (e.start, e.suggestion) for e in edits[i]
            ]
        assert got_alice["results"][1]["corrected"].startswith("教师讨论")
        assert all(e["kind"] == "spelling" for row in got_bob["results"] for e in row["edits"])

        # Add, delete, and the limits of a change.
        r = alice.post("/v1/apps/write/dictionary", json={"pairs": {"城市": "城池"}})
        assert r.json()["pairs"] == {"老师": "教师", "城市": "城池"}, r.text
        assert alice.delete("/v1/apps/write/dictionary/历史").status_code == 204
        assert bob.delete("/v1/apps/write/dictionary/老师").status_code == 404
        assert alice.get("/v1/apps/write/dictionary").json()["size"] == 2
        # A term with a slash (a product, a path) is deleted as any other.
        assert (
            alice.post("/v1/apps/write/dictionary", json={"protect": ["TCP/IP"]}).json()["size"]
            == 3
        )
        assert alice.delete("/v1/apps/write/dictionary/TCP%2FIP").status_code == 204
        assert alice.get("/v1/apps/write/dictionary").json()["size"] == 2
        r = alice.post("/v1/apps/write/dictionary", json={"protect": ["甲"], "pairs": {"甲": "乙"}})
        assert r.status_code == 422 and "both protected" in r.text
        r = alice.post("/v1/apps/write/dictionary", json={"pairs": {"甲": "甲"}})
        assert r.status_code == 422 and "equals the wrong one" in r.text
        r = alice.post("/v1/apps/write/dictionary", json={"protect": ["x" * 201]})
        assert r.status_code == 422
        assert alice.get("/v1/apps/write/dictionary").json()["size"] == 2  # all or none


def test_wrong_or_missing_model_and_no_key(live_write: tuple[Live, Path]) -> None:
    live, _ = live_write
    with live.client(live.alice) as c:
        r = c.post("/v1/apps/write/correct", json={"texts": ["今天"], "model": "nope"})
        assert r.status_code == 404, r.text
        r = c.post("/v1/tag", json={"model": "csc", "texts": ["今天"]})
        assert r.status_code == 400 and "/v1/correct" in r.text
    with live.client() as anon:
        assert anon.post("/v1/apps/write/correct", json={"texts": ["今天"]}).status_code == 401
        assert anon.get("/v1/apps/write/dictionary").status_code == 401


def test_a_server_without_the_spelling_model_says_how_to_build_it(
    live_write: tuple[Live, Path], tmp_path: Path
) -> None:
    _, path = live_write
    runner, live = start(
        path.parent, f"sqlite:///{tmp_path / 'llmos.db'}", rate_limit=0, write_model="absent"
    )
    with runner, live.client(live.alice) as c:
        r = c.post("/v1/apps/write/correct", json={"texts": ["今天"]})
        assert r.status_code == 404, r.text
        assert r.json()["error"]["type"] == "no_model"
        assert "llmos setup --with csc-zh" in r.json()["error"]["message"]
        r = c.post("/v1/apps/write/correct", json={"texts": ["今天"], "model": "csc"})
        assert r.status_code == 200  # another served spelling model, named in the request
        assert c.get("/v1/apps/write/dictionary").json()["size"] == 0


def test_without_the_spelling_model_the_classic_corrector_stands_in(
    live_write: tuple[Live, Path], tmp_path: Path
) -> None:
    _, path = live_write
    corpus = tmp_path / "zh.txt"  # context that tells 经济 from 京济 and 城市 from 城史
    corpus.write_text("老师讨论经济\n我们今天参观城市。\n" * 40, encoding="utf-8")
    (tmp_path / "confusion").mkdir()
    rows = "#汉字\t同音同调\t同音异调\n京\t经\t\n经\t京\t\n市\t史\t\n"
    (tmp_path / "confusion" / "same_pinyin.txt").write_text(rows, encoding="utf-8")
    (tmp_path / "confusion" / "same_stroke.txt").write_text("", encoding="utf-8")
    runner, live = start(
        path.parent,
        f"sqlite:///{tmp_path / 'llmos.db'}",
        rate_limit=0,
        write_model="absent",
        write_chinese_corpus=corpus,
        write_confusion=tmp_path / "confusion",
    )
    texts = ["老师讨论京济", "我们今天参观城市。"]
    want = classic_corrector(corpus, tmp_path / "confusion")
    with runner, live.client(live.alice) as alice, live.client(live.bob) as bob:
        r = alice.post("/v1/apps/write/correct", json={"texts": texts})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "classic-zh"
        assert [x["corrected"] for x in body["results"]] == ["老师讨论经济", "我们今天参观城市。"]
        got = [
            [(e["start"], e["original"], e["suggestion"]) for e in x["edits"]]
            for x in body["results"]
        ]
        assert got == [
            [(e.start, e.original, e.suggestion) for e in want.correct(t)] for t in texts
        ]
        assert got[0] == [(4, "京", "经")]
        # Alice's dictionary protects 京济; Bob's lists are his own
        r = alice.put("/v1/apps/write/dictionary", json={"protect": ["京济"]})
        assert r.status_code == 200, r.text
        r = alice.post("/v1/apps/write/correct", json={"texts": texts[:1]})
        assert r.json()["results"][0]["corrected"] == "老师讨论京济"
        r = bob.post("/v1/apps/write/correct", json={"texts": texts[:1]})
        assert r.json()["results"][0]["corrected"] == "老师讨论经济"
        r = alice.post("/v1/apps/write/correct", json={"texts": texts, "threshold": 0.5})
        assert r.status_code == 422 and "takes no model or threshold" in r.text


def test_english_texts_go_through_the_english_speller(live_write: tuple[Live, Path]) -> None:
    live, _ = live_write
    texts = ["Teh film was goood.", "We watched teh movie with freinds."]
    speller = Corrector(english_speller(live.app.state.server.settings.write_english_corpus))
    with live.client(live.bob) as bob:
        r = bob.post("/v1/apps/write/correct", json={"texts": texts, "lang": "en"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "english-speller"
        want = speller.correct(texts)
        assert [x["corrected"] for x in body["results"]] == [
            apply_edits(t, e) for t, e in zip(texts, want, strict=True)
        ]
        assert body["results"][0]["corrected"].startswith("The film")
        # Bob's dictionary protects a word the speller would change.
        bob.post("/v1/apps/write/dictionary", json={"protect": ["Teh"]})
        r = bob.post("/v1/apps/write/correct", json={"texts": texts[:1], "lang": "en"})
        assert r.json()["results"][0]["corrected"].startswith("Teh film")
        protected = UserDictionary(frozenset({"Teh"}), {})
        assert r.json()["results"][0]["corrected"] == apply_edits(
            texts[0], speller.correct(texts[:1], protected)[0]
        )
        r = bob.post(
            "/v1/apps/write/correct", json={"texts": texts, "lang": "en", "threshold": 0.5}
        )
        assert r.status_code == 422
        bob.delete("/v1/apps/write/dictionary/Teh")
