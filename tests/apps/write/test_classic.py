"""The classic corrector on a generated corpus where context tells 在 from 再 and 学 from 雪,
and does not tell 他 from 她 (both right: a low threshold swaps them)."""

from __future__ import annotations

import io
import json
import math
import random
from pathlib import Path

import pytest

from llmos.apps.write.classic import ClassicCorrector
from llmos.apps.write.corrector import (
    CLASSIC_CHANNEL,
    CLASSIC_CHANNEL_THRESHOLD,
    CLASSIC_THRESHOLD,
    classic_corrector,
)
from llmos.apps.write.edits import Edit
from llmos.errors import DataError, LlmosError
from llmos.inference.csc_channel import ChannelPrior, channel_features
from llmos.models.ngram import CharNgramLM
from llmos.text.cjk import is_hanzi
from llmos.text.csc_metrics import sentence_scores

CONFUSIONS = {"在": "再", "再": "在", "学": "雪", "雪": "学", "他": "她", "她": "他"}


def corpus(n: int = 600, seed: int = 0) -> list[str]:
    """在 before places, 再 before verbs of repetition; 学 in 学校/学习, 雪 in 下雪/雪花."""
    rng = random.Random(seed)
    who = ["我们", "他", "她", "你们", "老师", "同学们"]
    where = ["学校", "家里", "公园", "图书馆", "教室"]
    what = ["", "学习", "看书", "休息", "吃饭"]
    again = ["明天再来", "再说一遍", "再也不去了", "再见"]
    snow = ["外面下雪了", "雪花很大", "今天下大雪"]
    out = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.6:
            out.append(rng.choice(who) + "在" + rng.choice(where) + rng.choice(what))
        elif kind < 0.85:
            out.append(rng.choice(who) + rng.choice(again))
        else:
            out.append(rng.choice(snow))
    return out


@pytest.fixture(scope="module")
def lm() -> CharNgramLM:
    return CharNgramLM.train(corpus(), order=4, progress=False)


def confusions(ch: str) -> list[str]:
    return list(CONFUSIONS.get(ch, ""))


def test_fixes_a_confused_character_and_leaves_correct_text_alone(lm: CharNgramLM) -> None:
    fix = ClassicCorrector(lm, confusions, threshold=1.0)
    [edit] = fix.correct("我们再学校")
    assert (edit.start, edit.end, edit.original, edit.suggestion, edit.kind) == (
        2,
        3,
        "再",
        "在",
        "spelling",
    )
    assert edit.score > 1.0
    assert fix.correct_text("我们再学校") == "我们在学校"
    for good in ["我们在学校", "他明天再来", "外面下雪了", "老师在图书馆看书"]:
        assert fix.correct(good) == []
    assert fix.correct_text("Hello, 世界") == "Hello, 世界"


def test_adjacent_edits_are_scored_on_fresh_context(lm: CharNgramLM) -> None:
    fix = ClassicCorrector(lm, confusions, threshold=0.0)
    text = "我们再雪校"
    edits = fix.correct(text)
    assert [(e.start, e.suggestion) for e in edits] == [(2, "在"), (3, "学")]
    # Each score is the gain over the sentence as it stood when the edit was accepted, so the
    # gains add up to the whole change: a score computed on stale context would not.
    fixed = fix.correct_text(text)
    total = lm.sentence_logprob(fixed) - lm.sentence_logprob(text)
    assert sum(e.score for e in edits) == pytest.approx(total)


def test_only_cjk_characters_change() -> None:
    lm = CharNgramLM.train(["ab", "ab", "cb"], order=2, progress=False)
    fix = ClassicCorrector(lm, lambda ch: ["a", "在"], threshold=-100.0)
    assert fix.correct("cb") == []  # c is not CJK, a is not a usable candidate
    assert is_hanzi("在") and is_hanzi("\U00020000") and not is_hanzi("a") and not is_hanzi("，")


