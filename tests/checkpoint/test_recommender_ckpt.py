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
    with pytest.raises(
        CheckpointError, match=r"'mf.items' has shape \(2, 4\), expected \(3, dim\)"
    ):
        save_recommender(tmp_path / "r", ITEMS, {**weights(), "mf.items": torch.zeros(2, 4)}, {})
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


def train_tensors() -> dict[str, torch.Tensor]:
    # seconds since 1970: float32 would round them to 128 s
    time = [1.7e9 + 1, 1.7e9 + 2, float("nan"), 3.0, 4.0]
    return {
        "train.user": torch.tensor([0, 0, 1, 2, 2], dtype=torch.int64),
        "train.item": torch.tensor([0, 2, 1, 2, 0], dtype=torch.int64),
        "train.time": torch.tensor(time, dtype=torch.float64),
    }


def test_the_kept_interactions_round_trip_with_their_dtypes(tmp_path: Path) -> None:
    w = {**weights(), **train_tensors()}
    save_recommender(tmp_path / "r", ITEMS, w, {})
    ck = read_recommender(tmp_path / "r")
    user, item, time = ck.interactions
    assert user.dtype == item.dtype == torch.int64 and time.dtype == torch.float64
    assert user.tolist() == [0, 0, 1, 2, 2] and item.tolist() == [0, 2, 1, 2, 0]
    assert torch.equal(time.isnan(), w["train.time"].isnan())
    assert time[1].item() == 1.7e9 + 2
    save_recommender(tmp_path / "old", ITEMS, weights(), {})  # a checkpoint that keeps none
    assert read_recommender(tmp_path / "old").interactions is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train.time": None}, r"\['train.user', 'train.item'\] without \['train.time'\]"),
        ({"train.time": torch.zeros(4, dtype=torch.float64)}, "shapes .* differ"),
        ({"train.item": torch.tensor([0, 1, 2, 3, 0])}, "rows of the 3-item catalog"),
        ({"train.user": torch.tensor([0, -1, 1, 2, 2])}, "'train.user' indexes from 0"),
        ({"train.item": torch.zeros(5, dtype=torch.float64)}, "'train.item' must hold integers"),
    ],
)
def test_kept_interactions_that_do_not_fit_are_named(
    tmp_path: Path, change: dict, message: str
) -> None:
    w = {**weights(), **train_tensors()}
    for k, v in change.items():
        if v is None:
            del w[k]
        else:
            w[k] = v
    with pytest.raises(CheckpointError, match=message):
        save_recommender(tmp_path / "r", ITEMS, w, {})


def test_a_ranker_round_trips_and_a_configured_ranker_needs_its_weights(tmp_path: Path) -> None:
    ranker = {"features": ["personal", "popular"], "hidden": 0}
    w = {
        **weights(),
        "ranker.out.weight": torch.tensor([[1.5, 0.25]]),
        "ranker.out.bias": torch.zeros(1),
    }
    save_recommender(tmp_path / "r", ITEMS, w, {}, ranker=ranker)
    ck = read_recommender(tmp_path / "r")
    assert ck.ranker == ranker and torch.equal(
        ck.weights["ranker.out.weight"], w["ranker.out.weight"]
    )
    save_recommender(tmp_path / "r", ITEMS, weights(), {}, ranker=ranker)  # no ranker. weights
    with pytest.raises(CheckpointError, match=r"config.json: 'ranker' must be null or"):
        read_recommender(tmp_path / "r")
    with pytest.raises(CheckpointError, match=r"unexpected tensors \['rank.x'\]"):
        save_recommender(tmp_path / "s", ITEMS, {**weights(), "rank.x": torch.zeros(1)}, {})
