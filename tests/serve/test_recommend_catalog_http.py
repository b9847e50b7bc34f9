"""The recommendation app's admin routes over HTTP: a catalog imported and retrained as
background jobs on a real server over a real SQLite store, each test with a models directory
of its own (the tiny ``emb`` encoder, and for one test conftest's ``movielens``)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from serve.conftest import CATALOG, Live, start

BASE = "/v1/apps/recommend"
WAIT = 60  # seconds a job may take here: a generous deadline, polled
SHOP = [
    {"id": "s1", "title": "Red Kettle", "text": "steel, 1.5 l", "tags": ["Kitchen"]},
    {"id": "s2", "title": "Blue Mug", "tags": ["Kitchen"]},
    {"id": "s3", "title": "Garden Hose", "tags": ["Garden"]},
    {"id": "s4", "title": "Rake", "tags": ["Garden"]},
    {"id": "s5", "title": "Desk Lamp", "tags": ["Office"]},
    {"id": "s6", "title": "Stapler", "tags": ["Office"]},
]


def serve(models_dir: Path, tmp_path: Path, *copies: str, **settings: object) -> Live:
    """A server over a models directory holding copies of conftest's ``copies``."""
    models = tmp_path / "models"
    for name in copies:
        shutil.copytree(models_dir / name, models / name)
    models.mkdir(exist_ok=True)
    settings = {"rate_limit": 0, "recommend_encoder": "emb", **settings}
    return start(models, f"sqlite:///{tmp_path / 'llmos.db'}", **settings)


@pytest.fixture()
def shop(models_dir: Path, tmp_path: Path) -> Iterator[Live]:
    """A server whose recommender ``shop`` does not exist yet."""
    runner, live = serve(models_dir, tmp_path, "emb", recommend_model="shop")
    with runner:
        yield live


def wait(c: httpx.Client, job: dict) -> dict:
    """The job once it is done or failed (polled until a deadline)."""
    deadline = time.monotonic() + WAIT
    while job["status"] in ("queued", "running"):
        if time.monotonic() > deadline:
            pytest.fail(f"job {job['id']} still {job['status']} after {WAIT} s")
        time.sleep(0.05)
        r = c.get(f"{BASE}/jobs/{job['id']}")
        assert r.status_code == 200, r.text
        job = r.json()
    return job


def submit(c: httpx.Client, method: str, path: str, **kw: object) -> dict:
    r = c.request(method, f"{BASE}{path}", **kw)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"{BASE}/jobs/{job['id']}"
    return job


def ids(body: dict) -> list[str]:
    return [x["id"] for x in body["items"]]


def new_user(live: Live, name: str) -> str:
    with live.client(live.admin) as c:
        r = c.post("/v1/users", json={"name": name})
        assert r.status_code == 201, r.text
        return r.json()["api_key"]


def test_an_admin_imports_a_catalog_that_the_app_then_serves(shop: Live) -> None:
    with shop.client(shop.alice) as user, shop.client(shop.admin) as admin:
        assert user.get(BASE).status_code == 503  # no recommender yet
        job = submit(admin, "PUT", "/catalog", json={"catalog": "shop", "items": SHOP})
        assert job["kind"] == "catalog" and job["status"] in ("queued", "running", "done")
        assert job["request"] == {
            "catalog": "shop",
            "items": 6,
            "reg": None,
            "half_life_days": None,
        }
        job = wait(admin, job)
        assert job["status"] == "done" and job["error"] is None, job
        assert job["result"] == {
            "catalog": "shop",
            "items": 6,
            "users": 0,
            "interactions": 0,
            "store_users": 0,
            "kept_interactions": 0,
            "dropped_items": 0,
            "content_vectors": True,  # embedded by the served emb
            "encoder": "emb",
            "notes": [],
        }
        times = [
            datetime.fromisoformat(job[k]) for k in ("created_at", "started_at", "finished_at")
        ]
        assert times == sorted(times) and times[0].utcoffset() == timedelta(0)
        listed = user.get(BASE, params={"k": 10}).json()
        assert listed["catalog"] == "shop" and sorted(ids(listed)) == [i["id"] for i in SHOP]
        item = user.get(f"{BASE}/items/s1").json()
        assert item == {**SHOP[0], "text": "steel, 1.5 l"}
        assert ids(user.get(f"{BASE}/items", params={"q": "rake"}).json()) == ["s4"]
        models = {m["name"]: m for m in admin.get("/v1/models").json()["models"]}
        assert models["shop"]["task"] == "recommendation"
        assert [j["id"] for j in admin.get(f"{BASE}/jobs").json()["jobs"]] == [job["id"]]


