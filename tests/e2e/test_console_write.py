"""The console's "Write" page (the writing assistant) in headless Chromium against a real
server with the writing assistant's tiny models (tests/serve/conftest.py ``build_writer``: a
random spelling model, a GPT, an encoder and three Tang poems as the shared corpus) and one
``llmos worker``. Each test signs in as a fresh user and checks what the page shows and does
against what /v1/apps/write answers for that user: corrections accepted and rejected, the
dictionary, documents, material, a streamed continuation and an adapter trained as a job."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.test_console import expect_alert, go, open_console
from serve.conftest import WRITE_SHARED, Live, build_writer, start

from llmos.apps.write.edits import Edit, apply_edits

BASE = "/v1/apps/write"
pytestmark = pytest.mark.browser
_users = itertools.count()
# 记者 first, so that the dictionary's longer form shifts the model's edits after it.
TEXT = "记者介绍学生学习历史和艺术的文化。"
STYLE = "却说曹操引兵大败玄德。次日关公张飞于是城下。" * 20


@pytest.fixture(scope="module")
def writer_root(
    tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path, tiny_tokenizer: Path
) -> Path:
    """The writing assistant's tiny models (``models/``) and shared corpus (``apps/``)."""
    from llmos.text.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("e2e-write")
    bpe = train_tokenizer("bpe", [tiny_corpus / "train.txt"], 300, root / "bpe")
    build_writer(root, tiny_tokenizer, bpe)
    return root


@pytest.fixture(scope="module")
def live_writer(writer_root: Path) -> Iterator[Live]:
    root = writer_root
    runner, server = start(
        root / "models",
        f"sqlite:///{root / 'llmos.db'}",
        rate_limit=0,
        write_model="csc",
        write_generator="gpt",
        write_encoder="emb",
        apps_dir=root / "apps",
        workers=1,  # a real `llmos worker` process trains the adapters
    )
    with runner:
        yield server


@pytest.fixture
def writer(live_writer: Live) -> Iterator[tuple[str, httpx.Client]]:
    """A new user (no documents, dictionary or adapters): their key and a client for them."""
    with live_writer.client(live_writer.admin) as admin:
        r = admin.post("/v1/users", json={"name": f"writer-{next(_users)}"})
        assert r.status_code == 201, r.text
    key = r.json()["api_key"]
    with live_writer.client(key) as c:
        yield key, c


def write_page(browser: Any, live: Live, key: str) -> Any:
    from playwright.sync_api import expect

    page = open_console(browser, live, key)
    go(page, "write")
    expect(page.locator("#page h1")).to_have_text("Write")
    return page


def applied(text: str, edits: list[dict[str, Any]]) -> str:
    return apply_edits(text, [Edit(**e) for e in edits])


def shown_edits(page: Any) -> list[list[Any]]:
    return page.locator("#write-marked .write-edit").evaluate_all(
        "es => es.map(e => [Number(e.dataset.start), Number(e.dataset.end),"
        " e.querySelector('mark').textContent, e.querySelector('.suggestion').textContent,"
        " e.classList.contains('dictionary') ? 'dictionary' : 'spelling'])"
    )


def as_shown(edits: list[dict[str, Any]]) -> list[list[Any]]:
    return [[e["start"], e["end"], e["original"], e["suggestion"], e["kind"]] for e in edits]


def continued(page: Any, api: httpx.Client) -> tuple[dict[str, Any], str]:
    """Click Continue; the request the page sent and, once done, the text it streamed, which
    must equal the API's non-streamed answer to the same request."""
    from playwright.sync_api import expect

    with page.expect_response(lambda r: r.url.endswith(f"{BASE}/continue")) as answer:
        page.click("#write-continue")
    assert answer.value.headers["content-type"].startswith("text/event-stream")
    body = answer.value.request.post_data_json
    assert body["stream"] is True
    expect(page.locator("#write-continue-status")).to_contain_text("done:")
    want = api.post(f"{BASE}/continue", json=body | {"stream": False})
    assert want.status_code == 200, want.text
    assert page.locator("#write-continuation").text_content() == want.json()["text"]
    return body, want.json()["text"]