def test_threshold_fit_equals_a_sweep(lm: CharNgramLM) -> None:
    rng = random.Random(1)
    clean = corpus(40, seed=2)
    pairs = []
    for target in clean:
        spots = [i for i, ch in enumerate(target) if ch in "在再学雪"]
        source = list(target)
        if spots and rng.random() < 0.7:
            i = rng.choice(spots)
            source[i] = CONFUSIONS[target[i]]
        pairs.append(("".join(source), target))
    grid = [-2.0, 0.0, 1.0, 3.0, 6.0, 10.0, 1000.0]
    sources, targets = [s for s, _ in pairs], [t for _, t in pairs]

    def f1(t: float) -> float:
        out = [ClassicCorrector(lm, confusions, t).correct_text(s) for s in sources]
        return sentence_scores(sources, out, targets)["sentence_f1"]

    sweep = {t: f1(t) for t in grid}
    fix = ClassicCorrector(lm, confusions, threshold=0.0)
    best = fix.fit_threshold(pairs, grid)
    assert fix.threshold == best
    assert sweep[best] == max(sweep.values()) > sweep[1000.0] == 0.0
    assert best == max(t for t in grid if sweep[t] == sweep[best])  # ties: the higher one
    assert sweep[-2.0] < sweep[best]  # a low threshold over-corrects (他 <-> 她)


def test_edits_are_the_shared_type(lm: CharNgramLM) -> None:
    [edit] = ClassicCorrector(lm, confusions, 1.0).correct("他再家里")
    assert isinstance(edit, Edit)
    assert edit.as_json()["suggestion"] == "在"


def prepared_home(home: Path) -> Path:
    """``home`` laid out as ``llmos data prepare`` leaves it for the classic corrector: the
    Chinese corpus (this module's sentences) and pycorrector-format confusion files."""
    (home / "data" / "corpus" / "zh").mkdir(parents=True)
    text = "\n".join(corpus()) + "\n"
    (home / "data" / "corpus" / "zh" / "train.txt").write_text(text, encoding="utf-8")
    confusion = home / "data" / "tasks" / "csc-zh" / "confusion"
    confusion.mkdir(parents=True)
    rows = "".join(f"{a}\t{b}\t\n" for a, b in CONFUSIONS.items())
    (confusion / "same_pinyin.txt").write_text("#汉字\t同音同调\t同音异调\n" + rows, "utf-8")
    (confusion / "same_stroke.txt").write_text("", encoding="utf-8")
    return home


def test_classic_corrector_is_built_from_the_prepared_data(tmp_path: Path) -> None:
    data = prepared_home(tmp_path) / "data"
    fix = classic_corrector(
        data / "corpus" / "zh" / "train.txt", data / "tasks" / "csc-zh" / "confusion"
    )
    assert fix.threshold == CLASSIC_THRESHOLD == 7.5
    # the same LM by hand (order 4), the confusion sets read from the files
    by_hand = ClassicCorrector(
        CharNgramLM.train(corpus(), order=4, progress=False), confusions, 7.5
    )
    texts = ["老师再图书馆看书", "外面下学了", "他明天在来", "我们在学校学习", "她再家里休息"]
    assert [fix.correct(t) for t in texts] == [by_hand.correct(t) for t in texts]
    assert [fix.correct_text(t) for t in texts[:3]] == [
        "老师在图书馆看书",
        "外面下雪了",
        "他明天再来",
    ]
    assert fix.correct("我们在学校学习") == []  # right text stays
    # 再 -> 在 gains 7.4 nats here: below the default threshold it is left as it is
    assert fix.correct("我们再学校学习") == []
    lower = ClassicCorrector(by_hand.lm, confusions, 7.0)
    assert lower.correct_text("我们再学校学习") == "我们在学校学习"
    confusion = data / "tasks" / "csc-zh" / "confusion"
    (data / "corpus" / "zh" / "empty.txt").write_text("\n", encoding="utf-8")
    with pytest.raises(LlmosError, match="no Chinese sentences"):
        classic_corrector(data / "corpus" / "zh" / "empty.txt", confusion)
    with pytest.raises(LlmosError, match=r"same_pinyin\.txt"):
        classic_corrector(data / "corpus" / "zh" / "train.txt", tmp_path / "nowhere")


