"""Shared fixtures: a small synthetic corpus in the pretraining format, and its tokenizer."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Tests never touch the user's ~/.llmos: caches and data go to a throwaway home, which
    # subprocesses inherit too.
    os.environ["LLMOS_HOME"] = tempfile.mkdtemp(prefix="llmos-test-home-")


SUBJECTS = ["我们", "他", "老师", "学生", "公司", "政府", "记者", "农民", "工人", "科学家"]
VERBS = ["喜欢", "研究", "参观", "讨论", "建设", "保护", "发展", "支持", "学习", "介绍"]
OBJECTS = ["经济", "文化", "城市", "农村", "技术", "教育", "历史", "环境", "市场", "艺术"]
ADVERBS = ["今天", "昨天", "去年", "明年", "现在", "一直", "经常", "已经"]
ENGLISH = ["the market grew", "students read books", "the city is big", "we like music"]


def write_corpus(path: Path, n_docs: int, seed: int) -> None:
    """Documents of 1-6 template sentences, one sentence per line, blank line between docs."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_docs):
        for _ in range(rng.randint(1, 6)):
            s = rng.choice(ADVERBS) + rng.choice(SUBJECTS) + rng.choice(VERBS) + rng.choice(OBJECTS)
            if rng.random() < 0.15:
                s += "，" + rng.choice(ENGLISH)
            lines.append(s + rng.choice("。！？"))
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    write_corpus(d / "train.txt", 400, seed=0)
    write_corpus(d / "valid.txt", 40, seed=1)
    return d


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_corpus: Path) -> Path:
    from llmos.text.tokenizer import train_tokenizer

    return train_tokenizer("wordpiece", [tiny_corpus / "train.txt"], 200, tiny_corpus / "tok")


@pytest.fixture(scope="session")
def tiny_encoder(
    tiny_corpus: Path, tiny_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A 2-layer, 32-wide BERT pretrained for 2 steps on the tiny corpus."""
    from llmos.config import PretrainConfig, load_config
    from llmos.recipes.pretrain import pretrain

    out = tmp_path_factory.mktemp("enc")
    cfg = load_config(
        PretrainConfig,
        None,
        [
            f"data.corpus={tiny_corpus}",
            f"data.tokenizer={tiny_tokenizer}",
            f"out_dir={out}",
            "model.hidden_size=32",
            "model.num_layers=2",
            "model.num_heads=2",
            "model.intermediate_size=64",
            "data.max_length=32",
            "train.max_steps=2",
            "train.batch_size=8",
            "train.progress=false",
            "train.precision=fp32",
        ],
    )
    return pretrain(cfg).checkpoint
