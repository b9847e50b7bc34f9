"""The support desk over HTTP with a served multitask NLU model (intent, slots, sentiment in
one pass, through the model's batcher) and a domain file: a form asks for the missing slot,
the reply carries the intent and slots, the agent's view of the ticket keeps the trace, and
the model also serves ``/v1/embed``."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps.support.test_nlu_desk import DOMAIN

from serve.conftest import Live, start

BASE = "/v1/apps/support"


@pytest.fixture(scope="module")
def server(
    models_dir: Path,
    nlu_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    d = tmp_path_factory.mktemp("support-nlu")
    models = d / "models"
    shutil.copytree(models_dir / "emb", models / "emb")
    shutil.copytree(nlu_model, models / "nlu")
    domain = d / "domain.yaml"
    domain.write_text(DOMAIN, encoding="utf-8")
    runner, live = start(
        models,
        f"sqlite:///{d / 'llmos.db'}",
        rate_limit=0,
        support_encoder="nlu",  # one pass: the NLU model is also the knowledge base's encoder
        support_nlu_zh="nlu",
        support_sentiment_zh="",
        support_domain=domain,
        support_in_domain=False,  # its thresholds are multilingual-e5's, not the tiny model's
        apps_dir=d,
    )
    with runner:
        yield live


def test_a_form_over_http_with_intent_and_slots(server: Live) -> None:
    with server.client(server.alice) as shop, server.client(server.bob) as bob:
        shop.post(f"{BASE}/kbs", json={"name": "desk"})
        r = shop.post(
            f"{BASE}/kbs/desk/entries",
            json={"entries": [{"question": "农民保护环境", "answer": "环境保护是大事。"}]},
        )
        assert r.status_code == 201, r.text
        shop.patch(f"{BASE}/kbs/desk", json={"public": True})

        r = bob.post(f"{BASE}/messages", json={"kb": "alice/desk", "text": "今天记者参观。"})
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["action"] == "ask" and first["reply"] == "参观哪里？"
        assert first["intent"]["label"] == "参观" and first["intent"]["source"] == "head"
        assert [(s["name"], s["value"]) for s in first["slots"]] == [("who", "记者")]
        assert first["form"] == {"intent": "参观", "slots": {"who": "记者"}}
        assert first["sentiment"]["label"] == "pos"  # the NLU model's own sentiment head

        conv = first["conversation_id"]
        r = bob.post(f"{BASE}/messages", json={"conversation_id": conv, "text": "城市"})
        done = r.json()
        assert (done["action"], done["reply"]) == ("answer", "好的，记者参观城市。")

        r = bob.post(
            f"{BASE}/messages", json={"conversation_id": conv, "text": "昨天老师研究经济。"}
        )
        assert r.json()["action"] == "escalate"
        ticket = r.json()["ticket_id"]
        view = shop.get(f"{BASE}/tickets/{ticket}").json()
        traces = [t["trace"] for t in view["transcript"] if t["role"] == "bot"]
        assert traces[0]["intent"]["label"] == "参观" and traces[0]["form"]["intent"] == "参观"
        assert traces[-1]["reason"] == "intent 研究 goes to a person"

        # The multitask model serves /v1/embed too (the same vectors the desk searches with).
        r = bob.post("/v1/embed", json={"model": "nlu", "texts": ["今天记者参观城市。"]})
        assert r.status_code == 200, r.text
        assert len(r.json()["embeddings"][0]) == 32
        actions = server.client(server.bob).get("/openapi.json").json()
        schema = actions["components"]["schemas"]["MessageOut"]["properties"]["action"]
        assert "ask" in schema["enum"]


def test_the_out_of_domain_gate_is_on_unless_turned_off(
    nlu_model: Path, server: Live, tmp_path: Path
) -> None:
    """With the gate (the default), a message whose tiny-model vector is under
    multilingual-e5's threshold for every intent loses the head's intent (研究, a hand-off);
    the server above, with the gate off, hands it off."""
    models = tmp_path / "models"
    shutil.copytree(nlu_model, models / "nlu")
    domain = tmp_path / "domain.yaml"
    domain.write_text(DOMAIN, encoding="utf-8")
    settings = {"support_encoder": "nlu", "support_nlu_zh": "nlu", "support_domain": domain}
    runner, live = start(
        models, f"sqlite:///{tmp_path / 'llmos.db'}", rate_limit=0, apps_dir=tmp_path, **settings
    )
    text = "昨天老师研究经济。"
    for desk, want in ((live, None), (server, "研究")):
        with runner if desk is live else contextlib.nullcontext(), desk.client(desk.alice) as c:
            c.post(f"{BASE}/kbs", json={"name": "gate"})
            c.post(f"{BASE}/kbs/gate/entries", json={"entries": [{"question": "q", "answer": "a"}]})
            r = c.post(f"{BASE}/messages", json={"kb": "alice/gate", "text": text})
            assert r.status_code == 200, r.text
            got = r.json()["intent"]
            assert (got and got["label"]) == want, got
            assert (r.json()["action"] == "escalate") == (want is not None)


def test_a_served_model_that_is_not_multitask_is_not_the_nlu(
    models_dir: Path, tmp_path: Path
) -> None:
    """--support-nlu-zh naming a classifier: the desk works on without intents (logged)."""
    runner, live = start(
        models_dir,
        f"sqlite:///{tmp_path / 'llmos.db'}",
        rate_limit=0,
        support_encoder="emb",
        support_nlu_zh="cls",
        apps_dir=tmp_path,
    )
    with runner, live.client(live.alice) as c:
        c.post(f"{BASE}/kbs", json={"name": "desk"})
        c.post(
            f"{BASE}/kbs/desk/entries",
            json={"entries": [{"question": "农民保护环境", "answer": "环境保护是大事。"}]},
        )
        r = c.post(f"{BASE}/messages", json={"kb": "alice/desk", "text": "农民保护环境"})
        assert r.status_code == 200, r.text
        assert r.json()["intent"] is None and r.json()["slots"] == []
