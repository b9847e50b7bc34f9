"""A models directory of tiny random-init checkpoints (one of every kind the server serves, and
a vector index), a store with users, and a real uvicorn server on a free localhost port."""

from __future__ import annotations

import json
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from llmos.checkpoint.io import save_checkpoint
from llmos.config.model import BertConfig, GPTConfig
from llmos.models.bert import (
    BertForPreTraining,
    BertForSequenceClassification,
    BertForTokenClassification,
)
from llmos.models.gpt import GPT
from llmos.serve.testing import UvicornThread, free_port
from llmos.text.tokenizer import load_tokenizer

DOCS = [
    "我们今天参观城市。",
    "老师昨天讨论经济。",
    "学生经常学习历史。",
    "公司去年发展市场。",
    "农民一直保护环境。",
    "记者现在介绍艺术。",
]
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
# The tiny recommender's catalog: two tastes (comedies, horror) and a drama everyone takes.
CATALOG = [
    ("c1", "Laugh Out", "Comedy"),
    ("c2", "Funny Days", "Comedy"),
    ("c3", "Big Joke", "Comedy"),
    ("c4", "Silly Summer", "Comedy"),
    ("h1", "Night Fear", "Horror"),
    ("h2", "The Cellar", "Horror"),
    ("h3", "Scream Lake", "Horror"),
    ("h4", "Dark House", "Horror"),
    ("d1", "The Long Road", "Drama"),
    ("n1", "Unseen Film", "Drama"),  # nobody took it: only its text can rank it
]


def build_recommender(models: Path) -> Path:
    """``models/movielens``: a recommender over :data:`CATALOG` whose users take either the
    comedies or the horror films (and the drama ``d1``), embedded by the tiny ``emb``."""
    from llmos.apps.recommend.train import train_recommender
    from llmos.apps.support.local import PipelineEmbedder
    from llmos.data.interactions import Interactions, Item

    items = [Item(i, title, "2020", (tag,)) for i, title, tag in CATALOG]
    users, rows = [], []
    for u in range(12):
        taste = ["c1", "c2", "c3", "c4"] if u % 2 == 0 else ["h1", "h2", "h3", "h4"]
        for item in [*taste[: 2 + u % 3], "d1"]:
            users.append(u)
            rows.append([x.id for x in items].index(item))
    inter = Interactions(
        tuple(str(u) for u in range(12)),
        tuple(x.id for x in items),
        np.asarray(users, np.int64),
        np.asarray(rows, np.int64),
        np.ones(len(rows), np.float32),
        np.zeros(len(rows)),
    )
    embed = PipelineEmbedder(models / "emb")
    return train_recommender(
        items,
        models / "movielens",
        inter=inter,
        catalog="tiny",
        reg=1.0,
        embed=embed,
        encoder="emb",
        encoder_digest=embed.name,
    )


def bert_config(vocab: int) -> BertConfig:
    return BertConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_position=64,
        dropout=0.0,
        attention_dropout=0.0,
    )


def build_models(root: Path, wordpiece: Path, bpe: Path) -> Path:
    """``root/models``: cls, ner, mlm, emb, gpt (random init, seeded), ``docs`` (an index
    over DOCS embedded by emb) and ``movielens`` (:func:`build_recommender`)."""
    from llmos.recipes.search import build_index

    models = root / "models"
    torch.manual_seed(0)
    tok = load_tokenizer(wordpiece)
    cfg = bert_config(tok.get_vocab_size())
    save_checkpoint(
        models / "cls" / "checkpoint",  # a training run's layout: served as "cls"
        BertForSequenceClassification(cfg, 2),
        cfg,
        tok,
        {"task": "classification", "labels": ["neg", "pos"], "max_length": 32},
    )
    save_checkpoint(
        models / "ner",
        BertForTokenClassification(cfg, len(NER_LABELS)),
        cfg,
        tok,
        {"task": "tagging", "labels": NER_LABELS, "scheme": "bio", "max_length": 32},
    )
    save_checkpoint(models / "mlm", BertForPreTraining(cfg), cfg, tok)
    save_checkpoint(
        models / "emb",
        BertForPreTraining(cfg),
        cfg,
        tok,
        {"task": "embedding", "pooling": "mean", "normalize": True},
    )
    btok = load_tokenizer(bpe)
    gcfg = GPTConfig(
        vocab_size=btok.get_vocab_size(),
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_position=64,
        dropout=0.0,
    )
    save_checkpoint(models / "gpt", GPT(gcfg), gcfg, btok)
    corpus = root / "docs.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"id": f"d{i}", "text": t}, ensure_ascii=False) + "\n"
            for i, t in enumerate(DOCS)
        ),
        encoding="utf-8",
    )
    build_index(models / "emb", corpus, models / "docs")
    build_recommender(models)
    return models


