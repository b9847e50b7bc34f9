"""The HTTP API on a real uvicorn server: every route answers what the Python API answers for
the same checkpoint, streams join to the whole text, concurrent requests are batched, and
auth, rate limits, queue limits and metrics behave."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

import llmos
from llmos.cli import main
from llmos.inference.classify import LONG_INPUTS
from llmos.inference.generate import GenerationConfig
from llmos.recipes.search import search as search_index
from llmos.serve import deps
from llmos.serve import schemas as s
from llmos.store.db import Store
from serve.conftest import DOCS, Live, metric, slow_streams, start

TEXTS = ["我们今天参观城市。", "老师讨论经济", "学生学习历史和艺术，记者介绍文化。"]


def test_classify_tag_fill_mask_embed_equal_the_python_api(live: Live, models_dir: Path) -> None:
    cls = llmos.load(models_dir / "cls" / "checkpoint")
    with live.client(live.alice) as c:
        r = c.post("/v1/classify", json={"model": "cls", "texts": TEXTS})
        assert r.status_code == 200, r.text
        got = r.json()["results"]
        want = cls.classify(TEXTS)
        assert [g["label"] for g in got] == [w["label"] for w in want]
        for g, w in zip(got, want, strict=True):
            assert g["scores"] == pytest.approx(w["scores"], abs=1e-5)

        r = c.post("/v1/tag", json={"model": "ner", "texts": TEXTS})
        want = llmos.load(models_dir / "ner").tag(TEXTS)
        spans = [
            [{k: s[k] for k in ("text", "label", "start", "end")} for s in row] for row in want
        ]
        got = [
            [{k: s[k] for k in ("text", "label", "start", "end")} for s in row]
            for row in r.json()["results"]
        ]
        assert got == spans

        r = c.post(
            "/v1/fill-mask", json={"model": "mlm", "text": "我们[MASK]天参观城市。", "top_k": 3}
        )
        want = llmos.load(models_dir / "mlm").fill_mask("我们[MASK]天参观城市。", top_k=3)
        got = r.json()["results"]
        assert len(got) == 1 and [f["token_id"] for f in got[0]] == [w["token_id"] for w in want]

        # An embedding encoder with an MLM head (as e5-zh-mlm) fills blanks too.
        r = c.post("/v1/fill-mask", json={"model": "emb", "text": "我们[MASK]天参观城市。"})
        want = llmos.load(models_dir / "emb").fill_mask("我们[MASK]天参观城市。")
        assert [f["token_id"] for f in r.json()["results"][0]] == [w["token_id"] for w in want]

        r = c.post("/v1/embed", json={"model": "emb", "texts": TEXTS})
        body = r.json()
        want = llmos.load(models_dir / "emb").embed(TEXTS)
        assert body["dim"] == want.shape[1]
        np.testing.assert_allclose(np.array(body["embeddings"]), want, atol=1e-5)
        r = c.post("/v1/embed", json={"model": "emb", "texts": TEXTS, "kind": "query"})
        assert r.status_code == 200, r.text
        r = c.post("/v1/embed", json={"model": "emb", "texts": TEXTS, "kind": "doc"})
        assert r.status_code == 422 and "kind" in r.text

        r = c.post("/v1/search", json={"index": "docs", "query": DOCS[2], "k": 3})
        hits = r.json()["hits"]
        want = search_index(models_dir / "docs", [DOCS[2]], k=3)[0]
        assert [h["id"] for h in hits] == [w["id"] for w in want] and hits[0]["id"] == "d2"
        assert hits[0]["text"] == DOCS[2]


def test_classify_long_inputs_windows_by_default_and_truncates_on_request(
    live: Live, models_dir: Path
) -> None:
    """A text longer than the model's max_length (32) is read in windows unless the request
    says truncate; each answer equals classify() with the same option; a bad value is 422."""
    assert typing.get_args(s.ClassifyRequest.model_fields["long_inputs"].annotation) == LONG_INPUTS
    cls = llmos.load(models_dir / "cls" / "checkpoint")
    texts = [TEXTS[0], "我们今天参观城市，老师讨论经济。" * 6]
    with live.client(live.alice) as c:
        for option in (None, "window", "truncate"):
            body = {"model": "cls", "texts": texts}
            if option:
                body["long_inputs"] = option
            r = c.post("/v1/classify", json=body)
            assert r.status_code == 200, r.text
            got = r.json()["results"]
            want = cls.classify(texts, long_inputs=option or "window")
            assert [g["windows"] for g in got] == [w["windows"] for w in want]
            assert (got[1]["windows"] > 1) == (option != "truncate")
            for g, w in zip(got, want, strict=True):
                assert g["label"] == w["label"]
                assert g["scores"] == pytest.approx(w["scores"], abs=1e-5)
        r = c.post("/v1/classify", json={"model": "cls", "texts": texts, "long_inputs": "all"})
        assert r.status_code == 422
        error = r.json()["error"]
        assert error["type"] == "invalid_request", error
        assert "long_inputs" in error["message"] and "'window' or 'truncate'" in error["message"]


def test_generate_json_and_stream_equal_the_python_api(live: Live, models_dir: Path) -> None:
    gpt = llmos.load(models_dir / "gpt")
    want = gpt.generate("我们今天", max_new_tokens=12)
    with live.client(live.alice) as c:
        r = c.post(
            "/v1/generate", json={"model": "gpt", "prompt": "我们今天", "max_new_tokens": 12}
        )
        assert r.status_code == 200 and r.json()["text"] == want
        pieces, done = [], None
        with c.stream(
            "POST",
            "/v1/generate",
            json={"model": "gpt", "prompt": "我们今天", "max_new_tokens": 12, "stream": True},
        ) as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            event = None
            for line in s.iter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
                    if event == "done":
                        done = data
                    else:
                        assert event is None, data
                        pieces.append(data["text"])
        assert "".join(pieces) == want and done == {"model": "gpt", "text": want}
        r = c.post("/v1/generate", json={"model": "gpt", "prompt": "x", "max_new_tokens": 10_000})
        assert r.status_code == 422 and "at most 512" in r.json()["error"]["message"]


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    models_dir: Path, tmp_path: Path
) -> None:
    texts = [f"{DOCS[i % len(DOCS)]}{'很好' * (i % 5)}" for i in range(24)]
    want = llmos.load(models_dir / "cls" / "checkpoint").classify(texts)
    runner, server = start(
        models_dir, f"sqlite:///{tmp_path / 'db'}", max_wait_ms=100, rate_limit=0
    )
    with runner, server.client(server.alice) as c:
        c.post("/v1/classify", json={"model": "cls", "texts": ["预热"]})  # load first

        def one(text: str) -> dict:
            return c.post("/v1/classify", json={"model": "cls", "texts": [text]}).json()["results"][
                0
            ]

        with ThreadPoolExecutor(12) as pool:
            got = list(pool.map(one, texts))
        for g, w in zip(got, want, strict=True):
            assert g["label"] == w["label"]
            assert g["scores"] == pytest.approx(w["scores"], abs=1e-5)
        metrics = c.get("/metrics").text
    count = float(re.search(r'llmos_batch_size_count\{model="cls"\} (\S+)', metrics).group(1))
    total = float(re.search(r'llmos_batch_size_sum\{model="cls"\} (\S+)', metrics).group(1))
    assert total == 25 and count < 25  # 25 texts in fewer forward passes
    assert 'llmos_requests_total{route="/v1/classify",status="200"} 25.0' in metrics


def test_auth_and_admin_routes(live: Live) -> None:
    with live.client() as anon:
        r = anon.get("/v1/models")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in r.json()["error"]["message"]
        r = anon.get("/v1/models", headers={"Authorization": "Bearer llmos_nope"})
        assert r.status_code == 401 and r.json()["error"]["message"] == "unknown or revoked API key"
        assert anon.get("/healthz").json()["status"] == "ok"
        assert anon.get("/readyz").json()["status"] == "ready"
    with live.client(live.alice) as alice:
        assert alice.get("/v1/me").json()["name"] == "alice"
        assert alice.get("/v1/users").status_code == 403
        assert alice.post("/v1/users", json={"name": "mallory", "admin": True}).status_code == 403
        assert alice.post("/v1/models/load", json={"model": "cls"}).status_code == 403
    with live.client(live.admin) as admin:
        r = admin.post("/v1/users", json={"name": "carol"})
        assert r.status_code == 201 and not r.json()["is_admin"]
        carol = r.json()["api_key"]
        assert admin.post("/v1/users", json={"name": "carol"}).status_code == 409
        assert "carol" in [u["name"] for u in admin.get("/v1/users").json()]
        r = admin.post("/v1/models/load", json={"model": "ner"})
        assert [m["loaded"] for m in r.json()["models"] if m["name"] == "ner"] == [True]
        r = admin.post("/v1/models/unload", json={"model": "ner"})
        assert [m["loaded"] for m in r.json()["models"] if m["name"] == "ner"] == [False]
    with live.client(carol) as c:
        assert c.get("/v1/me").json()["name"] == "carol"


def test_a_client_leaving_a_stream_stops_the_decoding(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client reads one event and hangs up; the model's thread stops at its next piece
    instead of decoding all 56 (each piece is slowed to 30 ms so that the hang-up lands early;
    the model runs in this process, in the server's thread)."""
    decoded = []
    slow_streams(monkeypatch, 0.03, decoded)
    body = {"model": "gpt", "prompt": "我们今天", "max_new_tokens": 56, "stream": True}
    with live.client(live.alice) as c:
        before = metric(c, "llmos_streams_total", model="gpt", outcome="client_closed")
        with c.stream("POST", "/v1/generate", json=body) as s:
            first = next(line for line in s.iter_lines() if line.startswith("data: "))
        assert json.loads(first.removeprefix("data: "))["text"]
        # The next request to the model is served: its thread is free again.
        r = c.post("/v1/generate", json={**body, "stream": False, "max_new_tokens": 2})
        assert r.status_code == 200
        assert metric(c, "llmos_streams_total", model="gpt", outcome="client_closed") == before + 1
    assert 0 < len(decoded) < 56


