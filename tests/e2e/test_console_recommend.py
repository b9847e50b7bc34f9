"""The console's "For you" page (the recommendation app) in headless Chromium against a real
server with the tiny ``movielens`` recommender of tests/serve (comedies c1-c4, horror h1-h4,
dramas d1 and n1): each test signs in as a fresh user and asserts that what the page shows is
what /v1/apps/recommend answers for that user at that moment, after a like, a hide, onboarding,
more variety or a wish, and in the catalog search."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from e2e.test_console import bars, expect_alert, go, open_console
from serve.conftest import Live, start

BASE = "/v1/apps/recommend"
pytestmark = pytest.mark.browser
_users = itertools.count()


@pytest.fixture
def reader(live: Live) -> Iterator[tuple[str, httpx.Client]]:
    """A new user (no events, no onboarding): their API key and a client acting for them."""
    with live.client(live.admin) as admin:
        r = admin.post("/v1/users", json={"name": f"reader-{next(_users)}"})
        assert r.status_code == 201, r.text
    key = r.json()["api_key"]
    with live.client(key) as c:
        yield key, c


def for_you(browser: Any, live: Live, key: str) -> Any:
    """The console signed in with ``key``, on the For you page with its list shown."""
    from playwright.sync_api import expect

    page = open_console(browser, live, key)
    go(page, "recommend")
    expect(page.locator("#page h1")).to_have_text("For you")
    expect(page.locator("#rec-list")).not_to_have_attribute("aria-busy", "true")
    return page


def recommended(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    r = api.get(BASE, params={"k": 12, **params})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def expect_cards(cards: Any, want: list[dict[str, Any]]) -> None:
    """The cards under ``cards`` show exactly ``want``, in order: ids, titles, tags, reasons."""
    from playwright.sync_api import expect

    expect(cards.locator(".rec-title")).to_have_text([w["title"] for w in want])
    expect(cards.locator(".rec-reason")).to_have_text([w["reason"] for w in want])
    shown = cards.evaluate_all(
        "cs => cs.map(c => [c.dataset.id, c.dataset.source,"
        " Array.from(c.querySelectorAll('.tag'), t => t.textContent)])"
    )
    assert shown == [[w["id"], w["source"], w["tags"]] for w in want]


def list_cards(page: Any) -> Any:
    return page.locator("#rec-list .rec-card")


def ids(locator: Any) -> list[str]:
    return locator.evaluate_all("es => es.map(e => e.dataset.id)")


def expect_profile(page: Any, view: dict[str, Any]) -> None:
    """The "Your tastes" panel shows the API's profile: top tags as shares of their weights,
    and the recent, disliked and hidden items."""
    from playwright.sync_api import expect

    for name in ("recent", "disliked", "hidden"):
        items = page.locator(f"#rec-{name} li[data-id]")
        expect(items).to_have_count(len(view[name]))
        assert ids(items) == [i["id"] for i in view[name]], name
    total = sum(w for _, w in view["top_tags"])
    shown = bars(page.locator("#rec-top-tags"))
    assert [n for n, _, _ in shown] == [t for t, _ in view["top_tags"]]
    for (_, score, _), (_, w) in zip(shown, view["top_tags"], strict=True):
        assert score == pytest.approx(w / total)


def test_for_you_shows_the_api_list_and_the_catalog_tags(
    browser: Any, live: Live, reader: tuple[str, httpx.Client], screenshots: Path
) -> None:
    from playwright.sync_api import expect

    key, api = reader
    page = for_you(browser, live, key)
    expect(page.locator("nav a.active")).to_have_text("For you")
    want = recommended(api)
    assert len(want) == 10  # k=12 over a catalog of 10: every item, none seen yet
    expect_cards(list_cards(page), want)
    expect(page.locator("#rec-summary")).to_contain_text("the catalog “tiny”")
    # each card has its three buttons
    for action in ("like", "dislike", "hide"):
        buttons = page.locator(f"#rec-list .rec-card button[data-action='{action}']")
        expect(buttons).to_have_count(10)
    tags = api.get(f"{BASE}/tags").json()["tags"]
    for box in ("#rec-interest", "#rec-blocked"):
        values = page.locator(f"{box} input[type=checkbox]").evaluate_all(
            "bs => bs.map(b => [b.value, b.checked])"
        )
        assert values == [[t["tag"], False] for t in tags]
    assert page.locator("#rec-pref-wish").get_attribute("placeholder") == (
        "想看轻松的喜剧 / something light and funny"
    )
    expect_profile(page, api.get(f"{BASE}/profile").json())
    page.screenshot(path=screenshots / "console-recommend.png", full_page=True)
    assert page.script_errors == []


def test_like_records_the_event_and_the_list_follows(
    browser: Any, live: Live, reader: tuple[str, httpx.Client], screenshots: Path
) -> None:
    from playwright.sync_api import expect

    key, api = reader
    page = for_you(browser, live, key)
    expect_cards(list_cards(page), recommended(api))
    like = page.locator("#rec-list .rec-card[data-id='c1'] button[data-action='like']")
    with page.expect_request(f"**{BASE}/events") as sent:
        like.click()
    assert sent.value.post_data_json == {"events": [{"kind": "like", "item": "c1"}]}
    expect(page.locator("#rec-list .rec-card[data-id='c1']")).to_have_count(0)
    view = api.get(f"{BASE}/profile").json()
    assert [i["id"] for i in view["recent"]] == ["c1"]
    events = api.get("/v1/me/events").json()["events"]
    assert [(e["kind"], e["item"]) for e in events] == [("like", "c1")]
    want = recommended(api)
    assert "c1" not in [w["id"] for w in want]
    expect_cards(list_cards(page), want)
    # people who took c1 took the other comedies: the model puts one first
    assert "Comedy" in want[0]["tags"]
    assert page.locator("#rec-list .rec-card").first.locator(".tag").all_text_contents() == [
        "Comedy"
    ]
    expect_profile(page, view)
    assert [t for t, _ in view["top_tags"]] == ["Comedy"]
    page.screenshot(path=screenshots / "console-recommend-liked.png", full_page=True)
    assert page.script_errors == []


def test_hide_and_dislike_remove_the_card_and_show_in_the_profile(
    browser: Any, live: Live, reader: tuple[str, httpx.Client]
) -> None:
    from playwright.sync_api import expect

    key, api = reader
    page = for_you(browser, live, key)
    first, second = recommended(api)[:2]
    expect_cards(list_cards(page), recommended(api))
    card = page.locator(f"#rec-list .rec-card[data-id='{first['id']}']")
    card.locator("button[data-action='hide']").click()
    expect(card).to_have_count(0)
    expect(page.locator("#rec-hidden li[data-id]")).to_have_count(1)
    view = api.get(f"{BASE}/profile").json()
    assert [i["id"] for i in view["hidden"]] == [first["id"]]
    assert page.locator("#rec-hidden li[data-id]").get_attribute("data-id") == first["id"]
    expect_cards(list_cards(page), recommended(api))

    card = page.locator(f"#rec-list .rec-card[data-id='{second['id']}']")
    card.locator("button[data-action='dislike']").click()
    expect(card).to_have_count(0)
    expect(page.locator("#rec-disliked li[data-id]")).to_have_count(1)
    view = api.get(f"{BASE}/profile").json()
    assert [i["id"] for i in view["disliked"]] == [second["id"]]
    expect_profile(page, view)
    want = recommended(api)
    assert {first["id"], second["id"]}.isdisjoint(w["id"] for w in want)
    expect_cards(list_cards(page), want)
    assert page.script_errors == []


def test_onboarding_saves_the_choices_and_the_list_follows(
    browser: Any, live: Live, reader: tuple[str, httpx.Client], screenshots: Path
) -> None:
    from playwright.sync_api import expect

    key, api = reader
    page = for_you(browser, live, key)
    page.check("#rec-interest input[value='Horror']")
    page.check("#rec-blocked input[value='Comedy']")
    page.fill("#rec-pref-wish", "想看恐怖片")
    with page.expect_request(f"**{BASE}/onboarding") as sent:
        page.get_by_role("button", name="Save").click()
    assert sent.value.method == "PUT"
    want_prefs = {"interests": ["Horror"], "wish": "想看恐怖片", "blocked_tags": ["Comedy"]}
    assert sent.value.post_data_json == want_prefs
    expect(page.locator("#rec-saved")).to_contain_text("Saved: 1 interest, 1 blocked tag")
    assert api.get(f"{BASE}/profile").json()["preferences"] == want_prefs
    want = recommended(api)
    assert want and all("Comedy" not in w["tags"] for w in want)
    assert "Horror" in want[0]["tags"]
    expect_cards(list_cards(page), want)
    page.screenshot(path=screenshots / "console-recommend-onboarding.png", full_page=True)

    # the saved choices come back with the page
    page.reload()
    expect(page.locator("#rec-interest input[value='Horror']")).to_be_checked()
    expect(page.locator("#rec-interest input[value='Comedy']")).not_to_be_checked()
    expect(page.locator("#rec-blocked input[value='Comedy']")).to_be_checked()
    expect(page.locator("#rec-pref-wish")).to_have_value("想看恐怖片")
    expect_cards(list_cards(page), recommended(api))

    # only interests, nothing blocked
    page.uncheck("#rec-blocked input[value='Comedy']")
    page.fill("#rec-pref-wish", "")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#rec-saved")).to_have_text("Saved: 1 interest, 0 blocked tags")
    prefs = api.get(f"{BASE}/profile").json()["preferences"]
    assert prefs == {"interests": ["Horror"], "wish": "", "blocked_tags": []}
    expect_cards(list_cards(page), recommended(api))
    assert page.script_errors == []


def test_more_variety_and_a_wish_refetch_the_list(
    browser: Any, live: Live, reader: tuple[str, httpx.Client]
) -> None:
    key, api = reader
    page = for_you(browser, live, key)
    # The expected list is read once the like is stored, not while its POST is in flight.
    with page.expect_response(f"**{BASE}/events"):
        page.locator("#rec-list .rec-card[data-id='h1'] button[data-action='like']").click()
    expect_cards(list_cards(page), recommended(api))

    with page.expect_request(lambda r: urlsplit(r.url).path == BASE) as sent:
        page.fill("#rec-diversity", "1")
    query = parse_qs(urlsplit(sent.value.url).query)
    assert query == {"k": ["12"], "diversity": ["1"]}
    expect_cards(list_cards(page), recommended(api, diversity=1))

    with page.expect_request(lambda r: urlsplit(r.url).path == BASE) as sent:
        page.fill("#rec-wish", "funny comedy")
        page.get_by_role("button", name="Refresh").click()
    query = parse_qs(urlsplit(sent.value.url).query)
    assert query == {"k": ["12"], "diversity": ["1"], "wish": ["funny comedy"]}
    expect_cards(list_cards(page), recommended(api, diversity=1, wish="funny comedy"))

    with page.expect_request(lambda r: urlsplit(r.url).path == BASE):
        page.fill("#rec-diversity", "0")
    expect_cards(list_cards(page), recommended(api, wish="funny comedy"))
    assert page.script_errors == []


def test_catalog_search_similar_items_and_like(
    browser: Any, live: Live, reader: tuple[str, httpx.Client], screenshots: Path
) -> None:
    from playwright.sync_api import expect

    key, api = reader
    page = for_you(browser, live, key)
    page.fill("#rec-query", "Scream")
    page.get_by_role("button", name="Search").click()
    results = page.locator("#rec-results .rec-item")
    found = api.get(f"{BASE}/items", params={"q": "Scream"}).json()["items"]
    assert [i["id"] for i in found] == ["h3"]
    expect(results.locator(".rec-title")).to_have_text(["Scream Lake"])
    assert ids(results) == ["h3"]

    results.first.locator("button[data-action='similar']").click()
    similar = api.get(f"{BASE}/similar/h3", params={"k": 10}).json()["items"]
    assert similar
    expect_cards(results.first.locator(".rec-similar .rec-card"), similar)
    # similar items are for looking: no buttons that record events on them
    expect(results.first.locator(".rec-similar button")).to_have_count(0)
    page.screenshot(path=screenshots / "console-recommend-search.png", full_page=True)

    results.first.locator("button[data-action='like']").click()
    expect(page.locator("#rec-recent li[data-id]")).to_have_count(1)
    view = api.get(f"{BASE}/profile").json()
    assert [i["id"] for i in view["recent"]] == ["h3"]
    expect_profile(page, view)
    expect_cards(list_cards(page), recommended(api))

    page.fill("#rec-query", "no such film")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#rec-results")).to_have_text("no items")
    assert page.script_errors == []


@pytest.fixture(scope="module")
def live_without(e2e_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A server whose --recommend-model names no model."""
    d = tmp_path_factory.mktemp("e2e-norec")
    runner, server = start(
        e2e_models,
        f"sqlite:///{d / 'llmos.db'}",
        rate_limit=0,
        recommend_model="nope",
        apps_dir=d,
    )
    with runner:
        yield server


def test_without_a_recommender_the_page_says_why(browser: Any, live_without: Live) -> None:
    from playwright.sync_api import expect

    with live_without.client(live_without.alice) as api:
        r = api.get(BASE, params={"k": 12})
    assert r.status_code == 503 and r.json()["error"]["type"] == "no_recommender"
    page = open_console(browser, live_without, live_without.alice)
    go(page, "recommend")
    expect_alert(page, r.json()["error"]["message"])
    expect(page.get_by_role("alert")).to_contain_text("HTTP 503, no_recommender")
    expect(page.locator("#page h1")).to_have_text("For you")
    assert page.script_errors == []