# The writing assistant's shared corpus in tests: three Tang poems.
WRITE_SHARED = ["床前明月光，疑是地上霜。", "白日依山尽，黄河入海流。", "春眠不觉晓，处处闻啼鸟。"]


def build_writer(root: Path, wordpiece: Path, bpe: Path) -> Path:
    """The writing assistant's tiny models and corpus, as tests/serve/test_write_http.py and
    test_write_style_http.py build them: ``root/models`` with ``csc`` (a random-init spelling
    model over the tokenizer's single characters; at threshold 0 it changes some), ``gpt``
    (word embeddings at a trained model's scale, so that an adapter changes its output) and
    ``emb`` (the material encoder); ``root/apps/write/materials``: :data:`WRITE_SHARED`
    indexed with ``emb`` (corpus ``tang``, documents ``tang-0``...). Returns ``root/models``."""
    from tiny_models import save_tiny_gpt

    from llmos.apps.support.local import PipelineEmbedder
    from llmos.apps.write.suggestions import build_shared
    from llmos.data.materials import SourceDocument
    from llmos.inference.correct import CharVocab
    from llmos.models.csc import BertForSpellingCorrection

    models = root / "models"
    tok = load_tokenizer(wordpiece)
    cfg = bert_config(tok.get_vocab_size())
    vocab = CharVocab.from_tokenizer(tok)
    torch.manual_seed(0)
    csc = BertForSpellingCorrection(cfg, len(vocab.ids))
    csc.init_correction(torch.from_numpy(vocab.ids))
    task = {"task": "spelling", "chars": len(vocab.ids), "max_length": 32, "threshold": 0.5}
    save_checkpoint(models / "csc", csc, cfg, tok, task)
    save_tiny_gpt(bpe, models / "gpt")
    emb = {"task": "embedding", "pooling": "mean", "normalize": True}
    save_checkpoint(models / "emb", BertForPreTraining(cfg), cfg, tok, emb)
    shared = build_shared(
        [SourceDocument("tang", f"tang-{i}", t, (t,)) for i, t in enumerate(WRITE_SHARED)],
        PipelineEmbedder(models / "emb"),
    )
    shared.save(root / "apps" / "write" / "materials")
    return models


@pytest.fixture(scope="session")
def models_dir(
    tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path, bpe_tokenizer: Path
) -> Path:
    return build_models(tmp_path_factory.mktemp("serve"), tiny_tokenizer, bpe_tokenizer)


@dataclass
class Live:
    """A running server: its base URL, a store handle, and keys of an admin and two users."""

    url: str
    app: object
    admin: str
    alice: str
    bob: str

    def client(self, key: str | None = None, **kw: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, **{"timeout": 60, **kw})


def start(models: Path, db_url: str, **settings: object) -> tuple[UvicornThread, Live]:
    from llmos.serve.app import create_app
    from llmos.serve.settings import ServeSettings
    from llmos.store.db import Store

    store = Store(db_url)
    keys = {}
    for name, admin in (("admin", True), ("alice", False), ("bob", False)):
        user = store.user(name)
        keys[name] = store.create_key(user.id) if user else store.create_user(name, admin)[1]
    store.close()
    app = create_app(ServeSettings(models_dir=models, database_url=db_url, **settings))
    port = free_port()
    runner = UvicornThread(app, port)
    return runner, Live(f"http://127.0.0.1:{port}", app, keys["admin"], keys["alice"], keys["bob"])


