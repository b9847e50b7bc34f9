"""The web console in headless Chromium against a real server with tiny models: sign-in, then
every page with Chinese input (and some English), each asserting that what the page shows is
what the HTTP API answers for the same input, and that a failing call shows the server's own
message (never a blank page). Screenshots of each page go to build/screenshots."""

from __future__ import annotations

import fnmatch
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from serve.conftest import DOCS, Live, metric, slow_streams, wait_for_metric

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "src" / "llmos" / "serve" / "static"


@pytest.fixture
def api(live: Live) -> Iterator[httpx.Client]:
    with live.client(live.alice) as c:
        yield c


def error_of(api: httpx.Client, path: str, body: dict[str, Any]) -> str:
    r = api.post(path, json=body)
    assert r.status_code >= 400, r.text
    return r.json()["error"]["message"]


def open_console(browser: Any, live: Live, key: str | None = None) -> Any:
    """A fresh browser context on the console, signed in with ``key`` when given."""
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.script_errors = errors
    page.goto(live.url + "/")
    if key is not None:
        page.fill("#api-key", key)
        page.click("#sign-in")
        expect(page.locator("#models")).to_be_visible()
    return page


def go(page: Any, name: str) -> None:
    from playwright.sync_api import expect

    page.click(f"nav a[href='#/{name}']")
    expect(page.locator("nav a.active")).to_have_attribute("href", f"#/{name}")


def expect_alert(page: Any, message: str) -> None:
    """The server's message is shown in the alert region, and the page is still there."""
    from playwright.sync_api import expect

    expect(page.get_by_role("alert")).to_contain_text(message)
    expect(page.locator("#page h1")).to_be_visible()


def bars(locator: Any) -> list[tuple[str, float, str]]:
    """(name, score, shown percent) of each score bar under ``locator``."""
    return locator.locator(".row").evaluate_all(
        "rows => rows.map(r => [r.dataset.name, Number(r.dataset.score),"
        " r.querySelector('.value').textContent])"
    )


def assert_bars(shown: list[tuple[str, float, str]], want: list[tuple[str, float]]) -> None:
    assert [name for name, _, _ in shown] == [name for name, _ in want]
    for (_, score, text), (_, expected) in zip(shown, want, strict=True):
        assert score == pytest.approx(expected, abs=1e-5)
        assert float(text.rstrip("%")) == pytest.approx(expected * 100, abs=0.051)


def test_console_is_served_beside_the_api(live: Live) -> None:
    with httpx.Client(base_url=live.url) as c:
        r = c.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert '<meta charset="utf-8">' in r.text and 'role="alert"' in r.text
        js = c.get("/static/js/app.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
        assert c.get("/static/nope.js").status_code == 404
        assert c.get("/healthz").json()["status"] == "ok"
        assert c.get("/docs").status_code == 200
        assert "/" not in c.get("/openapi.json").json()["paths"]
    # every file of the console is package data, so that an installed llmos serves it too
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["llmos"]
    for f in STATIC.rglob("*"):
        if f.is_file():
            rel = f.relative_to(REPO / "src" / "llmos").as_posix()
            assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} is not package data"


@pytest.mark.browser
@pytest.mark.parametrize(
    ("path", "shown"), [("/docs", ".swagger-ui .info"), ("/redoc", "redoc h1")]
)
def test_api_docs_render_without_any_other_host(
    browser: Any, live: Live, path: str, shown: str
) -> None:
    """/docs and /redoc render on a machine without internet: every request to another host
    is refused, and the page still shows the API (its scripts and styles come from this
    server)."""
    from playwright.sync_api import expect

    page = browser.new_context().new_page()
    elsewhere: list[str] = []

    def only_this_server(route: Any) -> None:
        if route.request.url.startswith(live.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    page.goto(live.url + path)
    expect(page.locator(shown)).to_contain_text("llmos", timeout=30_000)
    expect(page.get_by_text("/v1/classify").first).to_be_visible()
    # ReDoc's bundle itself names one image elsewhere, its "API docs by Redocly" badge; the
    # page works without it (the badge shows its alt text).
    assert set(elsewhere) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}


