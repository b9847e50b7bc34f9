"""The writing assistant's documents, adapters and continuation over HTTP on a real server:
documents stay with their owner, ``/continue`` answers what the Python API answers (with the
caller's adapter, or the base), streamed or not, and one user's adapter never decodes for
another."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import llmos
from llmos.apps.write.adapters import UserAdapters
from llmos.inference.generate import GenerationConfig, generate_ids
from llmos.models import lora
from llmos.store.db import Store
from serve.conftest import WRITE_SHARED, Live, build_writer, start

WORDS = ["却说", "曹操", "引兵", "大败", "玄德", "关公", "张飞", "于是", "次日", "城下"]
GREEDY = {"max_new_tokens": 12, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0}


def style_text(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(
        "".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))) + "。" for _ in range(n)
    )


@pytest.fixture(scope="module")
def live_style(
    tmp_path_factory: pytest.TempPathFactory, bpe_tokenizer: Path, tiny_tokenizer: Path
) -> Iterator[tuple[Live, Path, Path]]:
    root = tmp_path_factory.mktemp("write-style")
    path = build_writer(root, tiny_tokenizer, bpe_tokenizer) / "gpt"
    db = f"sqlite:///{root / 'llmos.db'}"
    runner, server = start(
        root / "models",
        db,
        rate_limit=0,
        write_generator="gpt",
        write_encoder="emb",
        apps_dir=root / "apps",
        workers=1,  # a real `llmos worker` process trains the adapters
    )
    with runner:
        yield server, path, root


def _events(body: str) -> list[tuple[str, dict]]:
    out = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines.get("event", "message"), json.loads(lines["data"])))
    return out


def test_documents_belong_to_their_owner(live_style) -> None:
    live, _, _ = live_style
    with live.client(live.alice) as alice, live.client(live.bob) as bob:
        r = alice.post("/v1/apps/write/documents", json={"title": "第一回", "text": "宴桃园。"})
        assert r.status_code == 201, r.text
        doc = r.json()
        assert doc["chars"] == 4 and doc["text"] == "宴桃园。"
        url = f"/v1/apps/write/documents/{doc['id']}"
        for call in (bob.get(url), bob.put(url, json={"text": "改"}), bob.delete(url)):
            assert call.status_code == 404, call.text
        assert [d["id"] for d in bob.get("/v1/apps/write/documents").json()] == []
        r = alice.put(url, json={"text": "斩黄巾。"})
        assert r.status_code == 200 and r.json()["title"] == "第一回"
        assert alice.get(url).json()["text"] == "斩黄巾。"
        r = alice.post("/v1/apps/write/documents", json={"title": "", "text": "x"})
        assert r.status_code == 422
        assert alice.delete(url).status_code == 204
        assert alice.get(url).status_code == 404


def test_continue_with_the_users_adapter(live_style) -> None:
    live, path, root = live_style
    with live.client(live.alice) as alice, live.client(live.bob) as bob:
        for i in range(3):
            r = alice.post(
                "/v1/apps/write/documents",
                json={"title": f"章{i}", "text": style_text(40, i)},
            )
            assert r.status_code == 201, r.text
        # The job's work, done here: a ready adapter of alice's over the served "gpt".
        store = Store(f"sqlite:///{root / 'llmos.db'}")
        alice_id = store.user("alice").id
        adapters = UserAdapters(store, root / "apps" / "write" / "adapters")
        adapters.create(alice_id, "style", "gpt", path, steps=200)
        summary = adapters.train(alice_id, "style")
        store.close()
        assert summary["perplexity"] < summary["base_perplexity"]
        listed = alice.get("/v1/apps/write/adapters").json()
        assert [(a["name"], a["status"]) for a in listed] == [("style", "ready")]
        assert "base_path" not in listed[0]["info"]  # no server paths in answers
        assert bob.get("/v1/apps/write/adapters").json() == []

        pipe = llmos.load(path)
        pipe.add_adapter(
            "style", root / "apps" / "write" / "adapters" / f"{alice_id}/style/checkpoint"
        )
        prompt = "却说曹操"
        want_adapted = pipe.generate(prompt, raw=True, adapter="style", **GREEDY)
        want_base = pipe.generate(prompt, raw=True, **GREEDY)
        # The adapter decodes other tokens than the base (compared as ids: a tiny model's
        # bytes need not make whole characters, and the text may be empty).
        ids = [pipe.tokenizer.encode(prompt, add_special_tokens=False).ids]
        cfg = GenerationConfig(**GREEDY)
        with lora.use(pipe.model, "style"):
            adapted_ids = generate_ids(pipe.model, ids, cfg, eos_id=None)
        assert adapted_ids != generate_ids(pipe.model, ids, cfg, eos_id=None)

        body = {"text": prompt, "stream": False, **GREEDY}
        r = alice.post("/v1/apps/write/continue", json=body)
        assert r.status_code == 200, r.text
        assert r.json() == {"model": "gpt", "adapter": "style", "text": want_adapted}
        r = alice.post("/v1/apps/write/continue", json=body | {"use_adapter": False})
        assert r.json()["text"] == want_base and r.json()["adapter"] is None
        # Bob has no adapter: the base; naming alice's is refused.
        assert bob.post("/v1/apps/write/continue", json=body).json()["text"] == want_base
        r = bob.post("/v1/apps/write/continue", json=body | {"adapter": "style"})
        assert r.status_code == 422 and "no adapter" in r.text

        r = alice.post("/v1/apps/write/continue", json={**body, "stream": True})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.text)
        assert events[-1] == ("done", {"model": "gpt", "text": want_adapted, "adapter": "style"})
        assert "".join(d["text"] for e, d in events[:-1] if e == "message") == want_adapted

        assert alice.delete("/v1/apps/write/adapters/style").status_code == 204
        assert not (root / "apps" / "write" / "adapters" / f"{alice_id}" / "style").exists()
        r = alice.post("/v1/apps/write/continue", json=body)
        assert r.json()["adapter"] is None and r.json()["text"] == want_base


def test_continue_without_a_generator_is_a_404(live_style, tmp_path: Path) -> None:
    live, _, _ = live_style
    with live.client(live.alice) as alice:
        r = alice.post("/v1/apps/write/continue", json={"text": "x", "model": "nothing"})
        assert r.status_code == 404


def test_adapter_trains_as_a_job_of_its_owner(live_style) -> None:
    live, _, _ = live_style
    with live.client(live.alice) as alice, live.client(live.bob) as bob:
        r = bob.post("/v1/apps/write/adapters", json={"name": "mine"})
        assert r.status_code == 422 and "no documents" in r.text  # bob uploaded nothing
        alice.post("/v1/apps/write/documents", json={"title": "卷", "text": style_text(60, 9)})
        r = alice.post("/v1/apps/write/adapters", json={"name": "job-made", "steps": 20})
        assert r.status_code == 202, r.text
        adapter = r.json()
        assert adapter["status"] == "training" and adapter["job"]
        job_url = f"/v1/jobs/{adapter['job']}"
        assert bob.get(job_url).status_code == 404
        deadline = time.monotonic() + 180
        while (job := alice.get(job_url).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
        assert job["status"] == "done", job
        assert job["progress"] == 1.0 and job["result"]["adapter"] == "job-made"
        listed = {a["name"]: a for a in alice.get("/v1/apps/write/adapters").json()}
        made = listed["job-made"]
        assert made["status"] == "ready" and made["info"]["step"] == 20
        assert made["job"] == adapter["job"]
        assert not {"root", "base_path"} & made["info"].keys()
        r = alice.post(
            "/v1/apps/write/continue",
            json={"text": "却说", "adapter": "job-made", "stream": False, **GREEDY},
        )
        assert r.status_code == 200 and r.json()["adapter"] == "job-made"
        r = alice.post("/v1/apps/write/adapters", json={"name": "job-made"})
        assert r.status_code == 422 and "already have" in r.text


def test_suggestions_come_from_the_shared_corpus_and_the_callers_documents(live_style) -> None:
    live, _, _ = live_style
    with live.client(live.alice) as alice, live.client(live.bob) as bob:
        mine = alice.post(
            "/v1/apps/write/documents",
            json={
                "title": "游记",
                "text": "老师昨天讨论经济。学生经常学习历史，记者现在介绍艺术。",
            },
        ).json()
        secret = bob.post(
            "/v1/apps/write/documents",
            json={"title": "秘密", "text": "学生经常学习历史，公司去年发展市场。"},
        ).json()
        r = alice.post("/v1/apps/write/suggest", json={"text": "学生经常学习历史", "k": 5})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["shared"] is True
        sources = [(x["source"]["corpus"], x["source"]["doc"]) for x in body["suggestions"]]
        assert ("user", str(mine["id"])) in sources  # her document, found by its words
        assert all(c in ("tang", "user") for c, _ in sources)
        hers = {str(d["id"]) for d in alice.get("/v1/apps/write/documents").json()}
        assert {d for c, d in sources if c == "user"} <= hers  # never bob's
        assert not any(x["text"] == secret["text"] for x in body["suggestions"])
        r = bob.post("/v1/apps/write/suggest", json={"text": "黄河入海流", "k": 2})
        got = r.json()["suggestions"]
        assert got[0]["source"] == {
            "corpus": "tang",
            "title": WRITE_SHARED[1],
            "doc": "tang-1",
            "offset": 0,
        }
        assert alice.post("/v1/apps/write/suggest", json={"text": "x", "k": 0}).status_code == 422