def test_corrections_under_the_users_dictionary_accept_and_reject(
    browser: Any, live_writer: Live, writer: tuple[str, httpx.Client], screenshots: Path
) -> None:
    from playwright.sync_api import expect

    key, api = writer
    page = write_page(browser, live_writer, key)
    # The dictionary, in the page: a protected term and a pair.
    page.fill("#write-protect-term", "历史")
    page.click("button:has-text('Protect')")
    expect(page.locator("#write-protect li[data-term='历史']")).to_be_visible()
    page.fill("#write-pair-wrong", "记者")
    page.fill("#write-pair-right", "新闻记者")
    page.click("button:has-text('Add pair')")
    expect(page.locator("#write-pairs li[data-term='记者']")).to_contain_text("记者 → 新闻记者")
    got = api.get(f"{BASE}/dictionary").json()
    assert got == {"protect": ["历史"], "pairs": {"记者": "新闻记者"}, "size": 2}

    want = api.post(f"{BASE}/correct", json={"texts": [TEXT], "threshold": 0}).json()
    edits = want["results"][0]["edits"]
    assert edits[0]["kind"] == "dictionary" and edits[0]["suggestion"] == "新闻记者"
    assert len(edits) >= 4, edits  # the random model changes some characters at threshold 0

    editor = page.locator("#write-text")
    page.fill("#write-text", TEXT)
    page.fill("#write-threshold", "0")
    page.click("#write-check")
    marks = page.locator("#write-marked .write-edit")
    expect(marks).to_have_count(len(edits))
    assert shown_edits(page) == as_shown(edits)
    style = marks.first.locator("mark").evaluate("m => getComputedStyle(m).textDecorationStyle")
    assert style == "wavy"
    # Material and a continuation beside the marks (neither changes the text), for the picture.
    page.click("#write-suggest")
    expect(page.locator("#write-suggestions .write-suggestion").first).to_be_visible()
    page.fill("#write-max-new-tokens", "12")
    continued(page, api)
    expect(marks).to_have_count(len(edits))
    page.screenshot(path=screenshots / "console-write.png", full_page=True)

    # Accept the dictionary's edit (2 -> 4 characters), then the last one: its offsets moved.
    marks.first.locator("[data-action=accept]").click()
    expect(editor).to_have_value(applied(TEXT, edits[:1]))
    expect(marks).to_have_count(len(edits) - 1)
    marks.last.locator("[data-action=accept]").click()
    expect(editor).to_have_value(applied(TEXT, [edits[0], edits[-1]]))
    # Reject the (now) first: the text stays, the mark goes.
    marks.first.locator("[data-action=reject]").click()
    expect(marks).to_have_count(len(edits) - 3)
    expect(editor).to_have_value(applied(TEXT, [edits[0], edits[-1]]))
    page.click("#write-accept-all")
    expect(marks).to_have_count(0)
    expect(editor).to_have_value(applied(TEXT, [edits[0], *edits[2:]]))

    # Checked again (typing drops the old marks), Accept all is the API's corrected text.
    page.fill("#write-text", TEXT)
    page.click("#write-check")
    expect(marks).to_have_count(len(edits))
    page.click("#write-accept-all")
    expect(editor).to_have_value(want["results"][0]["corrected"])

    # Removing the pair in the page removes it from the dictionary.
    page.locator("#write-pairs li[data-term='记者'] [data-action=remove]").click()
    expect(page.locator("#write-pairs li[data-term]")).to_have_count(0)
    assert api.get(f"{BASE}/dictionary").json()["pairs"] == {}
    assert page.script_errors == []


def test_documents_and_material_with_their_sources(
    browser: Any, live_writer: Live, writer: tuple[str, httpx.Client]
) -> None:
    from playwright.sync_api import expect

    key, api = writer
    page = write_page(browser, live_writer, key)
    rows = page.locator("#write-docs tr[data-id]")
    expect(rows).to_have_count(0)
    mine = "老师昨天讨论经济。学生经常学习历史，记者现在介绍艺术。"
    page.fill("#write-doc-title", "游记")
    page.fill("#write-doc-text", mine)
    page.click("button:has-text('Upload')")
    expect(rows).to_have_count(1)
    diary = "我们今天参观城市。公司去年发展市场。"
    page.set_input_files(
        "#write-doc-file",
        files=[{"name": "日记.txt", "mimeType": "text/plain", "buffer": diary.encode()}],
    )
    page.click("button:has-text('Upload')")
    expect(rows).to_have_count(2)
    docs = {d["title"]: d for d in api.get(f"{BASE}/documents").json()}
    assert {t: d["chars"] for t, d in docs.items()} == {"游记": len(mine), "日记": len(diary)}
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.id)")) == sorted(
        str(d["id"]) for d in docs.values()
    )

    # Material for the paragraph: the page lists what the API answers, sources included.
    for paragraph in ("学生经常学习历史", "黄河入海流"):
        page.fill("#write-text", paragraph)
        with page.expect_response(lambda r: r.url.endswith(f"{BASE}/suggest")):
            page.click("#write-suggest")
        want = api.post(f"{BASE}/suggest", json={"text": paragraph, "k": 5}).json()["suggestions"]
        cards = page.locator("#write-suggestions .write-suggestion")
        # Waits for this paragraph's cards: the last paragraph's are on the page until the
        # answer is drawn, and they may be as many.
        expect(cards.locator(".write-passage")).to_have_text([s["text"] for s in want])
        shown = cards.evaluate_all(
            "cs => cs.map(c => [c.dataset.corpus, c.dataset.doc,"
            " c.querySelector('.write-source').textContent,"
            " c.querySelector('.write-passage').textContent])"
        )
        label = {"user": "your document", "tang": "Tang poems"}
        assert shown == [
            [
                s["source"]["corpus"],
                s["source"]["doc"],
                f"{label[s['source']['corpus']]} · {s['source']['title']}",
                s["text"],
            ]
            for s in want
        ]
    assert shown[0][:3] == ["tang", "tang-1", f"Tang poems · {WRITE_SHARED[1]}"]
    cards.first.locator("[data-action=insert]").click()
    expect(page.locator("#write-text")).to_have_value("黄河入海流" + want[0]["text"])
    page.fill("#write-text", "学生经常学习历史")
    page.click("#write-suggest")
    expect(page.locator(f".write-suggestion[data-doc='{docs['游记']['id']}']")).to_contain_text(
        "your document · 游记"
    )

    # A document as the editor's text; a document deleted.
    row = page.locator(f"#write-docs tr[data-id='{docs['游记']['id']}']")
    row.locator("[data-action=use]").click()
    expect(page.locator("#write-text")).to_have_value(mine)
    page.locator(f"#write-docs tr[data-id='{docs['日记']['id']}'] [data-action=delete]").click()
    expect(rows).to_have_count(1)
    assert [d["title"] for d in api.get(f"{BASE}/documents").json()] == ["游记"]
    assert page.script_errors == []


