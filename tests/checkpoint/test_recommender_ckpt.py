"""Recommender checkpoints: written atomically, read back equal, every defect named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmos.checkpoint.recommender import (
    is_recommender,
    read_recommender,
    save_recommender,
)
from llmos.data.interactions import Item
from llmos.errors import CheckpointError

ITEMS = [
    Item("a", "Alpha", "1999", ("X", "Y")),
    Item("b", "Beta", "", ()),
    Item("c", "名字", "", ("中",)),
]


def weights(n: int = 3, content: bool = True) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    w = {"ease.weight": torch.randn(n, n), "popularity.counts": torch.arange(n).float()}
    if content:
        w["content.vectors"] = torch.randn(n, 4)
    return w


def test_round_trip(tmp_path: Path) -> None:
    w = weights()
    save_recommender(tmp_path / "r", ITEMS, w, {"catalog": "films", "ease_reg": 5.0})
    assert is_recommender(tmp_path / "r") and not is_recommender(tmp_path)
    ck = read_recommender(tmp_path / "r")
    assert ck.items == tuple(ITEMS) and ck.catalog == "films" and ck.meta["ease_reg"] == 5.0
    assert set(ck.weights) == set(w)
    for k, v in w.items():
        assert torch.equal(ck.weights[k], v)
    assert json.loads((tmp_path / "r" / "task.json").read_text())["task"] == "recommendation"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_save_refuses_weights_that_do_not_fit_the_catalog(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"'ease.weight' has shape \(2, 2\).*\(3, 3\)"):
        save_recommender(tmp_path / "r", ITEMS, weights(2), {})
    with pytest.raises(CheckpointError, match=r"no 'popularity\.counts'"):
        save_recommender(tmp_path / "r", ITEMS, {"ease.weight": torch.zeros(3, 3)}, {})
    with pytest.raises(CheckpointError, match="item id 'a' appears twice"):
        save_recommender(tmp_path / "r", [*ITEMS[:2], ITEMS[0]], weights(), {})
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("items.jsonl", '{"id": "a", "title": "A"}\n{"id": 3}\n', r"jsonl:2: 'title' must be"),
        ("items.jsonl", "{oops\n", r"items.jsonl:1: not JSON"),
        ("task.json", '{"task": "classification"}', r"task.json: field 'task' must be"),
        ("config.json", "[1]", r"config.json: expected a JSON object"),
        ("config.json", '{"model_type": "bert"}', r"config.json: model_type is .bert."),
        ("model.safetensors", "garbage", r"model.safetensors: corrupt safetensors"),
    ],
)
def test_read_names_the_broken_file(tmp_path: Path, file: str, content: str, message: str) -> None:
    save_recommender(tmp_path / "r", ITEMS, weights(), {})
    (tmp_path / "r" / file).write_text(content, encoding="utf-8")
    with pytest.raises(CheckpointError, match=message):
        read_recommender(tmp_path / "r")


def test_read_refuses_an_items_file_of_another_length(tmp_path: Path) -> None:
    save_recommender(tmp_path / "r", ITEMS, weights(), {})
    lines = (tmp_path / "r" / "items.jsonl").read_text().splitlines()
    (tmp_path / "r" / "items.jsonl").write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(CheckpointError, match="catalog of 2 items needs"):
        read_recommender(tmp_path / "r")
