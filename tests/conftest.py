"""Shared fixtures: a small synthetic corpus in the pretraining format, its tokenizers, tiny
models; fresh databases for the store, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import random
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import NullPool, create_engine, make_url, text
from sqlalchemy.exc import DBAPIError
from tiny_words import ADVERBS, ENGLISH, OBJECTS, SUBJECTS, VERBS


def pytest_configure(config: pytest.Config) -> None:
    # Tests never touch the user's ~/.llmos: caches and data go to a throwaway home, which
    # subprocesses inherit too.
    os.environ["LLMOS_HOME"] = tempfile.mkdtemp(prefix="llmos-test-home-")


# --- databases ---------------------------------------------------------------------------
# The store's tests run on both backends. PostgreSQL needs a server: LLMOS_TEST_DATABASE_URL
# names a database on it whose role may CREATE DATABASE (`make postgres` sets one up and prints
# the variable). Each test gets a database of its own, dropped afterwards. Without the variable
# the PostgreSQL tests skip, unless LLMOS_REQUIRE_POSTGRES=1 (CI), where they fail.

NO_POSTGRES = "no PostgreSQL server: set LLMOS_TEST_DATABASE_URL or run make postgres"


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database (UTF-8), dropped on exit."""
    server = os.environ.get("LLMOS_TEST_DATABASE_URL")
    if not server:
        if os.environ.get("LLMOS_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"LLMOS_REQUIRE_POSTGRES=1 but {NO_POSTGRES}")
        pytest.skip(NO_POSTGRES)
    name = f"llmos_test_{secrets.token_hex(6)}"
    # CREATE/DROP DATABASE cannot run inside a transaction.
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as c:
        # template0 + UTF8 + C: valid whatever the cluster's own locale and encoding are.
        c.execute(
            text(
                f'CREATE DATABASE "{name}" TEMPLATE template0 '
                "ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
            )
        )
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        # A test that failed before closing its store still holds connections: this role's
        # sessions on the database are ended first. Then a plain DROP, which stops an
        # autovacuum worker on the database by itself; DROP ... WITH (FORCE) would not: it
        # refuses to end a process of no role it belongs to (InsufficientPrivilege; tried again
        # every half second, CI saw 30 s teardowns and one failed after its 20 tries).
        sessions = text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = :name AND usename = current_user AND pid <> pg_backend_pid()"
        )
        for attempt in range(20):
            try:
                with admin.connect() as c:
                    c.execute(sessions, {"name": name})
                    c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                break
            except DBAPIError:
                if attempt == 19:
                    raise
                time.sleep(0.5)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for one test, once on SQLite (a file) and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        with fresh_postgres_database() as url:
            yield url


@pytest.fixture()
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, for the tests of server-only behaviour."""
    with fresh_postgres_database() as url:
        yield url


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
def bpe_tokenizer(tiny_corpus: Path) -> Path:
    """A byte-level BPE of 300 tokens (with end-of-text) over the tiny corpus: for GPTs."""
    from llmos.text.tokenizer import train_tokenizer

    return train_tokenizer("bpe", [tiny_corpus / "train.txt"], 300, tiny_corpus / "serve-bpe")


@pytest.fixture(scope="session")
def tiny_gpt(bpe_tokenizer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`tiny_models.save_tiny_gpt`'s checkpoint (tests load it; none may change it)."""
    from tiny_models import save_tiny_gpt

    return save_tiny_gpt(bpe_tokenizer, tmp_path_factory.mktemp("tiny-gpt") / "gpt")


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


def nlu_rows(n: int, seed: int) -> list[dict]:
    """``<adverb><subject><verb>[<object>]。``: the verb is the intent (参观 without its object
    a third of the time), subject and object are slots. 保护 is left out: the domain adds it
    from examples."""
    import random

    from recipes.test_finetune_tagging_cjk_split import ADVERBS, OBJECTS, SUBJECTS

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, s, o = rng.choice(ADVERBS), rng.choice(SUBJECTS), rng.choice(OBJECTS)
        v = rng.choice(["参观", "研究"])
        o = "" if v == "参观" and rng.random() < 0.33 else o
        text = f"{a}{s}{v}{o}。"
        i, j = len(a), len(a) + len(s) + len(v)
        slots = [{"name": "who", "value": s, "start": i, "end": i + len(s)}]
        if o:
            slots.append({"name": "what", "value": o, "start": j, "end": j + len(o)})
        out.append({"text": text, "intent": v, "slots": slots})
    return out


@pytest.fixture(scope="session")
def nlu_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny multitask NLU checkpoint (intent, slots with a CRF, sentiment) trained on the
    synthetic sentences of :func:`nlu_rows`, for the support desk's tests (apps, serve,
    e2e): 参观 (its object missing a third of the time) and 研究 are its intents."""
    import json

    from recipes.test_finetune_tagging_cjk_split import unigram_encoder

    from llmos.config import FinetuneConfig, load_config
    from llmos.recipes.finetune import finetune

    root = tmp_path_factory.mktemp("nlu")
    encoder = unigram_encoder(root / "enc")
    data, mood = root / "intents", root / "mood"
    data.mkdir()
    mood.mkdir()
    for split, n, seed in (("train", 300, 0), ("valid", 40, 1), ("test", 40, 2)):
        rs = nlu_rows(n, seed)
        (data / f"{split}.jsonl").write_text(
            "\n".join(json.dumps(r, ensure_ascii=False) for r in rs) + "\n", encoding="utf-8"
        )
        lines = [f"{r['text']}\t{'neg' if r['text'].startswith('昨天') else 'pos'}" for r in rs]
        (mood / f"{split}.tsv").write_text("text\tlabel\n" + "\n".join(lines) + "\n")
    spec = {
        "name": "nlu",
        "out_dir": str(root),
        "init": str(encoder),
        "task": "multitask",
        "heads": [
            {"name": "intent", "data": {"dataset": str(data), "label_key": "intent"}},
            {
                "name": "slots",
                "task": "tagging",
                "crf": True,
                "data": {"dataset": str(data), "spans_key": "slots"},
            },
            {"name": "sentiment", "data": {"dataset": str(mood)}},
        ],
        "optim": {"lr": 3e-3, "warmup_steps": 5},
        "train": {
            "max_steps": 180,
            "batch_size": 16,
            "eval_every": 0,
            "save_every": 180,
            "progress": False,
            "precision": "fp32",
        },
    }
    (root / "nlu.yaml").write_text(json.dumps(spec), encoding="utf-8")
    return finetune(load_config(FinetuneConfig, root / "nlu.yaml")).checkpoint
