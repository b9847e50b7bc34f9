"""The recommendation app over HTTP: a real server, the tiny recommender of conftest
(``movielens``: comedies c1-c4, horror films h1-h4, dramas d1 and n1), per-user isolation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from serve.conftest import Live, start

BASE = "/v1/apps/recommend"


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    d = tmp_path_factory.mktemp("rec-db")
    runner, live = start(
        models_dir, f"sqlite:///{d / 'llmos.db'}", rate_limit=0, recommend_encoder="emb"
    )
    with runner:
        yield live


def new_user(live: Live, name: str) -> str:
    with live.client(live.admin) as c:
        r = c.post("/v1/users", json={"name": name})
        assert r.status_code == 201, r.text
        return r.json()["api_key"]


def ids(body: dict) -> list[str]:
    return [x["id"] for x in body["items"]]


def test_a_like_changes_the_next_list_and_only_the_callers(server: Live) -> None:
    carol, dave = new_user(server, "carol"), new_user(server, "dave")
    with server.client(carol) as c, server.client(dave) as d:
        first = c.get(BASE, params={"k": 10}).json()
        assert first["catalog"] == "tiny" and len(first["items"]) == 10
        assert {x["source"] for x in first["items"]} == {"popular"}
        assert ids(first)[0] == "d1"  # everyone took it
        assert ids(d.get(BASE, params={"k": 10}).json()) == ids(first)
        r = c.post(f"{BASE}/events", json={"events": [{"kind": "like", "item": "c1"}]})
        assert r.status_code == 201 and len(r.json()["ids"]) == 1
        after = c.get(BASE, params={"k": 3}).json()["items"]
        assert "c1" not in [x["id"] for x in after]
        assert after[0]["id"] in {"c2", "c3", "c4"}
        assert not any(x["id"].startswith("h") for x in after)  # horror fans' films sink
        assert after[0]["reason"] == "because you liked Laugh Out"
        assert ids(d.get(BASE, params={"k": 10}).json()) == ids(first)  # dave: unchanged
        assert d.get(f"{BASE}/profile").json()["recent"] == []
        mine = c.get("/v1/me/events").json()["events"]
        assert [(e["kind"], e["item"]) for e in mine] == [("like", "c1")]


def test_filters_onboarding_and_profile(server: Live) -> None:
    key = new_user(server, "erin")
    with server.client(key) as c:
        events = [{"kind": "hide", "item": "h1"}, {"kind": "rate", "item": "h2", "value": 1}]
        assert c.post(f"{BASE}/events", json={"events": events}).status_code == 201
        got = ids(c.get(BASE, params={"k": 10, "exclude": ["d1", "c2"]}).json())
        assert not {"h1", "h2", "d1", "c2"} & set(got) and len(got) == 6
        only = ids(c.get(BASE, params={"tags": "Horror"}).json())
        assert set(only) == {"h3", "h4"}
        prefs = {"interests": ["Comedy"], "wish": "", "blocked_tags": ["Drama"]}
        assert c.put(f"{BASE}/onboarding", json=prefs).json() == prefs
        listed = c.get(BASE, params={"k": 10}).json()["items"]
        assert {x["tags"][0] for x in listed[:4]} == {"Comedy"} and "d1" not in ids(
            {"items": listed}
        )
        assert listed[0]["reason"] == "in your interests: Comedy"
        view = c.get(f"{BASE}/profile").json()
        assert [i["id"] for i in view["hidden"]] == ["h1"]
        assert [i["id"] for i in view["disliked"]] == ["h2"]
        assert view["preferences"] == prefs
        tags = c.get(f"{BASE}/tags").json()["tags"]
        assert tags == [
            {"tag": "Comedy", "items": 4},
            {"tag": "Horror", "items": 4},
            {"tag": "Drama", "items": 2},
        ]


def test_catalog_search_similar_and_a_wish(server: Live) -> None:
    key = new_user(server, "frank")
    with server.client(key) as c:
        assert ids(c.get(f"{BASE}/items", params={"q": "scream"}).json()) == ["h3"]
        assert c.get(f"{BASE}/items/h3").json()["title"] == "Scream Lake"
        similar = c.get(f"{BASE}/similar/h3", params={"k": 9}).json()["items"]
        assert "h3" not in [x["id"] for x in similar] and len(similar) == 9
        people = [x for x in similar if x["source"] == "personal"]
        assert people and {x["tags"][0] for x in people} <= {"Horror", "Drama"}
        assert all(x["score"] > 0 for x in people)
        assert similar[-1]["source"] == "content"  # n1: nobody took it
        wished = c.get(BASE, params={"wish": "Night Fear", "k": 3}).json()["items"]
        assert any(x["source"] == "wish" for x in wished)


def test_mistakes_are_named(server: Live) -> None:
    key = new_user(server, "gina")
    with server.client(key) as c:
        r = c.post(f"{BASE}/events", json={"events": [{"kind": "like", "item": "zz"}]})
        assert r.status_code == 404 and "no item 'zz'" in r.json()["error"]["message"]
        r = c.post(f"{BASE}/events", json={"events": [{"kind": "rate", "item": "c1"}]})
        assert r.status_code == 422 and "needs a value" in r.json()["error"]["message"]
        r = c.post(f"{BASE}/events", json={"events": [{"kind": "buy", "item": "c1"}]})
        assert r.status_code == 422
        assert c.get(f"{BASE}/items/zz").status_code == 404
        assert c.get(f"{BASE}/similar/zz").status_code == 404
        assert c.get(BASE, params={"diversity": 2}).status_code == 422
        assert c.get(BASE, params={"exclude": ["x"] * 101}).status_code == 422
        assert c.get(f"{BASE}/profile").json()["recent"] == []  # nothing was stored
    with server.client() as anonymous:
        assert anonymous.get(BASE).status_code == 401


def test_without_a_recommender_the_app_says_what_to_do(models_dir: Path, tmp_path: Path) -> None:
    runner, live = start(models_dir, f"sqlite:///{tmp_path / 'db'}", recommend_model="cls")
    with runner, live.client(live.alice) as c:
        r = c.get(BASE)
        assert r.status_code == 503 and r.json()["error"]["type"] == "no_recommender"
        assert "'cls' is a classification model" in r.json()["error"]["message"]
        assert "llmos recommend train" in r.json()["error"]["message"]