def test_only_admins_and_only_good_items(shop: Live) -> None:
    good = {"catalog": "shop", "items": SHOP}
    with shop.client(shop.alice) as user:
        for method, path, body in (
            ("PUT", "/catalog", good),
            ("POST", "/train", None),
            ("GET", "/jobs", None),
            ("GET", "/jobs/abc", None),
        ):
            r = user.request(method, f"{BASE}{path}", json=body)
            assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden", path
    bad = [
        ({**SHOP[1], "id": " "}, "items[1].id: String should have at least 1 character"),
        ({**SHOP[1], "id": "a/b"}, "items[1].id: String should match pattern"),
        ({"id": "s2"}, "items[1].title: Field required"),
        ({**SHOP[1], "tags": ["x"] * 21}, "items[1].tags: List should have at most 20 items"),
        ({**SHOP[1], "price": 3}, "items[1].price: Extra inputs are not permitted"),
        ({**SHOP[1], "id": "s1"}, "items[1].id: 's1' appears twice (items[0] has it)"),
    ]
    with shop.client(shop.admin) as admin:
        for item, message in bad:
            body = {"catalog": "shop", "items": [SHOP[0], item, *SHOP[2:]]}
            r = admin.put(f"{BASE}/catalog", json=body)
            assert r.status_code == 422, r.text
            assert message in r.json()["error"]["message"], (message, r.json())
        for body, message in (
            ({"catalog": "shop", "items": []}, "items: List should have at least 1 item"),
            ({"items": SHOP}, "catalog: Field required"),
            ({**good, "reg": -1}, "reg: Input should be greater than 0"),
        ):
            r = admin.put(f"{BASE}/catalog", json=body)
            assert r.status_code == 422 and message in r.json()["error"]["message"], r.text
        assert admin.get(f"{BASE}/jobs").json() == {"jobs": []}  # nothing was queued
        r = admin.get(f"{BASE}/jobs/abc")
        assert r.status_code == 404 and "no job 'abc'" in r.json()["error"]["message"]


def test_users_events_then_a_retraining_change_the_list(shop: Live) -> None:
    with shop.client(shop.admin) as admin:
        # nothing served yet, then nothing to learn from: both fail and say why
        job = wait(admin, submit(admin, "POST", "/train"))
        assert job["status"] == "failed" and "nothing to retrain" in job["error"]
        assert job["result"] is None and job["finished_at"] is not None
        wait(admin, submit(admin, "PUT", "/catalog", json={"catalog": "shop", "items": SHOP}))
        job = wait(admin, submit(admin, "POST", "/train"))
        assert job["status"] == "failed"
        assert "nothing to learn from" in job["error"] and "'shop'" in job["error"]
    # many users take the kettle with the rake; ann takes the kettle
    for n in range(4):
        with shop.client(new_user(shop, f"gardener{n}")) as c:
            events = [{"kind": "like", "item": "s1"}, {"kind": "view", "item": "s4"}]
            assert c.post(f"{BASE}/events", json={"events": events}).status_code == 201
    with shop.client(new_user(shop, "ann")) as ann:
        r = ann.post(f"{BASE}/events", json={"events": [{"kind": "like", "item": "s1"}]})
        assert r.status_code == 201
        before = ann.get(BASE, params={"k": 5}).json()["items"]
        assert not any(x["source"] == "personal" for x in before)  # nothing learned yet
        with shop.client(shop.admin) as admin:
            job = wait(admin, submit(admin, "POST", "/train", json={"reg": 1.0}))
            assert job["status"] == "done", job
            assert job["result"]["store_users"] == 5 and job["result"]["interactions"] == 9
            assert job["request"] == {"reg": 1.0, "half_life_days": None}
            kinds = [j["kind"] for j in admin.get(f"{BASE}/jobs").json()["jobs"]]
            assert kinds == ["train", "train", "catalog", "train"]  # the newest first
        first = ann.get(BASE, params={"k": 5}).json()["items"][0]
        assert (first["id"], first["source"]) == ("s4", "personal")
        assert first["reason"] == "because you liked Red Kettle"


def test_a_reimport_keeps_the_catalogs_interactions_less_the_gone_items(
    models_dir: Path, tmp_path: Path
) -> None:
    runner, live = serve(models_dir, tmp_path, "emb", "movielens", recommend_encoder="nope")
    items = [{"id": i, "title": t, "text": "2020", "tags": [g]} for i, t, g in CATALOG]
    kept = [x for x in items if x["id"] != "h4"] + [{"id": "z1", "title": "Zed", "tags": ["New"]}]
    with runner, live.client(live.admin) as admin, live.client(live.alice) as user:
        job = wait(admin, submit(admin, "PUT", "/catalog", json={"catalog": "tiny", "items": kept}))
        assert job["status"] == "done", job
        result = job["result"]
        # conftest's 48 interactions; h4 was taken by the two horror fans who took four films
        assert (result["dropped_items"], result["kept_interactions"]) == (1, 46)
        assert not result["content_vectors"] and "'nope' is not served" in result["notes"][0]
        assert user.get(f"{BASE}/items/h4").status_code == 404
        assert user.get(f"{BASE}/items/z1").json()["title"] == "Zed"
        r = user.post(f"{BASE}/events", json={"events": [{"kind": "like", "item": "c1"}]})
        assert r.status_code == 201
        first = user.get(BASE, params={"k": 1}).json()["items"][0]  # still knows the comedies
        assert first["id"] in {"c2", "c3", "c4"} and first["source"] == "personal"
        # another catalog's name: nothing of the old one is kept
        job = wait(admin, submit(admin, "PUT", "/catalog", json={"catalog": "x", "items": kept}))
        assert job["result"]["kept_interactions"] == 0 and job["result"]["interactions"] == 0
        assert user.get(BASE).json()["catalog"] == "x"