@pytest.fixture(scope="module")
def live(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One server for a test module (SQLite store, default limits but the rate limit off; the
    customer-service app searches with the tiny ``emb`` model)."""
    d = tmp_path_factory.mktemp("db")
    runner, server = start(
        models_dir,
        f"sqlite:///{d / 'llmos.db'}",
        rate_limit=0,
        support_encoder="emb",
        recommend_encoder="emb",
        apps_dir=d,
    )
    with runner:
        yield server


def metric(client: httpx.Client, name: str, **labels: str) -> float:
    """A sample of the server's ``GET /metrics`` (0 when it has not been recorded yet)."""
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def wait_for_metric(
    client: httpx.Client, name: str, above: float, failure: str, timeout: float = 30, **labels: str
) -> None:
    """Poll ``GET /metrics`` until the sample ``name{labels}`` exceeds ``above``; after
    ``timeout`` seconds the test fails with ``failure``."""
    deadline = time.monotonic() + timeout
    while metric(client, name, **labels) <= above:
        if time.monotonic() > deadline:
            pytest.fail(failure)
        time.sleep(0.02)


def slow_streams(
    monkeypatch: pytest.MonkeyPatch, delay: float, decoded: list[str] | None = None
) -> None:
    """Slow every piece of the server's streams (``GeneratorPipeline.stream_completion``, which
    they run in this process) by ``delay`` seconds, so that a client's hang-up lands
    mid-stream; each piece decoded is appended to ``decoded``."""
    from llmos.inference.generator import GeneratorPipeline

    real = GeneratorPipeline.stream_completion

    def slow(self: GeneratorPipeline, prompt: str, **options: object) -> Generator:
        pieces = real(self, prompt, **options)
        while True:
            try:
                piece = next(pieces)
            except StopIteration as end:  # the whole stream's Completion
                return end.value
            time.sleep(delay)
            if decoded is not None:
                decoded.append(piece)
            yield piece

    monkeypatch.setattr(GeneratorPipeline, "stream_completion", slow)


# The tiny CLIP's images that the label texts CLIP_TEXTS are aligned with (twitter style rows).
CLIP_ALIGNED = (2, 7)
CLIP_TEXTS = ("book", "city")


def build_clip_models(root: Path, wordpiece: Path) -> tuple[Path, Path]:
    """``root/models`` with ``clip`` (:func:`tiny_models.save_tiny_clip`) and its text tower
    ``e5`` (an embedding model, so served too: a model that reads texts only), and
    ``root/home``, a fake emoji home (:func:`tiny_models.fake_emoji_home`). The CLIP's text
    projection is set so that :data:`CLIP_TEXTS`' vectors are exactly the vectors of the
    twitter images :data:`CLIP_ALIGNED` (zero-shot then has a right answer). Returns
    ``(models, home)``."""
    from tiny_models import fake_emoji_home, save_tiny_clip, save_tiny_text_tower

    from llmos.data.emoji import load_images
    from llmos.inference.image import load_image_pipeline

    home = fake_emoji_home(root / "home")
    models = root / "models"
    tower = save_tiny_text_tower(wordpiece, models / "e5")
    ckpt = save_tiny_clip(models / "clip" / "checkpoint", tower)
    pipe = load_image_pipeline(ckpt, emoji_home=home)
    twitter = load_images(home, "twitter")[1]
    targets = pipe.embed_images([png(twitter[i]) for i in CLIP_ALIGNED]).astype(np.float64)
    raw = pipe.tower_vectors(list(CLIP_TEXTS)).astype(np.float64)  # (2, text_dim)
    weight = targets.T @ np.linalg.pinv(raw.T)  # (D, text_dim): raw_i -> targets_i
    with torch.no_grad():
        pipe.model.text_projection.weight.copy_(torch.from_numpy(weight).float())
    save_checkpoint(ckpt, pipe.model, pipe.config, None, pipe.checkpoint.meta)
    return models, home


def png(rgba: np.ndarray) -> bytes:
    """An (H, W, 4) uint8 RGBA array as PNG bytes."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG")
    return buf.getvalue()
