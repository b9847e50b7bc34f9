"""The demo knowledge bases come from the prepared chatterbot QA files, once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmos.apps.support.demo import setup_demo
from llmos.errors import DataError, LlmosError
from llmos.store.db import Store
from llmos.store.kb import KnowledgeBases

# rows as `llmos data prepare` writes tasks/qa-{lang}.jsonl
QA = {
    "zh": [
        {"question": "你好", "answer": "你好", "answers": ["你好"], "category": "greetings"},
        {"question": "什么是ai", "answer": "人工智能", "answers": ["人工智能"], "category": "AI"},
    ],
    "en": [
        {"question": "Hello", "answer": "Hi", "answers": ["Hi", "Hey"], "category": "greetings"}
    ],
}


def test_setup_loads_each_demo_knowledge_base_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_encoder: Path
) -> None:
    monkeypatch.setenv("LLMOS_HOME", str(tmp_path))
    monkeypatch.setenv("LLMOS_DATABASE_URL", f"sqlite:///{tmp_path / 'llmos.db'}")
    store = Store()
    demo, _ = store.create_user("demo")
    with pytest.raises(DataError, match="run `llmos data prepare` first"):
        setup_demo("demo", tiny_encoder)
    tasks = tmp_path / "data" / "tasks"
    tasks.mkdir(parents=True)
    for lang, rows in QA.items():
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (tasks / f"qa-{lang}.jsonl").write_text(lines, encoding="utf-8")
    assert setup_demo("demo", tiny_encoder) == {"faq-zh": 2, "faq-en": 1}
    assert setup_demo("demo", tiny_encoder) == {}  # a second `make run` keeps them
    kbs = KnowledgeBases(store)
    [entry] = kbs.snapshot(demo.id, "faq-en").entries
    assert (entry.question, entry.answer, entry.tags) == ("Hello", "Hi", ["greetings"])
    with pytest.raises(LlmosError, match="no user named 'ghost'"):
        setup_demo("ghost", tiny_encoder)
    store.close()
