"""``/v1/apps/support`` over HTTP on a real server: knowledge bases are the caller's own, uploads
are whole or refused with their line, search answers from the entries just added."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from serve.conftest import Live, start

BASE = "/v1/apps/support"
ENTRIES = [
    {
        "question": "老师今天讨论经济",
        "answer": "经济讨论在周一。",
        "alternatives": ["老师讨论经济吗"],
    },
    {"question": "农民一直保护环境", "answer": "环境保护是大事。", "tags": ["环境"]},
]


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    d = tmp_path_factory.mktemp("support")
    runner, live = start(
        models_dir, f"sqlite:///{d / 'llmos.db'}", rate_limit=0, support_encoder="emb", apps_dir=d
    )
    with runner:
        yield live


def test_a_knowledge_base_is_created_filled_and_searched(server: Live) -> None:
    with server.client(server.alice) as c:
        assert c.post(f"{BASE}/kbs", json={"name": "shop"}).status_code == 201
        again = c.post(f"{BASE}/kbs", json={"name": "shop"})
        assert again.status_code == 409 and "exists already" in again.json()["error"]["message"]
        r = c.post(f"{BASE}/kbs/shop/entries", json={"entries": ENTRIES})
        assert r.status_code == 201, r.text
        ids = r.json()["ids"]
        assert len(ids) == 2
        csv = "question,answer,tags\n记者现在介绍艺术,艺术介绍在晚上。,艺术|晚上\n"
        r = c.post(f"{BASE}/kbs/shop/files", json={"format": "csv", "content": csv})
        assert r.status_code == 201, r.text
        info = c.get(f"{BASE}/kbs/shop").json()
        assert info == {
            "name": "shop",
            "revision": 2,
            "entries": 3,
            "public": False,
            "encoder": None,
        }

        r = c.post(f"{BASE}/kbs/shop/search", json={"query": "农民保护环境", "k": 3})
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert len(hits) == 3
        farmer = next(h for h in hits if h["id"] == ids[1])
        assert farmer["answer"] == "环境保护是大事。" and farmer["tags"] == ["环境"]
        assert farmer["bm25"] == max(h["bm25"] for h in hits) > 0
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

        page = c.get(f"{BASE}/kbs/shop/entries", params={"offset": 1, "limit": 1}).json()
        assert page["total"] == 3 and page["revision"] == 2
        assert page["entries"][0]["question"] == "农民一直保护环境"

        assert c.delete(f"{BASE}/kbs/shop/entries/{ids[1]}").status_code == 204
        assert c.delete(f"{BASE}/kbs/shop/entries/{ids[1]}").status_code == 404
        r = c.post(f"{BASE}/kbs/shop/search", json={"query": "农民保护环境", "k": 5})
        assert ids[1] not in {h["id"] for h in r.json()["hits"]}


def test_one_user_never_sees_anothers_knowledge_base(server: Live) -> None:
    with server.client(server.alice) as alice, server.client(server.bob) as bob:
        alice.post(f"{BASE}/kbs", json={"name": "private"})
        alice.post(f"{BASE}/kbs/private/entries", json={"entries": ENTRIES[:1]})
        assert "private" not in {kb["name"] for kb in bob.get(f"{BASE}/kbs").json()["kbs"]}
        for method, path, body in (
            ("GET", "/kbs/private", None),
            ("GET", "/kbs/private/entries", None),
            ("POST", "/kbs/private/search", {"query": "经济"}),
            ("POST", "/kbs/private/entries", {"entries": ENTRIES[1:]}),
            ("DELETE", "/kbs/private/entries/1", None),
            ("DELETE", "/kbs/private", None),
        ):
            r = bob.request(method, BASE + path, json=body)
            assert r.status_code == 404, (method, path, r.text)
            assert "no knowledge base named 'private'" in r.json()["error"]["message"]
        assert alice.get(f"{BASE}/kbs/private").json()["entries"] == 1
        # bob's own knowledge base of the same name is another one
        assert bob.post(f"{BASE}/kbs", json={"name": "private"}).status_code == 201
        assert bob.get(f"{BASE}/kbs/private").json()["entries"] == 0
    with server.client() as anonymous:
        assert anonymous.get(f"{BASE}/kbs").status_code == 401


def test_a_bad_upload_names_its_line_and_stores_nothing(server: Live) -> None:
    with server.client(server.bob) as c:
        c.post(f"{BASE}/kbs", json={"name": "upload"})
        content = '{"question": "q1", "answer": "a1"}\n{"question": "q2", "answer": 3}\n'
        r = c.post(f"{BASE}/kbs/upload/files", json={"format": "jsonl", "content": content})
        assert r.status_code == 422
        assert r.json()["error"]["message"].startswith("the file:2: 'answer' must be")
        r = c.post(f"{BASE}/kbs/upload/entries", json={"entries": [{"question": "q"}]})
        assert r.status_code == 422 and "answer" in r.json()["error"]["message"]
        r = c.post(f"{BASE}/kbs", json={"name": "a/b"})
        assert r.status_code == 422
        assert c.get(f"{BASE}/kbs/upload").json()["entries"] == 0


def test_a_knowledge_base_searches_with_its_own_served_encoder(server: Live) -> None:
    """alice's "tuned" base embeds with the served "mlm" model instead of the desk's "emb":
    the hits' cosines are the ones /v1/embed gives with "mlm"."""
    with server.client(server.alice) as c, server.client(server.bob) as bob:
        r = c.post(f"{BASE}/kbs", json={"name": "tuned", "encoder": "gpt"})
        assert r.status_code == 422 and "does not embed" in r.json()["error"]["message"]
        r = c.post(f"{BASE}/kbs", json={"name": "tuned", "encoder": "mlm"})
        assert r.status_code == 201 and r.json()["encoder"] == "mlm"
        assert c.post(f"{BASE}/kbs/tuned/entries", json={"entries": ENTRIES}).status_code == 201
        query = "农民保护环境"

        def check_cosines(model: str) -> None:
            """Each hit's similarity is the cosine, by ``model``, of the query and the
            nearest of its entry's rows (question and alternatives as queries, answer as a
            passage)."""
            hits = c.post(f"{BASE}/kbs/tuned/search", json={"query": query, "k": 2}).json()
            q = embed(c, model, [query], "query")[0]
            for h in hits["hits"]:
                e = next(e for e in ENTRIES if e["question"] == h["question"])
                rows = [(e["question"], "query"), (e["answer"], "passage")]
                rows += [(a, "query") for a in e.get("alternatives", [])]
                vecs = [embed(c, model, [t], kind)[0] for t, kind in rows]
                assert h["similarity"] == pytest.approx(max(v @ q for v in vecs), abs=1e-4)

        check_cosines("mlm")
        for bad, why in (("nope", "no model named 'nope'"), ("gpt", "does not embed")):
            r = c.put(f"{BASE}/kbs/tuned/encoder", json={"encoder": bad})
            assert r.status_code == 422 and why in r.json()["error"]["message"]
        r = bob.put(f"{BASE}/kbs/tuned/encoder", json={"encoder": None})
        assert r.status_code == 404  # alice's base is not bob's to change
        r = c.put(f"{BASE}/kbs/tuned/encoder", json={"encoder": None})
        assert r.status_code == 200 and r.json()["encoder"] is None
        check_cosines("emb")  # rebuilt with the desk's default
        assert c.get(f"{BASE}/kbs/tuned").json()["encoder"] is None


