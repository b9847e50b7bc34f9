"""Interactions and their evaluation split, as the recommendation models read them.

Files are RecBole's atomic format (tab-separated, a header of ``name:type`` columns), so that a
split written here is the very split RecBole evaluates on (``bench/recommend_eval.py``):

    user_id:token   item_id:token   rating:float    timestamp:float
    196             242             3               881250949

``user_id`` and ``item_id`` are required; ``rating`` and ``timestamp`` are optional (a missing
rating is 1, a missing timestamp 0). Every interaction is a positive: there is no rating
threshold, as in RecBole's default MovieLens configuration. A malformed line is a
:class:`~llmos.errors.DataError` naming the file and line.

Users and items are numbered in order of first appearance in the file (the external tokens are
kept in ``users`` / ``items``); the models and the metrics work on those numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from llmos.errors import DataError

HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"


@dataclass(frozen=True)
class Interactions:
    """Interactions as parallel arrays over shared user and item vocabularies.

    ``user``, ``item``: (N,) int64 indexes into ``users`` / ``items`` (the external ids);
    ``rating``: (N,) float32; ``timestamp``: (N,) float64. Several splits of one data set share
    the vocabularies, so a matrix of one split lines up with another's.
    """

    users: tuple[str, ...]
    items: tuple[str, ...]
    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_items(self) -> int:
        return len(self.items)

    def subset(self, rows: np.ndarray) -> Interactions:
        """The interactions at ``rows`` (indexes or a mask), same vocabularies."""
        return Interactions(
            self.users,
            self.items,
            self.user[rows],
            self.item[rows],
            self.rating[rows],
            self.timestamp[rows],
        )

    def matrix(self) -> sp.csr_matrix:
        """The (users, items) 0/1 matrix of who interacted with what (float32)."""
        m = sp.csr_matrix(
            (np.ones(len(self), np.float32), (self.user, self.item)),
            shape=(self.num_users, self.num_items),
        )
        m.data[:] = 1.0  # a pair seen twice is still one interaction
        return m


def atomic_rows(path: str | Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """The rows of a RecBole atomic file as ``(line number, {column: cell})``, blank lines
    skipped. The file, its encoding, its header (which must name every ``required`` column)
    and each row's field count are checked, with the file and line in the error."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    if not lines:
        raise DataError(f"{path}: empty file; expected a header line ({', '.join(required)})")
    names = [h.split(":", 1)[0].strip() for h in lines[0].split("\t")]
    for need in required:
        if need not in names:
            raise DataError(f"{path}:1: the header has no {need!r} column")
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(names):
            raise DataError(
                f"{path}:{lineno}: {len(cells)} tab-separated fields, the header has {len(names)}"
            )
        yield lineno, dict(zip(names, cells, strict=True))


def read_inter(path: str | Path) -> Interactions:
    """An atomic ``.inter`` file (RecBole's format; see the module docstring)."""
    path = Path(path)
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    u, i, r, t = [], [], [], []
    for lineno, cells in atomic_rows(path, ("user_id", "item_id")):
        user, item = cells["user_id"].strip(), cells["item_id"].strip()
        if not user or not item:
            raise DataError(f"{path}:{lineno}: empty user_id or item_id")
        u.append(users.setdefault(user, len(users)))
        i.append(items.setdefault(item, len(items)))
        for name, out, default in (("rating", r, 1.0), ("timestamp", t, 0.0)):
            if name not in cells:
                out.append(default)
                continue
            try:
                out.append(float(cells[name]))
            except ValueError:
                raise DataError(
                    f"{path}:{lineno}: {name} must be a number, got {cells[name]!r:.40}"
                ) from None
    if not u:
        raise DataError(f"{path}: no interactions after the header")
    return Interactions(
        tuple(users),
        tuple(items),
        np.asarray(u, np.int64),
        np.asarray(i, np.int64),
        np.asarray(r, np.float32),
        np.asarray(t, np.float64),
    )


def write_inter(path: str | Path, inter: Interactions) -> None:
    """Write ``inter`` as an atomic ``.inter`` file, external ids as they were read."""
    rows = [HEADER]
    for u, i, r, t in zip(inter.user, inter.item, inter.rating, inter.timestamp, strict=True):
        rows.append(f"{inter.users[u]}\t{inter.items[i]}\t{r:g}\t{t:.0f}")
    Path(path).write_text("\n".join(rows) + "\n", encoding="utf-8")


def split_by_ratio(
    inter: Interactions, ratios: tuple[float, ...] = (0.8, 0.1, 0.1), seed: int = 2020
) -> tuple[Interactions, ...]:
    """RecBole's default evaluation split (``RS`` by ratio, order ``RO``, grouped by user):
    each user's interactions in a seeded random order, cut into parts of the sizes
    :func:`part_sizes` gives (RecBole's rounding)."""
    if not ratios or any(x <= 0 for x in ratios):
        raise ValueError(f"ratios must be positive, got {ratios}")
    total = sum(ratios)
    shares = [x / total for x in ratios]
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in ratios]
    order = np.argsort(inter.user, kind="stable")
    bounds = np.flatnonzero(np.diff(inter.user[order])) + 1
    for rows in np.split(order, bounds):
        rows = rows[rng.permutation(len(rows))]
        ends = np.cumsum(part_sizes(len(rows), shares))
        for k, (a, b) in enumerate(zip([0, *ends[:-1]], ends, strict=True)):
            parts[k].append(rows[a:b])
    return tuple(inter.subset(np.sort(np.concatenate(p))) for p in parts)