def test_with_the_lexicon_prepared_the_classic_corrector_adds_the_channel_prior(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = prepared_home(tmp_path) / "data"
    corpus_file, confusion = data / "corpus" / "zh" / "train.txt", data / "tasks/csc-zh/confusion"
    with caplog.at_level("WARNING", logger="llmos.apps.write"):
        plain = classic_corrector(corpus_file, confusion)
    assert plain.prior is None and "without its noisy-channel prior" in caplog.text
    (confusion / "word_freq.txt").write_text("学校 900 n\n下雪 300 v\n再见 500 v\n", "utf-8")
    (confusion / "person_name.txt").write_text("老师\t10\n", encoding="utf-8")
    (confusion / "place_name.txt").write_text("公园\t20\n", encoding="utf-8")
    (confusion / "common_char_set.txt").write_text("".join(f"{c}\n" for c in CONFUSIONS), "utf-8")
    fix = classic_corrector(corpus_file, confusion)
    assert isinstance(fix.prior, ChannelPrior) and fix.prior.weights == CLASSIC_CHANNEL
    assert fix.threshold == CLASSIC_CHANNEL_THRESHOLD
    assert classic_corrector(corpus_file, confusion, channel=False).prior is None
    # the same as the parts by hand: the LM, the features over the files, the shipped weights
    lm = CharNgramLM.train(corpus(), order=4, progress=False)
    prior = ChannelPrior(channel_features(confusion, lm), CLASSIC_CHANNEL)
    by_hand = ClassicCorrector(lm, confusions, CLASSIC_CHANNEL_THRESHOLD, prior)
    texts = ["老师再图书馆看书", "外面下学了", "他明天在来", "我们在学校学习", "她再家里休息"]
    assert [fix.correct(t) for t in texts] == [by_hand.correct(t) for t in texts]
    assert prior.features.words == pytest.approx(
        {"学校": math.log(901), "下雪": math.log(301), "再见": math.log(501)}
    )
    (confusion / "place_name.txt").write_text("公园 twenty\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"place_name\.txt:1: expected 'word frequency"):
        classic_corrector(corpus_file, confusion)


def test_cli_corrects_with_the_classic_method_where_no_model_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from llmos.cli import main

    monkeypatch.setenv("LLMOS_HOME", str(prepared_home(tmp_path / "home")))
    monkeypatch.chdir(tmp_path)  # no runs/csc-zh/checkpoint here
    assert main(["write", "correct", "--json", "老师再图书馆看书"]) == 0
    out = capsys.readouterr()
    assert "runs/csc-zh/checkpoint is not built" in out.err and "classic" in out.err
    row = json.loads(out.out)
    assert row["corrected"] == "老师在图书馆看书"
    assert [(e["start"], e["original"], e["suggestion"]) for e in row["edits"]] == [(2, "再", "在")]
    dictionary = tmp_path / "mine.txt"
    dictionary.write_text("再图书馆\n", encoding="utf-8")  # a protected term: left as written
    args = ["write", "correct", "--model", "classic", "--dict", str(dictionary), "老师再图书馆看书"]
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines()[0] == "老师再图书馆看书"
    # "-" reads the texts from stdin, a line each (blank lines skipped)
    monkeypatch.setattr("sys.stdin", io.StringIO("老师再图书馆看书\n\n今天天气很好\n"))
    assert main(["write", "correct", "--model", "classic", "--json", "-"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["corrected"] for r in rows] == ["老师在图书馆看书", "今天天气很好"]
    assert main(["write", "correct", "--model", "classic", "--threshold", "0.5", "今天"]) == 2
    assert "takes no --threshold" in capsys.readouterr().err
    assert main(["write", "correct", "--lang", "en", "--model", "classic", "teh"]) == 2
    assert "takes no --model" in capsys.readouterr().err