def test_a_knowledge_base_whose_encoder_is_not_served_says_so(server: Live) -> None:
    """A base stored with an encoder this server lacks (another server's, or one removed
    since) answers 503 naming it; the other bases keep working."""
    from llmos.store.kb import KnowledgeBases

    store = server.app.state.server.store
    KnowledgeBases(store).create(store.user("alice").id, "stale", encoder="gone")
    with server.client(server.alice) as c:
        for path, body in (
            ("/kbs/stale/search", {"query": "经济"}),
            ("/kbs/stale/entries", {"entries": ENTRIES}),
        ):
            r = c.post(BASE + path, json=body)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["type"] == "no_encoder"
            assert "no model named 'gone'" in r.json()["error"]["message"]
        r = c.post(f"{BASE}/messages", json={"kb": "alice/stale", "text": "经济"})
        assert r.status_code == 503 and "'gone'" in r.json()["error"]["message"]
        assert c.get(f"{BASE}/kbs/stale").json()["entries"] == 0  # nothing half-stored
        assert c.delete(f"{BASE}/kbs/stale/entries/1").status_code == 503
        assert c.post(f"{BASE}/kbs/tuned/search", json={"query": "经济"}).status_code == 200


def embed(c: httpx.Client, model: str, texts: list[str], kind: str) -> list[np.ndarray]:
    r = c.post("/v1/embed", json={"model": model, "texts": texts, "kind": kind})
    assert r.status_code == 200, r.text
    return [np.asarray(v) for v in r.json()["embeddings"]]


