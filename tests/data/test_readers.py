"""Readers for labelled data: formats, and bad rows named by file:line."""

from pathlib import Path

import pytest

from llmos.data.readers import join_tokens, read_classification, read_conll, read_pku, read_spans
from llmos.errors import DataError


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_tsv_csv_jsonl_give_the_same_examples(tmp_path: Path) -> None:
    tsv = write(tmp_path / "a.tsv", "text\tlabel\n质量很好\tpos\n太差了\tneg\n")
    csv = write(tmp_path / "a.csv", 'text,label\n质量很好,pos\n"太差了",neg\n')
    jsonl = write(
        tmp_path / "a.jsonl",
        '{"text": "质量很好", "label": "pos"}\n\n{"text": "太差了", "label": "neg"}\n',
    )
    expected = [("质量很好", "pos", None), ("太差了", "neg", None)]
    for path in (tsv, csv, jsonl):
        rows = read_classification(path).rows
        assert [(r.text, r.label, r.text_b) for r in rows] == expected


def test_label_key_reads_intent_files(tmp_path: Path) -> None:
    p = write(
        tmp_path / "i.jsonl", '{"text": "打开客厅的灯", "intent": "HassTurnOn", "slots": []}\n'
    )
    assert read_classification(p, label_key="intent").rows[0].label == "HassTurnOn"
    with pytest.raises(DataError, match=r"i\.jsonl:1: empty or missing 'label'"):
        read_classification(p)


