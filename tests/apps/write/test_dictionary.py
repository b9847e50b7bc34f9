"""User dictionaries: protected terms veto edits inside them, wrong forms become edits,
leftmost-longest matching, and file errors that name the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos.apps.write.dictionary import dictionary_from_entries, read_dictionary
from llmos.apps.write.edits import Edit, apply_edits
from llmos.errors import DataError


def test_protected_terms_veto_edits_and_pairs_add_edits() -> None:
    d = dictionary_from_entries(["林黛玉", "黛玉"], [("阿里八八", "阿里巴巴")])
    text = "林黛玉在阿里八八工作"
    model = [
        Edit(1, 2, "黛", "代", 0.9),  # inside a protected name: dropped
        Edit(6, 7, "八", "巴", 0.8),  # inside a wrong form: the dictionary's edit replaces it
        Edit(8, 9, "工", "功", 0.7),  # elsewhere: kept
    ]
    out = d.apply(text, model)
    assert out == [
        Edit(4, 8, "阿里八八", "阿里巴巴", 1.0, "dictionary"),
        Edit(8, 9, "工", "功", 0.7),
    ]
    assert apply_edits(text, out) == "林黛玉在阿里巴巴功作"


def test_leftmost_longest_match() -> None:
    d = dictionary_from_entries(["黛玉", "林黛玉"])
    assert d.matches("问林黛玉") == [(1, 4, None)]
    assert dictionary_from_entries().apply("abc", [Edit(0, 1, "a", "b", 1.0)]) == [
        Edit(0, 1, "a", "b", 1.0)
    ]


def test_read_dictionary_file(tmp_path: Path) -> None:
    f = tmp_path / "dict.txt"
    f.write_text("# names\n林黛玉\n\n配森\tPython\n", encoding="utf-8")
    d = read_dictionary(f)
    assert d.protect == {"林黛玉"} and d.pairs == {"配森": "Python"}
    f.write_text("林黛玉\na\tb\tc\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dict.txt:2: expected 'term' or 'wrong<TAB>right'"):
        read_dictionary(f)
    f.write_text("甲\n甲\t乙\n", encoding="utf-8")
    with pytest.raises(DataError, match="both protected and a wrong form"):
        read_dictionary(f)


def test_overlapping_edits_are_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        apply_edits("abc", [Edit(0, 2, "ab", "x", 1.0), Edit(1, 2, "b", "y", 1.0)])