def test_without_its_encoder_the_app_says_what_to_do(models_dir: Path, tmp_path: Path) -> None:
    runner, live = start(
        models_dir,
        f"sqlite:///{tmp_path / 'llmos.db'}",
        support_encoder="missing",
        apps_dir=tmp_path,
    )
    with runner, live.client(live.alice) as c:
        assert c.post(f"{BASE}/kbs", json={"name": "faq"}).status_code == 201  # embeds nothing
        r = c.post(f"{BASE}/kbs/faq/search", json={"query": "经济"})
        assert r.status_code == 503
        assert "'missing'" in r.json()["error"]["message"]
        assert "--support-encoder" in r.json()["error"]["message"]
        r = c.post(f"{BASE}/kbs/faq/entries", json={"entries": ENTRIES})
        assert r.status_code == 503 and c.get(f"{BASE}/kbs/faq").json()["entries"] == 0


def test_a_customer_chats_and_an_agent_answers_over_http(server: Live) -> None:
    """alice runs the desk (knowledge base "desk", public, admin as agent); bob is a customer."""
    with (
        server.client(server.alice) as alice,
        server.client(server.bob) as bob,
        server.client(server.admin) as agent,
    ):
        alice.post(f"{BASE}/kbs", json={"name": "desk"})
        alice.post(f"{BASE}/kbs/desk/entries", json={"entries": ENTRIES})
        r = bob.post(f"{BASE}/messages", json={"kb": "alice/desk", "text": "老师讨论经济"})
        assert r.status_code == 404  # not public yet: as if it did not exist
        shared = alice.patch(f"{BASE}/kbs/desk", json={"public": True, "agents": ["admin"]})
        assert shared.status_code == 200, shared.text
        assert shared.json()["public"] is True and shared.json()["agents"] == ["admin"]
        assert bob.patch(f"{BASE}/kbs/desk", json={"public": False}).status_code == 404

        r = bob.post(f"{BASE}/messages", json={"kb": "alice/desk", "text": "老师讨论经济"})
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["language"] == "zh" and first["action"] in ("answer", "clarify", "fallback")
        conv = first["conversation_id"]
        r = bob.post(f"{BASE}/messages", json={"conversation_id": conv, "text": "转人工"})
        escalated = r.json()
        assert escalated["action"] == "escalate" and escalated["ticket_id"] is not None
        ticket = escalated["ticket_id"]

        # the customer's view: their turns and the bot's, no trace
        mine = bob.get(f"{BASE}/conversations/{conv}").json()
        assert mine["kb"] == "alice/desk" and mine["status"] == "human"
        assert [t["role"] for t in mine["turns"]] == ["customer", "bot", "customer", "bot"]
        assert "trace" not in mine["turns"][1]
        assert [c["id"] for c in bob.get(f"{BASE}/conversations").json()["conversations"]] == [conv]
        # nobody else sees the conversation; only the desk's agents see the ticket
        assert alice.get(f"{BASE}/conversations/{conv}").status_code == 404
        assert bob.get(f"{BASE}/tickets").json() == {"tickets": []}
        assert bob.get(f"{BASE}/tickets/{ticket}").status_code == 404
        assert bob.post(f"{BASE}/tickets/{ticket}/reply", json={"text": "x"}).status_code == 404
        for desk in (alice, agent):
            queue = desk.get(f"{BASE}/tickets").json()["tickets"]
            assert [(t["id"], t["kb"], t["status"]) for t in queue] == [
                (ticket, "alice/desk", "open")
            ]
        full = agent.get(f"{BASE}/tickets/{ticket}").json()
        assert full["reason"] == "the customer asked for a person"
        assert full["transcript"][3]["trace"]["reason"] == "the customer asked for a person"

        r = agent.post(f"{BASE}/tickets/{ticket}/reply", json={"text": "您好，我来帮您。"})
        assert r.status_code == 201 and r.json()["role"] == "agent"
        assert bob.get(f"{BASE}/conversations/{conv}").json()["turns"][-1]["text"] == (
            "您好，我来帮您。"
        )
        closed = agent.post(f"{BASE}/tickets/{ticket}/close").json()
        assert closed["status"] == "closed"
        assert alice.get(f"{BASE}/tickets").json() == {"tickets": []}
        assert len(alice.get(f"{BASE}/tickets", params={"status": "all"}).json()["tickets"]) == 1
        assert bob.get(f"{BASE}/conversations/{conv}").json()["status"] == "bot"

        # another user's conversation id is not the caller's to write to
        r = agent.post(f"{BASE}/messages", json={"conversation_id": conv, "text": "你好"})
        assert r.status_code == 404
        r = bob.post(f"{BASE}/messages", json={"text": "你好"})
        assert r.status_code == 422 and "give the knowledge base" in r.json()["error"]["message"]