def test_revoked_keys_are_refused_after_the_auth_cache_expires(
    models_dir: Path, tmp_path: Path
) -> None:
    """Keys are revoked by another process (the CLI) straight in the store: a server with the
    cache off refuses at once; with it on, a known key is trusted for its TTL, then refused.
    The server's key cache runs on a fake clock that the test moves past the TTL."""
    db_url = f"sqlite:///{tmp_path / 'db'}"
    clock = [0.0]
    for ttl in (0.0, 60.0):
        runner, server = start(models_dir, db_url, rate_limit=0, auth_cache_s=ttl)
        with runner:
            server.app.state.server.keys.clock = lambda: clock[0]
            store = Store(db_url)
            key = store.create_key(store.user("bob").id)
            with server.client(key) as c:
                assert c.get("/v1/me").status_code == 200  # looked up, and cached if ttl > 0
                assert store.revoke_key(key)
                if ttl:
                    clock[0] += ttl - 1
                    assert c.get("/v1/me").status_code == 200  # still inside its TTL
                    clock[0] += 1
                r = c.get("/v1/me")
                assert r.status_code == 401, ttl
                assert r.json()["error"]["message"] == "unknown or revoked API key"
            store.close()


def test_key_cache_expires_forgets_and_stays_bounded() -> None:
    clock = [100.0]
    cache = deps.KeyCache(ttl=5, size=2, clock=lambda: clock[0])
    a, b, c = (deps.Caller(i, n, False) for i, n in enumerate("abc"))
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a and cache.get("b") is b
    cache.put("c", c)  # over the size: the oldest entry goes
    assert cache.get("a") is None and cache.get("c") is c
    cache.forget("c")  # revoked through this server
    assert cache.get("c") is None and cache.get("b") is b
    cache.put("c", c)
    clock[0] += 5
    assert cache.get("b") is None and cache.get("c") is None  # expired
    off = deps.KeyCache(ttl=0)
    off.put("a", a)
    assert off.get("a") is None