def test_sentence_pairs(tmp_path: Path) -> None:
    p = write(tmp_path / "p.tsv", "text\ttext_b\tlabel\n今天下雨\t天气不好\t1\n")
    (row,) = read_classification(p).rows
    assert (row.text, row.text_b, row.label) == ("今天下雨", "天气不好", "1")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.tsv", "text\tlabel\n好\tpos\n坏\n", "x.tsv:3: 1 columns, expected 2 (text, label)"),
        (
            "x.tsv",
            "sentence\tlabel\n好\tpos\n",
            "x.tsv:1: expected a header with columns 'text' and 'label'",
        ),
        ("x.tsv", "text\tlabel\n\tpos\n", "x.tsv:2: empty or missing 'text'"),
        ("x.jsonl", '{"text": "好", "label": "pos"}\n{"text": "坏"\n', "x.jsonl:2: not valid JSON"),
        ("x.jsonl", '["好", "pos"]\n', "x.jsonl:1: expected a JSON object"),
        ("x.jsonl", '{"text": "好"}\n', "x.jsonl:1: empty or missing 'label'"),
        ("x.txt", "好\n", "unsupported file type '.txt'"),
        ("x.tsv", b"text\tlabel\n\xff\xfe\tpos\n", "x.tsv:2: not valid UTF-8"),
        ("x.tsv", "text\tlabel\n", "x.tsv: no examples found"),
    ],
)
def test_bad_classification_rows_name_file_and_line(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    with pytest.raises(DataError) as e:
        read_classification(write(tmp_path / name, content))
    assert message in str(e.value)


def test_skip_bad_rows_counts_them(tmp_path: Path) -> None:
    p = write(tmp_path / "x.tsv", "text\tlabel\n好\tpos\n坏\n\tneg\n差\tneg\n")
    res = read_classification(p, skip_bad_rows=True)
    assert [r.text for r in res.rows] == ["好", "差"]
    assert res.skipped == 2 and res.skipped_at == [f"{p}:3", f"{p}:4"]


def test_conll(tmp_path: Path) -> None:
    p = write(tmp_path / "x.conll", "江\tB-PER\n泽\tI-PER\n\n北\tB-LOC\n京\tI-LOC\n")
    rows = read_conll(p).rows
    assert [(r.tokens, r.tags) for r in rows] == [
        (["江", "泽"], ["B-PER", "I-PER"]),
        (["北", "京"], ["B-LOC", "I-LOC"]),
    ]
    with pytest.raises(DataError, match=r"x2.conll:2: expected token<TAB>tag"):
        read_conll(write(tmp_path / "x2.conll", "江\tB-PER\n泽 I-PER\n"))
    assert read_conll(write(tmp_path / "x3.conll", "a\tO\nb c\n"), skip_bad_rows=True).skipped == 1


def test_pku(tmp_path: Path) -> None:
    p = write(tmp_path / "p.txt", "江泽民/nr 在/p 北京/ns 会见/v\n\n1/2/m 公斤/q\n")
    rows = read_pku(p).rows
    assert rows[0].tokens == ["江泽民", "在", "北京", "会见"] and rows[0].tags == [
        "nr",
        "p",
        "ns",
        "v",
    ]
    assert rows[1].tokens == ["1/2", "公斤"], "a slash inside the word is kept"
    with pytest.raises(DataError, match=r"q.txt:1: token '北京' is not word/POS"):
        read_pku(write(tmp_path / "q.txt", "江泽民/nr 北京\n"))


def test_tsv_quotes_are_text(tmp_path: Path) -> None:
    p = write(tmp_path / "q.tsv", 'text\tlabel\n他说"很好\tpos\n"引号"开头\tneg\n')
    assert [r.text for r in read_classification(p).rows] == ['他说"很好', '"引号"开头']


def test_spans_from_jsonl_with_a_named_key(tmp_path: Path) -> None:
    p = write(
        tmp_path / "s.jsonl",
        '{"text": "把客厅的灯打开", "slots": [{"name": "area", "value": "客厅", "start": 1, '
        '"end": 3}]}\n{"text": "开灯", "slots": []}\n',
    )
    rows = read_spans(p, spans_key="slots").rows
    assert [(r.text, r.spans) for r in rows] == [("把客厅的灯打开", [("area", 1, 3)]), ("开灯", [])]
    with pytest.raises(DataError, match=r"s\.jsonl: no row has a 'spans' key"):
        read_spans(p)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "开灯", "spans": [{"label": "x", "start": 1, "end": 5}]}', "0 <= start < end"),
        ('{"text": "开灯", "spans": [{"label": "x", "start": 1, "end": 1}]}', "0 <= start < end"),
        ('{"text": "开灯", "spans": [{"start": 0, "end": 1}]}', "label, start, end"),
        ('{"text": "开灯", "spans": "x"}', "must be a list"),
        (
            '{"text": "开灯吧", "spans": [{"label": "a", "start": 0, "end": 2}, '
            '{"label": "b", "start": 1, "end": 3}]}',
            "overlap",
        ),
        ('{"text": "", "spans": []}', "empty or missing 'text'"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_bad_span_rows_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    p = write(tmp_path / "bad.jsonl", '{"text": "好", "spans": []}\n' + line + "\n")
    with pytest.raises(DataError, match=rf"bad\.jsonl:2: .*{message}"):
        read_spans(p)
    res = read_spans(p, skip_bad_rows=True)
    assert len(res.rows) == 1 and res.skipped == 1


def test_spans_from_conll_keep_character_offsets(tmp_path: Path) -> None:
    p = write(
        tmp_path / "a.conll",
        "John\tB-PER\nlives\tO\nin\tO\nNew\tB-LOC\nYork\tI-LOC\n\n"
        "江\tB-PER\n泽\tI-PER\n民\tI-PER\n在\tO\n北\tB-LOC\n京\tI-LOC\n\n"
        "上\tB-LOC\n海\tE-LOC\n好\tS-X\n",
    )
    rows = read_spans(p).rows
    assert rows[0].text == "John lives in New York"
    assert rows[0].spans == [("PER", 0, 4), ("LOC", 14, 22)]
    assert rows[1].text == "江泽民在北京"  # no spaces between CJK characters
    assert rows[1].spans == [("PER", 0, 3), ("LOC", 4, 6)]
    assert rows[2].spans == [("LOC", 0, 2), ("X", 2, 3)]  # BMES recognised by its prefixes
    assert join_tokens(["我", "用", "Python", "写", "code"])[0] == "我用 Python 写 code"


def test_pku_views(tmp_path: Path) -> None:
    p = write(tmp_path / "p.txt", "江/nr 泽民/nr 在/p 北京/ns 会见/v 新华社/nt 记者/n 李/nr 。/w\n")
    (row,) = read_spans(p, view="ner").rows
    assert row.text == "江泽民在北京会见新华社记者李。"
    assert row.spans == [("PER", 0, 3), ("LOC", 4, 6), ("ORG", 8, 11), ("PER", 13, 14)]
    seg = read_spans(p, view="segmentation").rows[0].spans
    words = [row.text[s:e] for _, s, e in seg]
    assert words == ["江", "泽民", "在", "北京", "会见", "新华社", "记者", "李", "。"]
    pos = read_spans(p, view="pos").rows[0].spans
    assert pos[:2] == [("nr", 0, 1), ("nr", 1, 3)] and pos[-1] == ("w", 14, 15)
    with pytest.raises(DataError, match=r"p\.txt: a People's Daily word/POS file needs data\.view"):
        read_spans(p)
    with pytest.raises(DataError, match=r"unsupported file type '\.xml'"):
        read_spans(write(tmp_path / "a.xml", "x"))
