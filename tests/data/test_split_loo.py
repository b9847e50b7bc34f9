"""split_leave_one_out (llmos.data.interactions) against RecBole 1.2.1's leave-one-out split:
hand-worked answers with ties and short users, and a line-by-line port of RecBole's code on
random data."""

from __future__ import annotations

import numpy as np

from llmos.data.interactions import Interactions, split_leave_one_out


def make(rows: list[tuple[str, str, float]], items: tuple[str, ...] = ()) -> Interactions:
    """Interactions from (user, item, timestamp) rows, ids numbered by first appearance."""
    users = tuple(dict.fromkeys(u for u, _, _ in rows))
    items = items or tuple(dict.fromkeys(i for _, i, _ in rows))
    return Interactions(
        users,
        items,
        np.asarray([users.index(u) for u, _, _ in rows], np.int64),
        np.asarray([items.index(i) for _, i, _ in rows], np.int64),
        np.ones(len(rows), np.float32),
        np.asarray([t for _, _, t in rows], np.float64),
    )


def rows_of(part: Interactions) -> list[tuple[str, str, float]]:
    return [
        (part.users[u], part.items[i], float(t))
        for u, i, t in zip(part.user, part.item, part.timestamp, strict=True)
    ]


def test_known_answer_with_ties_and_short_users() -> None:
    rows = [
        ("a", "i0", 10),  # 0
        ("b", "i1", 5),  # 1
        ("a", "i1", 30),  # 2  ties with row 5: file order, so 2 is valid and 5 test
        ("a", "i2", 20),  # 3
        ("c", "i3", 1),  # 4
        ("a", "i3", 30),  # 5
        ("b", "i0", 5),  # 6  ties with row 1
        ("b", "i2", 7),  # 7
        ("d", "i4", 3),  # 8  d's only interaction stays in train
        ("c", "i0", 0),  # 9  c: two interactions, 1 train / 0 valid / 1 test
        ("a", "i4", 0),  # 10 the earliest of a, last in the file
    ]
    inter = make(rows)
    train, valid, test = split_leave_one_out(inter)
    # Each part in file order.
    assert rows_of(train) == [rows[r] for r in (0, 1, 3, 8, 9, 10)]
    assert rows_of(valid) == [rows[r] for r in (2, 6)]
    assert rows_of(test) == [rows[r] for r in (4, 5, 7)]
    for part in (train, valid, test):
        assert part.users is inter.users and part.items is inter.items


def test_empty_and_single_user() -> None:
    inter = make([("u", f"i{k}", float(k)) for k in range(4)])
    train, valid, test = split_leave_one_out(inter)
    assert [len(train), len(valid), len(test)] == [2, 1, 1]
    assert rows_of(test) == [("u", "i3", 3.0)] and rows_of(valid) == [("u", "i2", 2.0)]
    empty = inter.subset(np.zeros(0, np.int64))
    assert [len(p) for p in split_leave_one_out(empty)] == [0, 0, 0]


def recbole_leave_one_out(inter: Interactions) -> list[list[int]]:
    """RecBole 1.2.1's split, ported line by line: ``Dataset.build`` with order TO sorts the
    interactions by time (``Interaction.sort``: ``np.argsort(key, kind="stable")``), then
    ``leave_one_out(group_by=uid, leave_one_mode="valid_and_test")`` groups the row indexes
    by user (``_grouped_index``) and splits each group (``_split_index_by_leave_one_out`` with
    ``leave_one_num=2``; recbole/data/dataset/dataset.py)."""
    sorted_rows = np.argsort(inter.timestamp, kind="stable")
    index: dict[int, list[int]] = {}
    for i, key in enumerate(inter.user[sorted_rows]):
        index.setdefault(int(key), []).append(i)
    leave_one_num = 2
    next_index: list[list[int]] = [[] for _ in range(leave_one_num + 1)]
    for group in index.values():
        tot_cnt = len(group)
        legal_leave_one_num = min(leave_one_num, tot_cnt - 1)
        pr = tot_cnt - legal_leave_one_num
        next_index[0].extend(group[:pr])
        for i in range(legal_leave_one_num):
            next_index[-legal_leave_one_num + i].append(group[pr])
            pr += 1
    return [sorted(int(sorted_rows[i]) for i in part) for part in next_index]


def test_matches_recboles_code_on_random_data_with_ties() -> None:
    rng = np.random.default_rng(0)
    n = 600
    inter = Interactions(
        tuple(f"u{k}" for k in range(40)),
        tuple(f"i{k}" for k in range(50)),
        # Users with 1 to ~30 interactions; timestamps from a small range, so many ties.
        np.minimum(rng.geometric(0.08, n) - 1, 39).astype(np.int64),
        rng.integers(0, 50, n).astype(np.int64),
        np.arange(n, dtype=np.float32),  # the rating is the row number: it tells rows apart
        rng.integers(0, 12, n).astype(np.float64),
    )
    sizes = np.bincount(inter.user, minlength=40)
    assert {1, 2, 3} <= set(sizes.tolist())  # short users are covered
    expected = recbole_leave_one_out(inter)
    parts = split_leave_one_out(inter)
    assert [part.rating.astype(int).tolist() for part in parts] == expected
