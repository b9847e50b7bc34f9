"""The console's Support chat with an NLU model: the side panel shows the message's intent
(and where it came from), its slots and the form's progress, and the chat continues the form
(headless Debian Chromium against a real server serving a tiny multitask model)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apps.support.test_nlu_desk import DOMAIN
from e2e.test_console import go, open_console
from serve.conftest import Live, start


@pytest.fixture(scope="module")
def live_nlu(
    e2e_models: Path,
    nlu_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    d = tmp_path_factory.mktemp("e2e-nlu")
    models = d / "models"
    shutil.copytree(nlu_model, models / "nlu")
    domain = d / "domain.yaml"
    domain.write_text(DOMAIN, encoding="utf-8")
    runner, server = start(
        models,
        f"sqlite:///{d / 'llmos.db'}",
        rate_limit=0,
        support_encoder="nlu",
        support_nlu_zh="nlu",
        support_domain=domain,
        apps_dir=d,
    )
    with runner:
        yield server


@pytest.mark.browser
def test_chat_panel_shows_intent_slots_and_the_form(
    browser: Any, live_nlu: Live, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    base = "/v1/apps/support"
    with live_nlu.client(live_nlu.alice) as alice:
        alice.post(f"{base}/kbs", json={"name": "desk"})
        alice.post(
            f"{base}/kbs/desk/entries",
            json={"entries": [{"question": "农民保护环境", "answer": "环境保护是大事。"}]},
        )
        alice.patch(f"{base}/kbs/desk", json={"public": True})
    page = open_console(browser, live_nlu, live_nlu.bob)
    go(page, "chat")
    page.fill("#chat-kb", "alice/desk")
    page.fill("#chat-text", "今天记者参观。")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#why-action")).to_have_text("ask")
    expect(page.locator("#why-intent")).to_contain_text("参观")
    expect(page.locator("#why-intent")).to_contain_text("trained head")
    expect(page.locator("#why-slots .tag")).to_have_text(["who=记者"])
    expect(page.locator("#why-form")).to_have_text("form 参观: who=记者")
    page.fill("#chat-text", "城市")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#why-action")).to_have_text("answer")
    expect(page.locator("#why-form")).to_have_text("form 参观: who=记者, what=城市")
    expect(page.locator("#chat-log .turn.bot .said").last).to_have_text("好的，记者参观城市。")
    page.screenshot(path=screenshots / "console-chat-form.png", full_page=True)
    assert page.script_errors == []
