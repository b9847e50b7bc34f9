"""Atomic writes: the target holds the old content or the new, never a part; no temp files
are left behind, after success or failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmos.files import atomic_directory, atomic_path, atomic_write, atomic_write_json


def test_atomic_write_text_bytes_and_json(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    atomic_write(target, "今天\n")
    assert target.read_text(encoding="utf-8") == "今天\n"
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    atomic_write_json(tmp_path / "r.json", {"标签": [1, 2]})
    text = (tmp_path / "r.json").read_text(encoding="utf-8")
    assert json.loads(text) == {"标签": [1, 2]} and "标签" in text and text.endswith("\n")
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.txt"]


def test_atomic_path_keeps_the_suffix_for_writers_that_need_it(tmp_path: Path) -> None:
    target = tmp_path / "cache.npz"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".npz" and tmp.name.startswith(".")
        np.savez(tmp, x=np.arange(3))  # would append .npz to a name without it
    with np.load(target) as z:
        assert z["x"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_two_writes_get_different_temp_names(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "x") as a, atomic_path(tmp_path / "x") as b:
        assert a != b
        a.write_text("a")
        b.write_text("b")
    assert (tmp_path / "x").read_text() == "a"  # the outer block finished last


def test_atomic_directory_replaces_a_directory_whole(tmp_path: Path) -> None:
    atomic_directory(tmp_path / "d", lambda t: (t / "one").write_text("1"))
    atomic_directory(tmp_path / "d", lambda t: (t / "two").write_text("2"))
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["two"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
