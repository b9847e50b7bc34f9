"""Interaction files and RecBole's ratio split (llmos.data.interactions)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from llmos.data.interactions import (
    HEADER,
    Interactions,
    part_sizes,
    read_atomic_items,
    read_inter,
    split_by_ratio,
    write_inter,
)
from llmos.errors import DataError


def interactions(per_user: dict[str, int], items: int = 40, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    users = list(per_user)
    u = np.concatenate([np.full(n, k) for k, n in enumerate(per_user.values())])
    i = np.concatenate([rng.choice(items, n, replace=False) for n in per_user.values()])
    return Interactions(
        tuple(users),
        tuple(f"i{j}" for j in range(items)),
        u.astype(np.int64),
        i.astype(np.int64),
        rng.integers(1, 6, len(u)).astype(np.float32),
        np.arange(len(u), dtype=np.float64),
    )


@pytest.mark.parametrize(
    ("n", "sizes"),
    # RecBole 1.2.1 Dataset._calcu_split_ids with ratios [0.8, 0.1, 0.1]
    [
        (10, [8, 1, 1]),
        (25, [21, 2, 2]),
        (3, [1, 1, 1]),
        (2, [1, 0, 1]),
        (1, [1, 0, 0]),
        (100, [80, 10, 10]),
        (19, [17, 1, 1]),
    ],
)
def test_part_sizes_are_recboles(n: int, sizes: list[int]) -> None:
    assert part_sizes(n, [0.8, 0.1, 0.1]) == sizes


def test_split_cuts_each_user_by_the_ratios_and_keeps_every_row_once() -> None:
    data = interactions({"a": 10, "b": 25, "c": 3, "d": 2, "e": 1})
    parts = split_by_ratio(data, seed=7)
    rows = Counter()
    for k, part in enumerate(parts):
        assert part.users == data.users and part.items == data.items
        got = Counter(part.user.tolist())
        for u, n in Counter(data.user.tolist()).items():
            assert got.get(u, 0) == part_sizes(n, [0.8, 0.1, 0.1])[k]
        rows.update(zip(part.user.tolist(), part.item.tolist(), strict=True))
    assert rows == Counter(zip(data.user.tolist(), data.item.tolist(), strict=True))


def test_split_is_seeded() -> None:
    data = interactions({u: 20 for u in "abcdef"})
    same = [split_by_ratio(data, seed=3)[2].item.tolist() for _ in range(2)]
    other = split_by_ratio(data, seed=4)[2].item.tolist()
    assert same[0] == same[1] and same[0] != other


def test_inter_files_round_trip(tmp_path: Path) -> None:
    data = interactions({"u1": 5, "u2": 3})
    write_inter(tmp_path / "x.inter", data)
    back = read_inter(tmp_path / "x.inter")
    assert back.users == data.users
    names = [back.items[i] for i in back.item]
    assert names == [data.items[i] for i in data.item]
    assert back.rating.tolist() == data.rating.tolist()
    assert back.timestamp.tolist() == data.timestamp.tolist()
    m = back.matrix()
    assert m.shape == (2, len(back.items)) and m.sum() == 8


def test_optional_columns_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "x.inter"
    path.write_text("item_id:token\tuser_id:token\nA\tu\nB\tu\nA\tu\nA\tv\n")
    data = read_inter(path)
    assert data.users == ("u", "v") and data.items == ("A", "B")
    assert data.rating.tolist() == [1.0] * 4 and data.timestamp.tolist() == [0.0] * 4
    assert data.matrix().toarray().tolist() == [[1.0, 1.0], [1.0, 0.0]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("user:token\titem_id:token\n", ":1: the header has no 'user_id'"),
        (f"{HEADER}\n1\t2\t3\n", ":2: 3 tab-separated fields, the header has 4"),
        (f"{HEADER}\n1\t2\t3\t4\n1\t2\tfive\t4\n", ":3: rating must be a number"),
        (f"{HEADER}\n\t2\t3\t4\n", ":2: empty user_id"),
        (f"{HEADER}\n", "no interactions"),
    ],
)
def test_malformed_files_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.inter"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as e:
        read_inter(path)
    assert str(path) in str(e.value)


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_inter(tmp_path / "none.inter")
    (tmp_path / "b.inter").write_bytes(b"\xff\xfe")
    with pytest.raises(DataError, match="not valid UTF-8"):
        read_inter(tmp_path / "b.inter")


def test_atomic_item_files(tmp_path: Path) -> None:
    path = tmp_path / "x.item"
    path.write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    )
    item = read_atomic_items(path)["1"]
    assert (item.title, item.text, item.tags) == (
        "Toy Story",
        "1995",
        ("Animation", "Children's", "Comedy"),
    )
    path.write_text("item_id:token\ttitle:token_seq\n1\tA\textra\n")
    with pytest.raises(DataError, match=":2: 3 tab-separated fields"):
        read_atomic_items(path)
    path.write_text("id:token\n")
    with pytest.raises(DataError, match="no 'item_id'"):
        read_atomic_items(path)
    path.write_bytes(b"item_id:token\n\xff\n")
    with pytest.raises(DataError, match="not valid UTF-8"):
        read_atomic_items(path)