def test_continuation_streams_with_the_base_model(
    browser: Any, live_writer: Live, writer: tuple[str, httpx.Client]
) -> None:
    from playwright.sync_api import expect

    key, api = writer
    page = write_page(browser, live_writer, key)
    expect(page.locator("#write-adapter option")).to_have_text(["base model"])
    page.fill("#write-text", "却说曹操")
    page.fill("#write-max-new-tokens", "12")
    body, text = continued(page, api)
    assert body["use_adapter"] is False and "adapter" not in body
    assert body["strategy"] == "greedy" and body["max_new_tokens"] == 12
    assert text  # a random GPT still writes something
    expect(page.locator("#write-continue-status")).to_contain_text("with the base model")
    page.click("#write-insert")
    expect(page.locator("#write-text")).to_have_value("却说曹操" + text)
    assert page.script_errors == []


def test_adapter_trained_from_the_page_then_used_and_deleted(
    browser: Any, live_writer: Live, writer: tuple[str, httpx.Client]
) -> None:
    from playwright.sync_api import expect

    key, api = writer
    r = api.post(f"{BASE}/documents", json={"title": "卷一", "text": STYLE})
    assert r.status_code == 201, r.text
    page = write_page(browser, live_writer, key)
    page.fill("#write-adapter-name", "mine")
    page.fill("#write-adapter-steps", "10")
    page.click("button:has-text('Train adapter')")
    job = page.locator("#write-training .job")
    expect(job.locator(".row")).to_be_visible()  # the Jobs page's progress bar
    expect(job).to_have_attribute("data-status", "done", timeout=120_000)
    expect(job.locator(".row .value")).to_have_text("100.0%")
    row = page.locator("#write-adapters tr[data-name='mine']")
    expect(row).to_have_attribute("data-status", "ready")
    expect(row.locator(".status")).to_have_text("ready")
    listed = api.get(f"{BASE}/adapters").json()
    assert [(a["name"], a["status"], a["info"]["step"]) for a in listed] == [("mine", "ready", 10)]

    # The newest ready adapter is chosen for Continue, and the answer names it.
    expect(page.locator("#write-adapter")).to_have_value("mine")
    page.fill("#write-text", "却说曹操")
    page.fill("#write-max-new-tokens", "12")
    body, _ = continued(page, api)
    assert body["adapter"] == "mine"
    expect(page.locator("#write-continue-status")).to_contain_text("with adapter “mine”")

    row.locator("[data-action=delete]").click()
    expect(page.locator("#write-adapters tr[data-name]")).to_have_count(0)
    assert api.get(f"{BASE}/adapters").json() == []
    expect(page.locator("#write-adapter option")).to_have_text(["base model"])
    assert page.script_errors == []


def test_without_a_spelling_model_the_page_says_how_to_build_one(
    browser: Any, writer_root: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    runner, live = start(
        writer_root / "models",
        f"sqlite:///{tmp_path / 'llmos.db'}",
        rate_limit=0,
        write_model="absent",
    )
    with runner:
        page = write_page(browser, live, live.alice)
        page.fill("#write-text", TEXT)
        page.click("#write-check")
        expect_alert(page, "llmos setup --with csc-zh")
        expect(page.get_by_role("alert")).to_contain_text("no_model")
        expect(page.locator("#write-text")).to_have_value(TEXT)
        expect(page.locator("#write-check")).to_be_enabled()
        expect(page.locator("#write-marked")).to_be_hidden()
        assert page.script_errors == []
