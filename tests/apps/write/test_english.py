"""The English speller on a generated corpus where "form" is twice as frequent as "from" but only
"from" follows "came": frequency alone turns "frm" into "form", the context LMs into "from"."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from symspellpy.editdistance import DistanceAlgorithm, EditDistance

from llmos.apps.write.edits import apply_edits
from llmos.apps.write.english import (
    EnglishSpeller,
    Ranking,
    build_frequencies,
    make_pairs,
    misspell,
    off_keyboard,
)
from llmos.models.ngram import CharNgramLM

CONTEXT = Ranking(char=1.0, word=0.0, freq=1.0, edit=4.0, keyboard=0.0, keep=None)


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    """ "came from the <place>" in a third of the sentences, "the form" in the rest."""
    rng = random.Random(seed)
    who = ["she", "he", "the teacher", "my brother", "the other student"]
    where = ["city", "station", "market", "school", "village"]
    forms = ["please sign the form", "the form is long", "fill in the form today", "a new form"]
    out = []
    for _ in range(n):
        if rng.random() < 1 / 3:
            out.append(f"{rng.choice(who)} came from the {rng.choice(where)}")
        else:
            out.append(f"{rng.choice(forms)} and {rng.choice(who)} was happy")
    return out


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return corpus()


@pytest.fixture(scope="module")
def lm(sentences: list[str]) -> CharNgramLM:
    return CharNgramLM.train(sentences, order=5, progress=False)


@pytest.fixture(scope="module")
def frequencies(sentences: list[str]) -> dict[str, int]:
    return build_frequencies(sentences)


def test_frequencies_count_lower_cased_words() -> None:
    counts = build_frequencies(["The co-writer's film, THE film!", "mp3 3rd don't x_1"])
    assert counts == {"the": 2, "co-writer's": 1, "film": 2, "don't": 1}


def test_context_picks_from_where_frequency_picks_form(frequencies, lm) -> None:
    assert frequencies["form"] > 1.5 * frequencies["from"]
    text = "she came frm the city"
    [edit] = EnglishSpeller(frequencies).correct(text)
    assert edit.suggestion == "form"
    [edit] = EnglishSpeller(frequencies, lm, ranking=CONTEXT).correct(text)
    assert (edit.start, edit.end, edit.original, edit.suggestion, edit.kind) == (
        9,
        12,
        "frm",
        "from",
        "spelling",
    )
    assert 0.5 < edit.score <= 1.0
    assert EnglishSpeller(frequencies, lm, ranking=CONTEXT).correct_text("fill in the frm") == (
        "fill in the form"
    )


def test_word_lm_alone_picks_from(sentences, frequencies, lm) -> None:
    speller = EnglishSpeller(frequencies, lm, ranking=Ranking(0.0, 1.0, 1.0, 4.0, 0.0, None))
    speller.train_word_lm(sentences, order=3)
    codes = speller.word_codes("She came from Xanadu's school")
    assert len(codes) == 5 and codes[3] == speller.word_codes("qqqq") != codes[4]
    assert speller.correct_text("she came frm the city") == "she came from the city"


def test_case_pattern_and_offsets(frequencies, lm) -> None:
    speller = EnglishSpeller(frequencies, lm, ranking=CONTEXT)
    text = "Teh teacher came frm teh city. TEH FORM"
    edits = speller.correct(text)
    assert [(e.start, e.end, e.original, e.suggestion) for e in edits] == [
        (0, 3, "Teh", "The"),
        (17, 20, "frm", "from"),
        (21, 24, "teh", "the"),
        (31, 34, "TEH", "THE"),
    ]
    assert all(text[e.start : e.end] == e.original for e in edits)
    assert apply_edits(text, edits) == "The teacher came from the city. THE FORM"
    acronyms = EnglishSpeller(frequencies, lm, ranking=CONTEXT, skip_acronyms=True)
    assert acronyms.correct_text("TEH form") == "TEH form"


def test_leaves_unknown_words_numbers_and_urls_alone(frequencies, lm) -> None:
    for speller in (EnglishSpeller(frequencies), EnglishSpeller(frequencies, lm, ranking=CONTEXT)):
        for text in [
            "xqzvvyk came from the city",  # no candidate within two edits
            "the 3rd frm2 form",  # words with digits
            "the form is https://frm.example.org/teh and teh.org and frm@teh.com",
        ]:
            assert speller.correct(text) == [], text


def test_keep_leaves_a_word_the_lms_like(frequencies, lm) -> None:
    always = EnglishSpeller(frequencies, lm, ranking=CONTEXT)
    assert always.correct_text("she came frm the city") == "she came from the city"
    keeping = EnglishSpeller(frequencies, lm, ranking=Ranking(1.0, 0.0, 1.0, 4.0, 0.0, 100.0))
    assert keeping.correct("she came frm the city") == []


def test_fit_finds_a_ranking_that_uses_the_context(sentences, frequencies, lm) -> None:
    rng = random.Random(1)
    pairs = [("she came frm the city", "she came from the city", [])] * 5
    pairs += make_pairs(sentences[:60], rng, rate=1.0, known=frequencies)
    speller = EnglishSpeller(frequencies, lm)
    ranking = speller.fit(pairs, {"word": (0.0,)})
    assert ranking == speller.ranking and ranking.char > 0
    assert speller.correct_text("my brother came frm the market") == (
        "my brother came from the market"
    )
    with pytest.raises(ValueError, match="lm="):
        EnglishSpeller(frequencies).fit(pairs)


def test_off_keyboard() -> None:
    assert not off_keyboard("tge", "the")  # g is next to h
    assert off_keyboard("tpe", "the")
    assert not off_keyboard("thhe", "the") and not off_keyboard("thge", "the")
    assert off_keyboard("thqe", "the")
    assert not off_keyboard("th", "the") and not off_keyboard("hte", "the")


def test_misspell_is_one_edit_in_the_case_pattern_and_deterministic() -> None:
    osa = EditDistance(DistanceAlgorithm.DAMERAU_OSA)
    words = ["the", "form", "Teacher", "STATION", "village", "aaa", "happy"]
    rng = random.Random(0)
    typos = [misspell(w, rng) for w in words for _ in range(50)]
    assert typos == [misspell(w, r) for r in [random.Random(0)] for w in words for _ in range(50)]
    for k, typo in enumerate(typos):
        word = words[k // 50]
        assert osa.compare(typo.lower(), word.lower(), 2) == 1, (word, typo)
        assert typo.isupper() == word.isupper() and typo[0].isupper() == word[0].isupper()
    with pytest.raises(ValueError):
        misspell("to", rng)


def test_make_pairs_offsets_rate_and_known(sentences, frequencies) -> None:
    pairs = make_pairs(sentences, random.Random(3), rate=1.0, known=frequencies)
    assert pairs == make_pairs(sentences, random.Random(3), rate=1.0, known=frequencies)
    assert pairs != make_pairs(sentences, random.Random(4), rate=1.0, known=frequencies)
    typos = [t for _, _, ts in pairs for t in ts]
    assert 0.8 * len(sentences) < len(typos) < 1.2 * len(sentences)
    assert any(not ts for _, _, ts in pairs)
    for noisy, clean, ts in pairs:
        restored = noisy
        for start, end, wrong, right in reversed(ts):
            assert noisy[start:end] == wrong and wrong.lower() not in frequencies
            restored = restored[:start] + right + restored[end:]
        assert restored == clean


def test_cli_corrects_english_from_the_prepared_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmos.cli import main

    home = tmp_path / "home"
    corpus = home / "data" / "corpus" / "en"
    corpus.mkdir(parents=True)
    lines = ["The film was really good.", "We came from the city.", "The city was big."] * 20
    (corpus / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setenv("LLMOS_HOME", str(home))
    assert main(["write", "correct", "--lang", "en", "--json", "Teh film was realy good."]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["corrected"] == "The film was really good."
    assert [(e["start"], e["original"], e["suggestion"]) for e in row["edits"]] == [
        (0, "Teh", "The"),
        (13, "realy", "really"),
    ]
    (corpus / "train.txt").write_text("\n", encoding="utf-8")
    assert main(["write", "correct", "--lang", "en", "Teh"]) == 2
    assert "no English sentences" in capsys.readouterr().err