def split_leave_one_out(inter: Interactions) -> tuple[Interactions, Interactions, Interactions]:
    """RecBole's leave-one-out split (``eval_args``: ``order: TO``, ``split: {LS:
    valid_and_test}``, grouped by user): each user's interactions ordered by timestamp (a
    stable sort: equal timestamps keep their order in the file), the last one to test, the one
    before it to valid, the rest to train.

    A user with fewer than three interactions gives up what is left after train keeps one, the
    test part first (RecBole 1.2.1's ``Dataset._split_index_by_leave_one_out``: it leaves out
    ``min(2, n - 1)`` interactions, the last to test): two interactions are 1 train / 0 valid
    / 1 test, a single one stays in train.

    Of a sequential model RecBole splits the augmented (prefix, next item) examples instead,
    one fewer than the interactions, since a user's first interaction is no target: users with
    four or more interactions (all of ML-100K's) get the very split above; one with three has
    no valid example there, one with two no test example.

    Returns:
        ``(train, valid, test)``, each in file order, over the same vocabularies as ``inter``.
    """
    order = np.argsort(inter.timestamp, kind="stable")
    order = order[np.argsort(inter.user[order], kind="stable")]  # by user, then by time
    users = inter.user[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    sizes = np.diff(np.r_[starts, len(users)])
    size = np.repeat(sizes, sizes)  # (N,) each row's user's interaction count
    from_end = np.repeat(starts + sizes, sizes) - 1 - np.arange(len(users))  # 0: the last
    test = (from_end == 0) & (size >= 2)
    valid = (from_end == 1) & (size >= 3)
    train = ~(test | valid)

    def part(mask: np.ndarray) -> Interactions:
        return inter.subset(np.sort(order[mask]))

    return part(train), part(valid), part(test)


def part_sizes(n: int, shares: list[float]) -> list[int]:
    """How a user's ``n`` interactions are shared out (RecBole's
    ``Dataset._calcu_split_ids``): every part but the first gets ``int(share * n)``, the first
    the rest; then, from the last part backwards, a part whose share of ``n`` is below one
    interaction takes one from the first part while the first keeps more than one. So 10
    interactions give 8 / 1 / 1, 25 give 21 / 2 / 2, 3 give 1 / 1 / 1."""
    sizes = [int(x * n) for x in shares]
    sizes[0] = n - sum(sizes[1:])
    for k in range(1, len(shares)):
        if sizes[0] <= 1:
            break
        if 0 < shares[-k] * n < 1:
            sizes[-k] += 1
            sizes[0] -= 1
    return sizes


@dataclass(frozen=True)
class Item:
    """A catalog item: its title, text and tags (MovieLens: title, year, genres)."""

    id: str
    title: str
    text: str = ""
    tags: tuple[str, ...] = ()


def read_atomic_items(path: str | Path) -> dict[str, Item]:
    """An atomic ``.item`` file (RecBole's format), by item id: ``item_id`` required; the
    title from ``movie_title`` or ``title``, the tags from ``class``, ``genre`` or ``tags``
    (space-separated), the text from the other columns (``release_year`` ...)."""
    out: dict[str, Item] = {}
    for _, cells in atomic_rows(path, ("item_id",)):
        title_col = next((n for n in ("movie_title", "title") if n in cells), None)
        tag_col = next((n for n in ("class", "genre", "tags") if n in cells), None)
        item = cells["item_id"].strip()
        rest = [v for n, v in cells.items() if n not in ("item_id", title_col, tag_col) and v]
        out[item] = Item(
            item,
            cells[title_col].strip() if title_col else item,
            " ".join(rest),
            tuple(cells[tag_col].split()) if tag_col else (),
        )
    return out


def read_jsonl_items(path: str | Path) -> list[Item]:
    """A JSONL catalog: one ``{"id", "title", "text", "tags"}`` object a line (``text`` and
    ``tags`` optional; an integer id is read as a string). A malformed line, an unknown field
    or an id seen before is a :class:`~llmos.errors.DataError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    items: list[Item] = []
    seen: set[str] = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object")
        item = row.get("id")
        if isinstance(item, int) and not isinstance(item, bool):
            item = str(item)
        title, text, tags = row.get("title"), row.get("text", ""), row.get("tags", [])
        if not isinstance(item, str) or not item.strip():
            raise DataError(f"{path}:{lineno}: 'id' must be a non-empty string")
        if not isinstance(title, str) or not title.strip():
            raise DataError(f"{path}:{lineno}: 'title' must be a non-empty string")
        if not isinstance(text, str):
            raise DataError(f"{path}:{lineno}: 'text' must be a string")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise DataError(f"{path}:{lineno}: 'tags' must be a list of strings")
        unknown = sorted(set(row) - {"id", "title", "text", "tags"})
        if unknown:
            raise DataError(
                f"{path}:{lineno}: unknown field {unknown[0]!r} (expected id, title, text, tags)"
            )
        if item.strip() in seen:
            raise DataError(f"{path}:{lineno}: item id {item!r} appears twice")
        seen.add(item.strip())
        items.append(Item(item.strip(), title.strip(), text, tuple(tags)))
    if not items:
        raise DataError(f"{path}: no items")
    return items
