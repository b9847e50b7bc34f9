"""Chinese spelling correction data: confusion files, synthetic errors, correction files.

The confusion files are small ones written in the temporary folder in pycorrector's layout
(``#汉字<TAB>同音同调<TAB>同音异调`` header, polyphones on several lines, empty cells). The
error statistics are measured over 20,000 draws from a fixed seed, so they cannot flake; the
tolerances are still ~4 standard deviations wide, so that they hold for any seed.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from llmos.data.spelling import (
    ERROR_COUNTS,
    PINYIN_SHARE,
    SAME_TONE_SHARE,
    ConfusionSet,
    corrupt,
    read_char_set,
    read_confusion,
    read_corrections,
    seeded_rng,
    usable_sentence,
)
from llmos.errors import DataError

PINYIN = "\n".join(
    [
        "#汉字\t同音同调\t同音异调",
        "了\t辽",  # no other-tone column
        "京\t经惊精旌\t井景",  # 旌 is not a common character below
        "天\t添天\t田甜添",  # itself and a repeat, dropped
        "议\t\t仪",  # empty same-tone cell
        "了\t燎\t聊辽",  # a polyphone's second line: merged
        "",
    ]
)
STROKE = "天\t夫\t夭\n大\t太\t犬\t天\n"
COMMON = "".join(f"{ch}\n" for ch in "了辽京经惊精井景天添田甜议仪夫夭大太犬燎聊今气很好")


@pytest.fixture()
def confusion_dir(tmp_path: Path) -> Path:
    (tmp_path / "same_pinyin.txt").write_text(PINYIN, encoding="utf-8")
    (tmp_path / "same_stroke.txt").write_text(STROKE, encoding="utf-8")
    (tmp_path / "common_char_set.txt").write_text(COMMON, encoding="utf-8")
    return tmp_path


@pytest.fixture()
def confusion(confusion_dir: Path) -> ConfusionSet:
    return read_confusion(confusion_dir)


@pytest.fixture()
def allowed(confusion_dir: Path) -> frozenset[str]:
    return read_char_set(confusion_dir / "common_char_set.txt")


# --- confusion files ---------------------------------------------------------------------------


def test_read_confusion(confusion: ConfusionSet) -> None:
    assert confusion.same_tone["了"] == ("辽", "燎")
    assert confusion.other_tone["了"] == ("聊",)  # 辽 is already a same-tone candidate
    assert confusion.same_tone["京"] == ("经", "惊", "精", "旌")
    assert confusion.pinyin["京"] == ("经", "惊", "精", "旌", "井", "景")
    assert confusion.pinyin["天"] == ("添", "田", "甜")  # itself and repeats dropped
    assert "议" not in confusion.same_tone and confusion.pinyin["议"] == ("仪",)
    assert confusion.stroke["天"] == ("夫", "夭", "大", "太", "犬")  # merged over two groups
    assert confusion.stroke["犬"] == ("大", "太", "天")
    assert confusion.candidates("天") == ("添", "田", "甜", "夫", "夭", "大", "太", "犬")
    assert confusion.candidates("好") == ()
    assert all(ch not in cands for ch, cands in confusion.pinyin.items())


def test_read_char_set(allowed: frozenset[str], tmp_path: Path) -> None:
    assert allowed == set(COMMON.split()) and len(allowed) == 25 and "旌" not in allowed
    bad = tmp_path / "chars.txt"
    bad.write_text("一\n二三\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))}:2: expected a single character"):
        read_char_set(bad)


@pytest.mark.parametrize(
    ("name", "text", "lineno", "expected"),
    [
        ("same_pinyin.txt", "#汉字\t同音同调\t同音异调\n京\t经\n京经\t惊\n", 3, "single character"),
        ("same_pinyin.txt", "京\t经\t井\t景\n", 1, "char<TAB>same-tone"),
        ("same_pinyin.txt", "京\n", 1, "char<TAB>same-tone"),
        ("same_pinyin.txt", "京\t经 惊\n", 1, "without spaces"),
        ("same_stroke.txt", "天\t夫\n大\n", 2, "two or more single characters"),
        ("same_stroke.txt", "天\t夫夭\n", 1, "two or more single characters"),
    ],
)
def test_malformed_line_names_file_and_line(
    confusion_dir: Path, name: str, text: str, lineno: int, expected: str
) -> None:
    path = confusion_dir / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:{lineno}: expected .*{expected}"):
        read_confusion(confusion_dir)


def test_missing_confusion_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"same_pinyin\.txt: file not found"):
        read_confusion(tmp_path)


def test_with_pairs(confusion: ConfusionSet, allowed: frozenset[str]) -> None:
    extended = confusion.with_pairs([("京", "景"), ("京", "晶"), ("好", "号")])
    # correction: (wrong, right) puts right first among wrong's candidates, one way only
    assert extended.candidates("京") == ("景", "晶", "经", "惊", "精", "旌", "井")
    assert extended.candidates("好") == ("号",)
    assert "好" not in extended.candidates("号") and confusion.candidates("好") == ()
    assert extended.typos == {"景": ("京",), "晶": ("京",), "号": ("好",)}
    assert confusion.pairs == {} and confusion.candidates("京")[0] == "经"  # original unchanged
    again = extended.with_pairs([("京", "景"), ("了", "聊")])  # pairs accumulate, deduplicated
    assert again.pairs == {"京": ("景", "晶"), "好": ("号",), "了": ("聊",)}
    for bad in [("京", "京"), ("京", "景色"), ("", "景")]:
        with pytest.raises(ValueError, match="two different single characters"):
            confusion.with_pairs([bad])
    # synthetic errors read a pair the other way: a clean 号 may become 好 (a same-tone slip;
    # neither has packaged candidates), a clean 好 never becomes 号
    rng = random.Random(7)
    with_hao = allowed | {"号"}
    assert {corrupt("号", extended, rng, with_hao) for _ in range(200)} == {"号", "好"}
    assert {corrupt("好", extended, rng, with_hao) for _ in range(200)} == {"好"}
    assert {corrupt("景", extended, rng, allowed) for _ in range(200)} == {"景", "京"}


# --- synthetic errors --------------------------------------------------------------------------

TEXT = "今天天气很好了京议大犬甜"  # 今气很好 have no candidates


def _diff(a: str, b: str) -> list[int]:
    return [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]


def test_corrupt_substitutes_candidates_only(
    confusion: ConfusionSet, allowed: frozenset[str]
) -> None:
    rng = random.Random(0)
    for _ in range(2_000):
        noisy = corrupt(TEXT, confusion, rng, allowed)
        assert len(noisy) == len(TEXT)
        for i in _diff(TEXT, noisy):
            assert noisy[i] in confusion.candidates(TEXT[i]) and noisy[i] in allowed
            assert TEXT[i] not in "今气很好"
        assert "旌" not in noisy  # a candidate outside the allowed set is never used


def test_error_count_distribution(confusion: ConfusionSet, allowed: frozenset[str]) -> None:
    rng = random.Random(1234)
    n = 20_000
    counts = Counter(len(_diff(TEXT, corrupt(TEXT, confusion, rng, allowed))) for _ in range(n))
    assert set(counts) <= {0, 1, 2, 3}
    for k, p in enumerate(ERROR_COUNTS):
        assert counts[k] / n == pytest.approx(p, abs=0.015), (k, counts)
    assert counts[0] / n == pytest.approx(0.2, abs=0.015)  # the clean share


def test_fewer_positions_fewer_errors(confusion: ConfusionSet, allowed: frozenset[str]) -> None:
    rng = random.Random(5)
    n = 20_000
    text = "今天很好旌京"  # only 天 is eligible: 今很好 have no candidates, 旌 is not common
    allowed_here = allowed - {"京"}  # and 京 is taken out of the allowed set
    counts = Counter(
        len(_diff(text, corrupt(text, confusion, rng, allowed_here))) for _ in range(n)
    )
    assert set(counts) == {0, 1}
    assert counts[1] / n == pytest.approx(1 - ERROR_COUNTS[0], abs=0.015)
    assert corrupt("今气很好", confusion, rng, allowed) == "今气很好"


def test_pinyin_share_and_same_tone_preference(
    confusion: ConfusionSet, allowed: frozenset[str]
) -> None:
    # 天: same tone 添, other tones 田甜, stroke 夫夭大太犬 (disjoint sets)
    rng = random.Random(99)
    kinds: Counter[str] = Counter()
    for _ in range(20_000):
        noisy = corrupt("天", confusion, rng, allowed)
        if noisy != "天":
            kinds["same" if noisy in "添" else "other" if noisy in "田甜" else "stroke"] += 1
    total = sum(kinds.values())
    pinyin = kinds["same"] + kinds["other"]
    assert pinyin / total == pytest.approx(PINYIN_SHARE, abs=0.02)
    assert kinds["same"] / pinyin == pytest.approx(SAME_TONE_SHARE, abs=0.025)
    # 议 has only other-tone pinyin candidates and no stroke ones: always 仪
    assert {corrupt("议", confusion, rng, allowed) for _ in range(200)} == {"议", "仪"}


def test_corrupt_is_deterministic(confusion: ConfusionSet, allowed: frozenset[str]) -> None:
    def run(key: str) -> list[str]:
        rng = seeded_rng(key)
        return [corrupt(TEXT, confusion, rng, allowed) for _ in range(50)]

    assert run("salt\x00train\x00a") == run("salt\x00train\x00a")
    assert run("salt\x00train\x00a") != run("salt\x00test\x00a")
    # corrupt draws only through random(), whose output for an int seed is the same on every
    # Python version: golden values (from this seeded_rng on CPython 3.11)
    rng = seeded_rng("llmos")
    assert (rng.random(), rng.random()) == (0.7366392318257803, 0.4847028675259969)


def test_usable_sentence() -> None:
    assert usable_sentence("本报北京电，市政府今天召开会议。")
    assert not usable_sentence("会议很成功！")  # under 8 characters
    assert not usable_sentence("It is a fine day, 好。")  # under 4 CJK characters
    assert not usable_sentence("好" * 129)
    assert usable_sentence("好" * 128)


# --- correction files --------------------------------------------------------------------------


def test_read_corrections(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    rows = [{"source": "今天天汽很好", "target": "今天天气很好"}, {"source": "好", "target": "好"}]
    path.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8"
    )
    assert read_corrections(path) == [("今天天汽很好", "今天天气很好"), ("好", "好")]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r":2: not valid JSON"),
        ('["a", "b"]', r":2: expected an object"),
        ('{"source": "今天"}', r":2: field 'target': expected a non-empty string, got missing"),
        ('{"source": 3, "target": "今天"}', r":2: field 'source': expected a non-empty string"),
        ('{"source": "今天", "target": "今天好"}', r":2: field 'target': expected the length"),
    ],
)
def test_read_corrections_errors(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"source": "天气", "target": "天气"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(str(path)) + message):
        read_corrections(path)
    with pytest.raises(DataError, match="file not found"):
        read_corrections(tmp_path / "missing.jsonl")