@pytest.mark.browser
def test_sign_in_shows_the_servers_refusal_then_the_user(
    browser: Any, live: Live, api: httpx.Client, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    page = open_console(browser, live)
    expect(page.locator("#nav")).to_be_hidden()
    page.screenshot(path=screenshots / "console-sign-in.png")
    page.click("#sign-in")  # no key at all
    with httpx.Client(base_url=live.url) as anonymous:
        expect_alert(page, anonymous.get("/v1/me").json()["error"]["message"])
    page.fill("#api-key", "llmos_not-a-key")
    page.click("#sign-in")
    with live.client("llmos_not-a-key") as wrong:
        expect_alert(page, wrong.get("/v1/me").json()["error"]["message"])
    assert page.evaluate("sessionStorage.length") == 0

    page.fill("#api-key", live.alice)
    page.click("#sign-in")
    expect(page.locator("#who")).to_have_text(f"Signed in as {api.get('/v1/me').json()['name']}")
    expect(page.get_by_role("alert")).to_be_hidden()
    page.reload()  # the key lives in the tab's sessionStorage
    expect(page.locator("#who")).to_have_text("Signed in as alice")
    page.click("#sign-out")
    expect(page.locator("#api-key")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0 and page.script_errors == []


@pytest.mark.browser
def test_models_page_lists_what_the_api_lists(
    browser: Any, live: Live, api: httpx.Client, screenshots: Path
) -> None:
    page = open_console(browser, live, live.alice)
    want = api.get("/v1/models").json()
    rows = page.locator("#models tr[data-model]").evaluate_all(
        "rows => rows.map(r => Array.from(r.cells, c => c.textContent))"
    )
    assert [r[0] for r in rows] == [m["name"] for m in want["models"]]
    for r, m in zip(rows, want["models"], strict=True):
        assert r[1:5] == [
            m["task"],
            ", ".join(m["capabilities"]),
            m["language"],
            f"{m['size_bytes'] / 2**20:.1f}",
        ]
        assert r[6] == (", ".join(m["labels"]) if m["labels"] else "—")
    assert page.locator("#indexes td").first.text_content() == "docs"
    page.screenshot(path=screenshots / "console-models.png")


@pytest.mark.browser
def test_classify_shows_the_api_probabilities(
    browser: Any, live: Live, api: httpx.Client, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    texts = ["我们今天参观城市。", "老师昨天讨论经济，学生学习历史！", "the market grew"]
    page = open_console(browser, live, live.alice)
    go(page, "classify")
    page.select_option("#model", "cls")
    page.fill("#texts", "\n".join([texts[0], "", f"  {texts[1]}  ", texts[2]]))  # lines trimmed
    page.get_by_role("button", name="Classify").click()
    cards = page.locator("#results .result")
    expect(cards).to_have_count(len(texts))
    want = api.post("/v1/classify", json={"model": "cls", "texts": texts}).json()["results"]
    for i, (text, w) in enumerate(zip(texts, want, strict=True)):
        assert cards.nth(i).locator(".text").text_content() == text
        assert_bars(bars(cards.nth(i)), sorted(w["scores"].items(), key=lambda kv: -kv[1]))
    page.screenshot(path=screenshots / "console-classify.png")

    page.fill("#texts", "")
    page.get_by_role("button", name="Classify").click()
    expect_alert(page, error_of(api, "/v1/classify", {"model": "cls", "texts": []}))


@pytest.mark.browser
def test_classify_sends_the_second_texts_of_sentence_pairs(
    browser: Any, live: Live, api: httpx.Client
) -> None:
    from playwright.sync_api import expect

    texts, seconds = DOCS[:2], DOCS[2:4]
    page = open_console(browser, live, live.alice)
    go(page, "classify")
    page.fill("#texts", "\n".join(texts))
    page.fill("#texts-b", "\n".join(seconds))
    body = {"model": "cls", "texts": texts}
    # the random tiny classifier scores pairs and single texts only ~1e-5 apart: the request
    # itself shows what was classified
    with page.expect_request("**/v1/classify") as sent:
        page.get_by_role("button", name="Classify").click()
    assert sent.value.post_data_json == {**body, "texts_b": seconds}
    cards = page.locator("#results .result")
    expect(cards).to_have_count(len(texts))
    pairs = api.post("/v1/classify", json={**body, "texts_b": seconds}).json()["results"]
    for i, w in enumerate(pairs):
        assert cards.nth(i).locator(".text").text_content() == texts[i]
        assert cards.nth(i).locator(".text-b").text_content() == seconds[i]
        assert_bars(bars(cards.nth(i)), sorted(w["scores"].items(), key=lambda kv: -kv[1]))

    page.fill("#texts-b", seconds[0])  # one second text for two texts
    page.get_by_role("button", name="Classify").click()
    expect_alert(page, error_of(api, "/v1/classify", {**body, "texts_b": seconds[:1]}))

    page.fill("#texts-b", "")  # no second texts: single-text classification again
    with page.expect_request("**/v1/classify") as sent:
        page.get_by_role("button", name="Classify").click()
    assert sent.value.post_data_json == body
    expect(cards).to_have_count(len(texts))
    expect(page.locator("#results .text-b")).to_have_count(0)
    singles = api.post("/v1/classify", json=body).json()["results"]
    for i, w in enumerate(singles):
        assert_bars(bars(cards.nth(i)), sorted(w["scores"].items(), key=lambda kv: -kv[1]))


@pytest.mark.browser
def test_tag_highlights_the_api_spans(
    browser: Any, live: Live, api: httpx.Client, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    texts = ["江泽民在北京会见记者。", "我们今天参观城市，老师讨论经济。"]
    page = open_console(browser, live, live.alice)
    go(page, "tag")
    page.fill("#texts", "\n".join(texts))
    page.get_by_role("button", name="Tag").click()
    results = page.locator("#results .result")
    expect(results).to_have_count(len(texts))
    want = api.post("/v1/tag", json={"model": "ner", "texts": texts}).json()["results"]
    assert any(want), "the random tagger found no span: the check below would be empty"
    for i, (text, spans) in enumerate(zip(texts, want, strict=True)):
        para = results.nth(i).locator(".tagged")
        assert para.text_content() == text  # labels are drawn by CSS, not inserted as text
        marks = para.locator("mark").evaluate_all(
            "ms => ms.map(m => [m.textContent, m.dataset.label])"
        )
        assert marks == [[s["text"], s["label"]] for s in spans]
    legend = page.locator("#legend span").all_text_contents()
    assert legend[:2] == ["PER", "LOC"]  # the model's types first, in its label order
    colours = page.locator("#legend span").evaluate_all(
        "ss => ss.map(s => getComputedStyle(s).backgroundColor)"
    )
    assert len(set(colours)) == len(colours)
    page.screenshot(path=screenshots / "console-tag.png")

    long = "城" * 501
    page.fill("#texts", long)
    page.get_by_role("button", name="Tag").click()
    expect_alert(page, error_of(api, "/v1/tag", {"model": "ner", "texts": [long]}))


@pytest.mark.browser
def test_fill_mask_shows_the_api_candidates(
    browser: Any, live: Live, api: httpx.Client, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    text = "我们[MASK]天参观城市。"
    page = open_console(browser, live, live.alice)
    go(page, "fill-mask")
    page.select_option("#model", "mlm")  # emb (an embedding encoder with an MLM head) fills too
    page.fill("#text", text)
    page.fill("#top-k", "4")
    page.get_by_role("button", name="Fill").click()
    expect(page.locator("#results .result")).to_have_count(1)
    body = {"model": "mlm", "text": text, "top_k": 4}
    want = api.post("/v1/fill-mask", json=body).json()["results"][0]
    assert_bars(bars(page.locator("#results")), [(f["token"], f["score"]) for f in want])
    assert page.locator("#results .text").text_content() == want[0]["sequence"]
    page.screenshot(path=screenshots / "console-fill-mask.png")

    page.fill("#text", "我们今天参观城市。")
    page.get_by_role("button", name="Fill").click()
    body = {"model": "mlm", "text": "我们今天参观城市。", "top_k": 4}
    expect_alert(page, error_of(api, "/v1/fill-mask", body))


@pytest.mark.browser
def test_generate_streams_the_greedy_text(
    browser: Any, live: Live, api: httpx.Client, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    page = open_console(browser, live, live.alice)
    go(page, "generate")
    defaults = api.get("/v1/generate/defaults").json()  # the form starts from the server's
    assert page.input_value("#strategy") == defaults["strategy"]
    for name in (
        "max_new_tokens",
        "temperature",
        "top_k",
        "top_p",
        "repetition_penalty",
        "no_repeat_ngram_size",
        "num_beams",
    ):
        assert float(page.input_value("#" + name.replace("_", "-"))) == defaults[name], name
    expect(page.locator("#temperature")).to_be_disabled()  # sampling options: strategy sample
    page.select_option("#strategy", "sample")
    expect(page.locator("#temperature")).to_be_enabled()
    page.select_option("#strategy", "greedy")
    page.fill("#prompt", "我们今天")
    page.fill("#max-new-tokens", "12")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#status")).to_contain_text("done", timeout=30_000)
    body = {"model": "gpt", "prompt": "我们今天", "max_new_tokens": 12}
    want = api.post("/v1/generate", json=body).json()["text"]
    assert want and page.locator("#generated").text_content() == want
    assert page.locator("#output .prompt").text_content() == "我们今天"
    page.screenshot(path=screenshots / "console-generate.png")

    page.fill("#max-new-tokens", "100000")
    page.get_by_role("button", name="Generate").click()
    expect_alert(page, error_of(api, "/v1/generate", {**body, "max_new_tokens": 100000}))
    expect(page.locator("#status")).to_have_text("failed")


@pytest.mark.browser
def test_stop_ends_the_stream_and_the_servers_decoding(
    browser: Any, live: Live, api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stop mid-stream: the page keeps the text so far and says stopped, and the server's model
    thread stops decoding (its metrics count a stream ended by the client). Each piece is
    slowed to 50 ms so that Stop lands mid-stream (the server runs in this process)."""
    from playwright.sync_api import expect

    slow_streams(monkeypatch, 0.05)
    body = {"model": "gpt", "prompt": "我们今天", "max_new_tokens": 56}
    whole = api.post("/v1/generate", json=body).json()["text"]
    closed = metric(api, "llmos_streams_total", model="gpt", outcome="client_closed")
    page = open_console(browser, live, live.alice)
    go(page, "generate")
    page.fill("#prompt", body["prompt"])
    page.fill("#max-new-tokens", str(body["max_new_tokens"]))
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#generated")).not_to_be_empty(timeout=30_000)
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#status")).to_have_text("stopped")
    shown = page.locator("#generated").text_content()
    assert shown and whole.startswith(shown) and len(shown) < len(whole)
    wait_for_metric(
        api,
        "llmos_streams_total",
        closed,
        "the server went on decoding after Stop",
        timeout=10,
        model="gpt",
        outcome="client_closed",
    )
    assert not page.script_errors


@pytest.mark.browser
def test_generate_with_beams_shows_the_beam_search_text(
    browser: Any, live: Live, api: httpx.Client
) -> None:
    from playwright.sync_api import expect

    page = open_console(browser, live, live.alice)
    go(page, "generate")
    page.select_option("#strategy", "sample")
    expect(page.locator("#num-beams")).to_be_disabled()  # beam search is greedy only
    page.select_option("#strategy", "greedy")
    page.fill("#prompt", "老师昨天")
    page.fill("#max-new-tokens", "10")
    page.fill("#num-beams", "3")
    with page.expect_request("**/v1/generate") as sent:
        page.get_by_role("button", name="Generate").click()
    body = {"model": "gpt", "prompt": "老师昨天", "max_new_tokens": 10, "num_beams": 3}
    # a plain JSON request: the server streams one sequence only
    defaults = api.get("/v1/generate/defaults").json()
    options = {
        "strategy": "greedy",
        "repetition_penalty": defaults["repetition_penalty"],
        "no_repeat_ngram_size": defaults["no_repeat_ngram_size"],
        "stop": [],
        "raw": False,
    }
    assert sent.value.post_data_json == {**body, **options, "stream": False}
    expect(page.locator("#status")).to_contain_text("beam search over 3 beams", timeout=30_000)
    want = api.post("/v1/generate", json=body).json()["text"]
    assert want and page.locator("#generated").text_content() == want

    page.fill("#num-beams", "17")
    page.get_by_role("button", name="Generate").click()
    expect_alert(page, error_of(api, "/v1/generate", {**body, "num_beams": 17}))
    expect(page.locator("#status")).to_have_text("failed")


@pytest.mark.browser
def test_search_and_embed_show_the_api_scores(
    browser: Any, live: Live, api: httpx.Client, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    page = open_console(browser, live, live.alice)
    go(page, "search")
    page.fill("#query", DOCS[2])
    page.fill("#k", "3")
    page.get_by_role("button", name="Search").click()
    hits = page.locator("#hits .hit")
    expect(hits).to_have_count(3)
    want = api.post("/v1/search", json={"index": "docs", "query": DOCS[2], "k": 3}).json()
    assert hits.evaluate_all("hs => hs.map(h => h.dataset.id)") == [h["id"] for h in want["hits"]]
    assert_bars(bars(page.locator("#hits")), [(h["text"], h["score"]) for h in want["hits"]])

    texts = [DOCS[0], DOCS[1], "学生经常学习历史"]
    page.select_option("#embed-model", "emb")
    page.fill("#embed-texts", "\n".join(texts))
    page.get_by_role("button", name="Embed").click()
    expect(page.locator("#matrix")).to_be_visible()
    got = api.post("/v1/embed", json={"model": "emb", "texts": texts}).json()
    assert page.locator("#dim").text_content() == f"3 vectors of dimension {got['dim']}"
    v = np.array(got["embeddings"])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    shown = page.locator("#matrix td").all_text_contents()
    np.testing.assert_allclose(np.array(shown, dtype=float).reshape(3, 3), v @ v.T, atol=1.1e-3)
    page.screenshot(path=screenshots / "console-search.png", full_page=True)

    page.fill("#query", "")
    page.get_by_role("button", name="Search").click()
    expect_alert(page, error_of(api, "/v1/search", {"index": "docs", "query": "", "k": 3}))


@pytest.mark.browser
def test_profile_page_reads_and_writes_the_callers_profile(
    browser: Any, live: Live, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    with live.client(live.bob) as bob:
        bob.post("/v1/me/events", json={"kind": "rating", "item": "酒店", "value": 4.5})
        page = open_console(browser, live, live.bob)
        go(page, "profile")
        page.fill("#profile-key", "city")
        page.fill("#profile-value", "北京")
        page.get_by_role("button", name="Set").click()
        expect(page.locator("#profile")).to_contain_text('"city": "北京"')
        assert bob.get("/v1/me/profile").json()["profile"]["city"] == "北京"
        expect(page.locator("#events tr")).to_have_count(1)
        assert page.locator("#events td").all_text_contents()[1:] == ["rating", "酒店", "", "4.5"]
    page.screenshot(path=screenshots / "console-profile.png")


def cells(rows: Any) -> list[list[str]]:
    """The text of each cell of each table row under ``rows``."""
    return rows.evaluate_all("rs => rs.map(r => Array.from(r.cells, c => c.textContent))")


def when(iso: str) -> str:
    return iso[:19].replace("T", " ")


@pytest.mark.browser
def test_profile_page_shows_and_appends_memory_and_events(browser: Any, live: Live) -> None:
    from playwright.sync_api import expect

    with live.client(live.admin) as admin:  # a user of its own: nothing remembered yet
        key = admin.post("/v1/users", json={"name": "dora"}).json()["api_key"]
    with live.client(key) as dora:
        dora.post("/v1/me/memory", json={"role": "user", "content": "我下周想去北京。"})
        page = open_console(browser, live, key)
        go(page, "profile")
        expect(page.locator("#memory tr")).to_have_count(1)
        page.select_option("#memory-role", "assistant")
        page.fill("#memory-content", "可以住在王府井附近。")
        page.get_by_role("button", name="Remember").click()
        expect(page.locator("#memory tr")).to_have_count(2)
        memory = dora.get("/v1/me/memory").json()["memory"]
        assert [(m["role"], m["content"]) for m in memory] == [
            ("user", "我下周想去北京。"),
            ("assistant", "可以住在王府井附近。"),
        ]
        assert cells(page.locator("#memory tr")) == [
            [when(m["created_at"]), m["role"], m["content"]] for m in memory
        ]
        assert page.locator("#memory-content").input_value() == ""

        page.fill("#event-kind", "rating")
        page.fill("#event-item", "酒店")
        page.fill("#event-value", "4.5")
        page.get_by_role("button", name="Record").click()
        expect(page.locator("#events tr")).to_have_count(1)
        (event,) = dora.get("/v1/me/events").json()["events"]
        assert (event["kind"], event["item"], event["text"], event["value"]) == (
            "rating",
            "酒店",
            None,
            4.5,
        )
        assert cells(page.locator("#events tr")) == [
            [when(event["created_at"]), "rating", "酒店", "", "4.5"]
        ]

        page.fill("#event-kind", "")
        page.get_by_role("button", name="Record").click()
        expect_alert(
            page, error_of(dora, "/v1/me/events", {"kind": "", "item": "酒店", "value": 4.5})
        )
        page.get_by_role("button", name="Remember").click()  # an empty message
        expect_alert(page, error_of(dora, "/v1/me/memory", {"role": "assistant", "content": ""}))
        assert len(dora.get("/v1/me/memory").json()["memory"]) == 2
    assert page.script_errors == []


@pytest.mark.browser
def test_profile_page_rotates_the_key(browser: Any, live: Live) -> None:
    """Rotate key: the new key shown works, the old one is refused, and the tab goes on with
    the new one."""
    from playwright.sync_api import expect

    with live.client(live.admin) as admin:
        old = admin.post("/v1/users", json={"name": "erin"}).json()["api_key"]
    page = open_console(browser, live, old)
    go(page, "profile")
    page.get_by_role("button", name="Rotate key").click()
    expect(page.locator("#rotated-key")).to_be_visible()
    new = page.locator("#rotated-key").text_content()
    assert new != old and new.startswith("llmos_")
    with live.client(old) as c:
        assert c.get("/v1/me").status_code == 401
    with live.client(new) as c:
        assert c.get("/v1/me").json()["name"] == "erin"
    assert page.evaluate("sessionStorage.getItem('llmos.key')") == new
    go(page, "models")  # the next calls go out with the new key
    expect(page.locator("#models")).to_be_visible()
    assert not page.get_by_role("alert").is_visible()
    assert not page.script_errors


@pytest.mark.browser
def test_admin_page_lists_and_creates_users_and_loads_models(
    browser: Any, live: Live, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    with live.client(live.admin) as admin:
        admin.post("/v1/models/unload", json={"model": "ner"})  # a known state to start from
        page = open_console(browser, live, live.admin)
        expect(page.locator("#who")).to_have_text("Signed in as admin (admin)")
        go(page, "admin")
        users = admin.get("/v1/users").json()
        expect(page.locator("#users tr")).to_have_count(len(users))
        assert cells(page.locator("#users tr")) == [
            [str(u["id"]), u["name"], "yes" if u["is_admin"] else "no"] for u in users
        ]

        page.fill("#user-name", "carol")
        page.get_by_role("button", name="Create").click()
        expect(page.locator("#users tr")).to_have_count(len(users) + 1)
        with live.client(page.locator("#new-key").text_content()) as carol:
            me = carol.get("/v1/me").json()  # the key shown is carol's, and it works
        assert me["name"] == "carol" and not me["is_admin"]
        assert cells(page.locator("#users tr[data-user=carol]")) == [[str(me["id"]), "carol", "no"]]
        page.screenshot(path=screenshots / "console-admin.png", full_page=True)

        page.fill("#user-name", "carol")  # taken: the server's 409, and the old key is gone
        page.get_by_role("button", name="Create").click()
        expect_alert(page, error_of(admin, "/v1/users", {"name": "carol"}))
        expect(page.locator("#created")).to_be_hidden()

        def loaded() -> dict[str, bool]:
            return {m["name"]: m["loaded"] for m in admin.get("/v1/models").json()["models"]}

        ner = page.locator("#admin-models tr[data-model=ner]")
        expect(ner.locator("td").nth(3)).to_have_text("no")
        ner.get_by_role("button", name="Load").click()
        expect(ner.locator("td").nth(3)).to_have_text("yes")
        assert loaded()["ner"]
        models = admin.get("/v1/models").json()["models"]
        assert cells(page.locator("#admin-models tr")) == [
            [
                m["name"],
                m["task"],
                f"{m['size_bytes'] / 2**20:.1f}",
                "yes" if m["loaded"] else "no",
                "Unload" if m["loaded"] else "Load",
            ]
            for m in models
        ]
        ner.get_by_role("button", name="Unload").click()
        expect(ner.locator("td").nth(3)).to_have_text("no")
        assert not loaded()["ner"]


@pytest.mark.browser
def test_admin_page_is_for_admins_only(browser: Any, live: Live, api: httpx.Client) -> None:
    from playwright.sync_api import expect

    page = open_console(browser, live, live.admin)
    expect(page.locator("#nav-admin")).to_be_visible()
    page.click("#sign-out")
    page.fill("#api-key", live.alice)
    page.click("#sign-in")
    expect(page.locator("#who")).to_have_text("Signed in as alice")
    expect(page.locator("#nav-admin")).to_be_hidden()
    page.goto(live.url + "/#/admin")  # typed by hand: the server refuses every call of the page
    expect_alert(page, api.get("/v1/users").json()["error"]["message"])
    expect(page.locator("#page")).to_contain_text("could not be shown")
    expect(page.locator("#users")).to_have_count(0)
    assert api.post("/v1/models/load", json={"model": "ner"}).status_code == 403
    assert page.script_errors == []


@pytest.mark.browser
def test_knowledge_base_page_uploads_lists_and_answers_as_the_api(
    browser: Any, live: Live, tmp_path: Path, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    base = "/v1/apps/support/kbs"
    with live.client(live.bob) as bob:
        page = open_console(browser, live, live.bob)
        go(page, "support")
        page.fill("#kb-name", "shop")
        page.get_by_role("button", name="Create").click()
        expect(page.locator("#kb-panel")).to_have_attribute("data-kb", "shop")
        faq = tmp_path / "faq.csv"
        faq.write_text(
            "question,answer,alternatives,tags\n"
            "农民一直保护环境,环境保护是大事。,农民保护环境吗,环境\n"
            "记者现在介绍艺术,艺术介绍在晚上。,,\n"
            "老师今天讨论经济,经济讨论在周一。,,\n",
            encoding="utf-8",
        )
        page.set_input_files("#kb-file", str(faq))
        page.get_by_role("button", name="Upload").click()
        expect(page.locator("#kb-entries tr")).to_have_count(3)
        stored = bob.get(f"{base}/shop/entries").json()["entries"]
        assert cells(page.locator("#kb-entries tr")) == [
            [
                str(e["id"]),
                e["question"],
                e["answer"],
                " | ".join(e["alternatives"]),
                ", ".join(e["tags"]),
                "Delete",
            ]
            for e in stored
        ]
        expect(page.locator("#kbs tr[data-kb='shop'] td").nth(1)).to_have_text("3")

        page.fill("#kb-query", "农民保护环境")
        page.fill("#kb-k", "2")
        page.get_by_role("button", name="Ask").click()
        expect(page.locator("#kb-hits .hit")).to_have_count(2)
        want = bob.post(f"{base}/shop/search", json={"query": "农民保护环境", "k": 2}).json()
        ids = page.locator("#kb-hits .hit").evaluate_all("hs => hs.map(h => Number(h.dataset.id))")
        assert ids == [hit["id"] for hit in want["hits"]]
        assert_bars(
            bars(page.locator("#kb-hits")), [(x["question"], x["similarity"]) for x in want["hits"]]
        )
        expect(page.locator("#kb-hits .answer").first).to_have_text(want["hits"][0]["answer"])
        page.screenshot(path=screenshots / "console-support.png", full_page=True)

        # its own encoder: the served "mlm" instead of the desk's "emb"
        expect(page.locator("#kb-encoder-note")).to_have_text(
            "searches with the desk's default encoder"
        )
        page.select_option("#kb-encoder", "mlm")
        page.get_by_role("button", name="Use").click()
        expect(page.locator("#kb-encoder-note")).to_have_text("searches with mlm")
        expect(page.locator("#kbs tr[data-kb='shop'] td").nth(3)).to_have_text("mlm")
        assert bob.get(f"{base}/shop").json()["encoder"] == "mlm"
        page.get_by_role("button", name="Ask").click()
        tuned = bob.post(f"{base}/shop/search", json={"query": "农民保护环境", "k": 2}).json()
        top = tuned["hits"][0]  # the new answer is on the page once its top bar shows it
        expect(page.locator("#kb-hits .row").first).to_have_attribute(
            "data-score", str(top["similarity"])
        )
        assert_bars(
            bars(page.locator("#kb-hits")),
            [(x["question"], x["similarity"]) for x in tuned["hits"]],
        )
        assert [x["similarity"] for x in tuned["hits"]] != [x["similarity"] for x in want["hits"]]

        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"question": "q", "answer": "a"}\n{"question": "q2"}\n', encoding="utf-8")
        page.set_input_files("#kb-file", str(bad))
        page.get_by_role("button", name="Upload").click()
        expect_alert(page, "the file:2: 'answer' must be a non-empty string")
        assert bob.get(f"{base}/shop").json()["entries"] == 3

        page.locator("#kb-entries tr").first.get_by_role("button", name="Delete").click()
        expect(page.locator("#kb-entries tr")).to_have_count(2)
        assert bob.get(f"{base}/shop").json()["entries"] == 2
    with live.client(live.alice) as alice:  # alice's page never lists bob's knowledge base
        page_a = open_console(browser, live, live.alice)
        go(page_a, "support")
        expect(page_a.locator("#page h1")).to_have_text("Knowledge bases")
        names = {kb["name"] for kb in alice.get(base).json()["kbs"]}
        assert "shop" not in names
        expect(page_a.locator("#kbs tr[data-kb='shop']")).to_have_count(0)
    assert page.script_errors == [] and page_a.script_errors == []


@pytest.mark.browser
def test_chat_escalates_and_the_queue_answers_the_customer(
    browser: Any, live: Live, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    base = "/v1/apps/support"
    with live.client(live.alice) as alice, live.client(live.admin) as admin:
        alice.post(f"{base}/kbs", json={"name": "desk"})
        alice.post(
            f"{base}/kbs/desk/entries",
            json={"entries": [{"question": "农民一直保护环境", "answer": "环境保护是大事。"}]},
        )
        alice.patch(f"{base}/kbs/desk", json={"public": True, "agents": ["admin"]})

        page = open_console(browser, live, live.bob)  # bob is the customer
        go(page, "chat")
        page.fill("#chat-kb", "alice/desk")
        page.fill("#chat-text", "农民一直保护环境")
        page.get_by_role("button", name="Send").click()
        expect(page.locator("#chat-log .turn")).to_have_count(2)
        [conv] = [
            c["id"]
            for c in live.client(live.bob).get(f"{base}/conversations").json()["conversations"]
        ]
        turns = live.client(live.bob).get(f"{base}/conversations/{conv}").json()["turns"]
        shown = page.locator("#chat-log .turn .said").all_text_contents()
        assert shown == [t["text"] for t in turns]
        expect(page.locator("#why-action")).to_have_text(turns[1]["action"])

        page.fill("#chat-text", "转人工")
        page.get_by_role("button", name="Send").click()
        expect(page.locator("#why-action")).to_have_text("escalate")
        expect(page.locator("#why-reason")).to_have_text("the customer asked for a person")
        expect(page.locator("#chat-status")).to_contain_text(": human")
        page.screenshot(path=screenshots / "console-chat.png", full_page=True)
        [ticket] = admin.get(f"{base}/tickets").json()["tickets"]

        agent = open_console(browser, live, live.admin)
        go(agent, "queue")
        expect(agent.locator("#tickets tr")).to_have_count(1)
        agent.locator(f"#tickets tr[data-id='{ticket['id']}'] a").click()
        expect(agent.locator("#ticket-transcript .turn")).to_have_count(4)
        expect(agent.locator("#ticket-transcript .trace").last).to_contain_text(
            "escalate: the customer asked for a person"
        )
        agent.fill("#ticket-reply", "您好，我是客服小王。")
        agent.get_by_role("button", name="Reply").click()
        expect(agent.locator("#ticket-transcript .turn")).to_have_count(5)
        agent.screenshot(path=screenshots / "console-queue.png", full_page=True)
        agent.get_by_role("button", name="Close ticket").click()
        expect(agent.locator("#tickets tr")).to_have_count(0)
        turns = live.client(live.bob).get(f"{base}/conversations/{conv}").json()["turns"]
        assert (turns[-1]["role"], turns[-1]["text"]) == ("agent", "您好，我是客服小王。")

        go(page, "queue")  # bob serves no knowledge base: an empty queue
        expect(page.locator("#page h1")).to_have_text("Queue")
        expect(page.locator("#tickets tr")).to_have_count(0)
    assert page.script_errors == [] and agent.script_errors == []


@pytest.mark.browser
def test_failures_never_leave_a_blank_page(browser: Any, live: Live) -> None:
    from playwright.sync_api import expect

    page = open_console(browser, live, live.alice)
    page.goto(live.url + "/#/nowhere")
    expect(page.locator("#page h1")).to_have_text("Not found")

    page.route("**/v1/**", lambda route: route.abort())  # the server is gone
    go(page, "classify")
    page.fill("#texts", "服务很好")
    page.get_by_role("button", name="Classify").click()
    expect_alert(page, "Could not reach the server")
    go(page, "models")  # the page itself needs the API: its title and the reason stay
    expect_alert(page, "Could not reach the server")
    expect(page.locator("#page")).to_contain_text("could not be shown")
    assert page.script_errors == []