def test_rate_limit_per_key(models_dir: Path, tmp_path: Path) -> None:
    runner, server = start(models_dir, f"sqlite:///{tmp_path / 'db'}", rate_limit=0.2, rate_burst=3)
    with runner, server.client(server.alice) as alice, server.client(server.bob) as bob:
        codes = [alice.get("/v1/me").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        r = alice.get("/v1/me")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert "limited to 0.2 requests a second" in r.json()["error"]["message"]
        assert bob.get("/v1/me").status_code == 200  # another key has its own bucket
        assert 'llmos_rejected_total{reason="rate_limit"} 2.0' in bob.get("/metrics").text


def test_each_user_sees_only_their_own_data(live: Live) -> None:
    with live.client(live.alice) as alice, live.client(live.bob) as bob:
        assert (
            alice.patch(
                "/v1/me/profile", json={"changes": {"city": "北京", "likes": ["茶"]}}
            ).status_code
            == 200
        )
        assert (
            alice.post("/v1/me/events", json={"kind": "rate", "item": "m1", "value": 5}).status_code
            == 201
        )
        assert (
            alice.post("/v1/me/memory", json={"role": "user", "content": "我喜欢喝茶"}).status_code
            == 201
        )
        bob.post("/v1/me/events", json={"kind": "click", "item": "m2"})
        assert bob.get("/v1/me/profile").json() == {"profile": {}}
        assert [e["item"] for e in bob.get("/v1/me/events").json()["events"]] == ["m2"]
        assert bob.get("/v1/me/memory").json() == {"memory": []}
        assert alice.get("/v1/me/profile").json()["profile"] == {"city": "北京", "likes": ["茶"]}
        ev = alice.get("/v1/me/events", params={"kind": "rate"}).json()["events"]
        assert [(e["item"], e["value"]) for e in ev] == [("m1", 5.0)]
        assert alice.get("/v1/me/memory").json()["memory"][0]["content"] == "我喜欢喝茶"
        assert alice.patch("/v1/me/profile", json={"changes": {"city": None}}).json() == {
            "profile": {"likes": ["茶"]}
        }


def test_queue_limit_answers_429_with_retry_after(models_dir: Path, tmp_path: Path) -> None:
    runner, server = start(
        models_dir, f"sqlite:///{tmp_path / 'db'}", queue_size=1, max_batch=1, rate_limit=0
    )
    body = {"model": "gpt", "prompt": "我们", "max_new_tokens": 40, "strategy": "sample"}
    with runner, server.client(server.alice) as c:
        c.post("/v1/generate", json={**body, "max_new_tokens": 1})  # load first

        def one(seed: int):
            return c.post("/v1/generate", json={**body, "seed": seed})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(8)))
    codes = [a.status_code for a in answers]
    assert set(codes) <= {200, 429} and 200 in codes and 429 in codes
    refused = next(a for a in answers if a.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["type"] == "queue_full"


def test_models_list_docs_and_metrics(live: Live) -> None:
    with live.client(live.alice) as c:
        body = c.get("/v1/models").json()
        names = {m["name"]: m for m in body["models"]}
        assert set(names) == {"cls", "emb", "gpt", "mlm", "movielens", "ner"}
        assert names["movielens"]["task"] == "recommendation"
        assert names["cls"]["labels"] == ["neg", "pos"] and names["cls"]["size_bytes"] > 0
        assert body["indexes"] == [{"name": "docs", "model": "emb", "count": 6, "dim": 32}]
        assert c.get("/docs").status_code == 200
        paths = c.get("/openapi.json").json()["paths"]
        for route in (
            "/v1/classify",
            "/v1/tag",
            "/v1/fill-mask",
            "/v1/embed",
            "/v1/generate",
            "/v1/search",
            "/v1/models",
            "/v1/me/profile",
        ):
            assert route in paths
        text = c.get("/metrics").text
        for name in (
            "llmos_requests_total",
            "llmos_request_seconds_bucket",
            "llmos_models_loaded",
            "llmos_model_memory_bytes",
        ):
            assert name in text


def test_generate_defaults_are_the_generation_configs(live: Live, models_dir: Path) -> None:
    """A generate request that leaves an option out decodes with GenerationConfig's default;
    GET /v1/generate/defaults and the OpenAPI schema say which (the console shows them)."""
    config = dataclasses.asdict(GenerationConfig())
    config["stop"] = list(config["stop"])
    with live.client(live.alice) as c:
        shown = c.get("/v1/generate/defaults").json()
        assert shown and shown == {name: config[name] for name in shown}
        schema = c.get("/openapi.json").json()["components"]["schemas"]["GenerateRequest"]
        for name, value in shown.items():
            if value not in (None, []):  # (the schema leaves out null and factory defaults)
                assert schema["properties"][name]["default"] == value, name
        # (the tiny model's window is 64 tokens: max_new_tokens is the one option given)
        body = {"model": "gpt", "prompt": "我们今天", "max_new_tokens": 8}
        r = c.post("/v1/generate", json=body)
        assert r.status_code == 200, r.text
    want = llmos.load(models_dir / "gpt").generate("我们今天", max_new_tokens=8)
    assert r.json()["text"] == want
    request = s.GenerateRequest(model="gpt", prompt="p")
    assert request.model_dump(include=set(shown)) == shown


CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_load_their_assets_from_this_server(live: Live, page: str) -> None:
    """The API docs work offline: the page names no other host, and every script, stylesheet
    and icon it names is served here (from the fastapi-offline package) with its type."""
    with httpx.Client(base_url=live.url) as c:
        html = c.get(page)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert "://" not in html.text  # no CDN, no web font: only paths on this server
        assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
        assert {Path(a).suffix for a in assets} >= {".js", ".png"}
        for asset in assets:
            assert asset.startswith("/docs-assets/"), asset
            r = c.get(asset)
            assert r.status_code == 200, asset
            assert r.headers["content-type"].startswith(CONTENT_TYPES[Path(asset).suffix])
            assert len(r.content) > 1000, asset
        spec = re.search(r"(?:url: '|spec-url=\")(/[^'\"]+)", html.text)
        assert spec and c.get(spec.group(1)).json()["info"]["title"] == "llmos"


def test_serve_cli_refuses_a_missing_models_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--models", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_user_data_through_the_server_on_both_databases(
    models_dir: Path, database_url: str
) -> None:
    """The same API on a SQLite file and on a real PostgreSQL server: writes by one user are
    read back by them alone, and survive a restart of the server."""
    runner, server = start(models_dir, database_url, rate_limit=0)
    with runner, server.client(server.alice) as alice, server.client(server.bob) as bob:
        alice.patch("/v1/me/profile", json={"changes": {"语言": "中文"}})
        alice.post("/v1/me/events", json={"kind": "view", "item": "书", "value": 1.5})
        alice.post("/v1/me/memory", json={"role": "user", "content": "你好"})
        assert bob.get("/v1/me/profile").json() == {"profile": {}}
        assert bob.get("/v1/me/events").json() == {"events": []}
    runner, again = start(models_dir, database_url, rate_limit=0)
    with runner, again.client(server.alice) as alice:  # the old key, a new process state
        assert alice.get("/v1/me/profile").json() == {"profile": {"语言": "中文"}}
        events = alice.get("/v1/me/events").json()["events"]
        assert [(e["kind"], e["item"], e["value"]) for e in events] == [("view", "书", 1.5)]
        assert [m["content"] for m in alice.get("/v1/me/memory").json()["memory"]] == ["你好"]
