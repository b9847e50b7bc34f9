"""The console's Images page (issue 22): a PNG file uploaded through the page's file input is
shown with its nearest Chinese and English emoji names and its zero-shot label, each as the
HTTP API answers for the same file; a text search shows the API's emoji as thumbnails; a file
that is not an image shows the server's message (headless Debian Chromium against a real
server serving a tiny CLIP, :func:`serve.conftest.build_clip_models`)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e.test_console import assert_bars, bars, expect_alert, go, open_console
from serve.conftest import CLIP_ALIGNED, CLIP_TEXTS, Live, build_clip_models, png, start

from llmos.data.emoji import load_images


@pytest.fixture(scope="module")
def live_images(
    tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path
) -> Iterator[tuple[Live, Path]]:
    root = tmp_path_factory.mktemp("e2e-images")
    models, home = build_clip_models(root, tiny_tokenizer)
    runner, server = start(
        models, f"sqlite:///{root / 'llmos.db'}", rate_limit=0, emoji_home=home, apps_dir=root
    )
    with runner:
        yield server, home


@pytest.mark.browser
def test_images_page_describes_an_uploaded_png_and_finds_emoji_by_text(
    browser: Any, live_images: tuple[Live, Path], tmp_path: Path, screenshots: Path
) -> None:
    from playwright.sync_api import expect

    live, home = live_images
    face = tmp_path / "face.png"
    face.write_bytes(png(load_images(home, "twitter")[1][CLIP_ALIGNED[0]]))
    page = open_console(browser, live, live.alice)
    go(page, "images")
    page.fill("#image-labels", f"书: {CLIP_TEXTS[0]}, 书\n城：{CLIP_TEXTS[1]}")
    page.set_input_files("#image-file", str(face))  # a real upload: picking runs it

    expect(page.locator("#describe-zh .row")).to_have_count(5)
    expect(page.locator("#describe-en .row")).to_have_count(5)
    expect(page.locator("#image-preview")).to_have_attribute(
        "src", "data:image/png;base64," + base64.b64encode(face.read_bytes()).decode()
    )
    body = {"model": "clip", "images": [base64.b64encode(face.read_bytes()).decode()]}
    with live.client(live.alice) as api:
        want = api.post("/v1/images/describe", json=body).json()["results"][0]
        labels = {"书": [CLIP_TEXTS[0], "书"], "城": [CLIP_TEXTS[1]]}
        label = api.post("/v1/classify", json={**body, "labels": labels}).json()["results"][0]
        hits = api.post("/v1/images/search", json={"model": "clip", "query": "城市", "k": 3})
    for lang in ("zh", "en"):
        shown = bars(page.locator(f"#describe-{lang}"))
        assert_bars(shown, [(f"{d['emoji']} {d['text']}", d["score"]) for d in want[lang]])
    assert label["label"] == "书"  # the text aligned with this image
    expect(page.locator("#image-label h3")).to_have_text("Zero-shot: 书")
    assert_bars(
        bars(page.locator("#image-label")),
        sorted(label["scores"].items(), key=lambda x: -x[1]),
    )
    page.screenshot(path=screenshots / "console-images.png", full_page=True)

    page.fill("#image-query", "城市")
    page.fill("#image-k", "3")
    page.get_by_role("button", name="Search").click()
    thumbs = page.locator("#image-hits figure")
    expect(thumbs).to_have_count(3)
    want_hits = hits.json()["hits"]
    assert thumbs.evaluate_all("fs => fs.map(f => f.dataset.unified)") == [
        h["unified"] for h in want_hits
    ]
    images = page.locator("#image-hits img")
    assert images.evaluate_all("is => is.map(i => i.src)") == [h["image"] for h in want_hits]
    page.wait_for_function(
        "() => [...document.querySelectorAll('#image-hits img')]"
        ".every(i => i.complete && i.naturalWidth === 64)"
    )  # the PNGs decode in the browser
    page.screenshot(path=screenshots / "console-images-search.png", full_page=True)

    page.set_input_files(
        "#image-file", files={"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}
    )
    expect_alert(page, "images[0]: not an image (expected a PNG, JPEG")
    assert page.script_errors == []


@pytest.mark.browser
def test_images_page_describes_by_drawings_from_three_views(
    browser: Any, live_images: tuple[Live, Path], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    live, home = live_images
    face = tmp_path / "face.png"
    face.write_bytes(png(load_images(home, "twitter")[1][CLIP_ALIGNED[1]]))
    page = open_console(browser, live, live.alice)
    go(page, "images")
    page.select_option("#describe-by", "drawings")
    page.check("#describe-zooms")
    page.fill("#describe-k", "3")
    with page.expect_response("**/v1/images/describe") as answer:
        page.set_input_files("#image-file", str(face))
    sent = answer.value.request.post_data_json
    assert (sent["by"], sent["zooms"], sent["k"]) == ("drawings", [0.9, 1, 1.1], 3)
    expect(page.locator("#describe-en .row")).to_have_count(3)
    body = {"model": "clip", "images": [base64.b64encode(face.read_bytes()).decode()], "k": 3}
    with live.client(live.alice) as api:
        want = api.post(
            "/v1/images/describe", json={**body, "by": "drawings", "zooms": [0.9, 1, 1.1]}
        ).json()["results"][0]
        plain = api.post("/v1/images/describe", json=body).json()["results"][0]
    assert want != plain  # what the page shows tells the two apart
    for lang in ("zh", "en"):
        shown = bars(page.locator(f"#describe-{lang}"))
        assert_bars(shown, [(f"{d['emoji']} {d['text']}", d["score"]) for d in want[lang]])
    assert page.script_errors == []


@pytest.mark.browser
def test_images_page_without_a_clip_model_says_so(browser: Any, live: Live) -> None:
    from playwright.sync_api import expect

    page = open_console(browser, live, live.alice)
    go(page, "images")
    expect(page.locator("#page")).to_contain_text("No CLIP model (task clip) on this server")
    with httpx.Client(base_url=live.url) as c:
        assert c.get("/static/js/images.js").status_code == 200
    assert page.script_errors == []
