"""FAQ files: the three formats read alike, and a malformed row names its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos.apps.support.faq import kb_pairs, parse_faq, read_faq
from llmos.errors import DataError
from llmos.store.kb import FaqPair

EXPECTED = [
    FaqPair("怎么退货", "七天内可以申请退货。", ("如何退货", "我想退货"), ("售后",)),
    FaqPair("How much is shipping?", "Free over $50, else $5.", (), ()),
]


def test_jsonl_csv_and_tsv_give_the_same_pairs(tmp_path: Path) -> None:
    (tmp_path / "faq.jsonl").write_text(
        '{"question": "怎么退货", "answer": "七天内可以申请退货。", '
        '"alternatives": ["如何退货", "我想退货"], "tags": ["售后"]}\n'
        "\n"
        '{"question": "How much is shipping?", "answer": "Free over $50, else $5."}\n',
        encoding="utf-8",
    )
    # CSV: a header in any order and case, a quoted cell with a comma, a UTF-8 BOM (Excel)
    (tmp_path / "faq.csv").write_text(
        "\ufeffTags,Question,Answer,Alternatives\n"
        "售后,怎么退货,七天内可以申请退货。,如何退货|我想退货\n"
        ',How much is shipping?,"Free over $50, else $5.",\n',
        encoding="utf-8",
    )
    (tmp_path / "faq.tsv").write_text(
        "question\tanswer\talternatives\ttags\n"
        "怎么退货\t七天内可以申请退货。\t如何退货 | 我想退货\t售后\n"
        "How much is shipping?\tFree over $50, else $5.\t\t\n",
        encoding="utf-8",
    )
    for name in ("faq.jsonl", "faq.csv", "faq.tsv"):
        assert read_faq(tmp_path / name) == EXPECTED, name


@pytest.mark.parametrize(
    ("kind", "text", "where", "says"),
    [
        ("jsonl", '{"question": "q", "answer": "a"}\n{"question": "q"', ":2:", "not valid JSON"),
        ("jsonl", '{"question": "q", "answer": "a"}\n\n{"question": "q"}', ":3:", "'answer'"),
        ("jsonl", '{"question": "q", "answer": "a", "anwser": "x"}', ":1:", "'anwser'"),
        (
            "jsonl",
            '{"question": "q", "answer": "a", "tags": "x"}\n[1]',
            ":2:",
            "expected an object",
        ),
        ("jsonl", '{"question": "q", "answer": "a", "alternatives": [1]}', ":1:", "alternatives"),
        ("csv", "question,answer\nq,a\nq2\n", ":3:", "1 columns, the header has 2"),
        ("csv", "question,answer\nq,a\n,a2\n", ":3:", "'question' must be a non-empty"),
        ("csv", "q,a\nq,a\n", ":1:", "the header must name the columns question, answer"),
        ("tsv", "question\tanswer\tanwser\nq\ta\tb\n", ":2:", "unknown field 'anwser'"),
    ],
)
def test_a_malformed_row_names_its_line(kind: str, text: str, where: str, says: str) -> None:
    with pytest.raises(DataError, match=f"faq.{kind}{where}.*{says}"):
        parse_faq(text, kind, f"faq.{kind}")


def test_bad_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"must end in \.jsonl, \.csv or \.tsv"):
        read_faq(tmp_path / "faq.txt")
    with pytest.raises(DataError, match="file not found"):
        read_faq(tmp_path / "missing.csv")
    (tmp_path / "latin1.csv").write_bytes("question,answer\ncaf\xe9,x\n".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8"):
        read_faq(tmp_path / "latin1.csv")
    (tmp_path / "empty.csv").write_text("question,answer\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no FAQ pairs"):
        read_faq(tmp_path / "empty.csv")
    with pytest.raises(DataError, match="the format must be one of"):
        parse_faq("x", "xlsx")


def test_kb_pairs_hold_out_one_wording_per_entry() -> None:
    entries = [
        FaqPair("怎么退货", "七天内可退。", ("如何退货", "退货流程")),
        FaqPair("运费多少", "满百包邮。", ("邮费",)),
        FaqPair("营业时间", "九点到五点。"),
    ]
    pairs = kb_pairs(entries)
    assert pairs["train"] == [
        {"query": "怎么退货", "positive": "七天内可退。", "paraphrase": ["如何退货"]},
        {"query": "如何退货", "positive": "七天内可退。", "paraphrase": ["怎么退货"]},
        {"query": "运费多少", "positive": "满百包邮。", "paraphrase": ["邮费"]},
        {"query": "邮费", "positive": "满百包邮。", "paraphrase": ["运费多少"]},
        {"query": "营业时间", "positive": "九点到五点。"},
    ]
    # only an entry with three wordings or more gives one up for validation
    assert pairs["valid"] == [
        {"query": "退货流程", "positive": "七天内可退。", "paraphrase": ["怎么退货", "如何退货"]}
    ]
