"""Screenshots of the web console on real checkpoints, for the README (docs/images/console-*.png).

    python bench/console_screenshots.py [--models runs] [--out docs/images]

Serves --models (symlinked into a temporary directory, beside a small Chinese FAQ index built
with --embedder) on a free localhost port with a throwaway SQLite store, signs in with a fresh
key in Debian's headless Chromium (Playwright, ``/usr/bin/chromium``; .ci/chromium.sh installs
it) and captures each page at 1280x800 (the search page whole) after running it on Chinese
input. A page whose model is missing under --models is skipped with a warning.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmos.serve.testing import CHROMIUM_FLAGS, UvicornThread, free_port

log = logging.getLogger("console_screenshots")
FAQ = [
    "怎么修改登录密码？",
    "忘记密码了怎么办？",
    "如何申请退款？",
    "退货需要多长时间？",
    "快递一般几天能到？",
    "发票怎么开？",
    "会员积分可以换什么？",
    "客服电话是多少？",
    "今天天气怎么样？",
    "明天会下雨吗？",
]


def models_dir(source: Path, work: Path, embedder: str) -> Path:
    """``work/models``: a symlink to every entry of ``source``, and index ``faq-zh``."""
    from llmos.recipes.search import build_index

    out = work / "models"
    out.mkdir()
    for child in sorted(source.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            (out / child.name).symlink_to(child.resolve(), target_is_directory=True)
    encoder = source / embedder
    encoder = encoder / "checkpoint" if (encoder / "checkpoint").is_dir() else encoder
    if encoder.is_dir():
        corpus = work / "faq.jsonl"
        corpus.write_text(
            "".join(
                json.dumps({"id": f"faq{i}", "text": t}, ensure_ascii=False) + "\n"
                for i, t in enumerate(FAQ)
            ),
            encoding="utf-8",
        )
        build_index(encoder, corpus, out / "faq-zh")
    else:
        log.warning("no %s under %s: the search page has no index", embedder, source)
    return out


def serve(models: Path, db_url: str) -> UvicornThread:
    """A uvicorn server for ``models`` on a free port, in a daemon thread of this process."""
    from llmos.serve.app import create_app
    from llmos.serve.settings import ServeSettings

    app = create_app(ServeSettings(models_dir=models, database_url=db_url, rate_limit=0))
    return UvicornThread(app, free_port(), start_timeout=120)


def run_form(page: Any, button: str, done: str, timeout_s: float = 120) -> None:
    page.get_by_role("button", name=button, exact=True).click()
    page.wait_for_selector(done, timeout=timeout_s * 1000)


def models_page(page: Any) -> None:
    page.wait_for_selector("#models")


def classify_page(page: Any) -> None:
    page.select_option("#model", "sentiment-zh")
    texts = ["这家酒店的服务很好，下次还会再来。", "质量太差了，用了两天就坏了。", "物流很快"]
    page.fill("#texts", "\n".join(texts))
    run_form(page, "Classify", "#results .result")


def tag_page(page: Any) -> None:
    page.select_option("#model", "ner-zh")
    texts = ["江泽民主席在北京会见了美国总统克林顿。", "新华社上海三月五日电，复旦大学举行校庆。"]
    page.fill("#texts", "\n".join(texts))
    run_form(page, "Tag", "#results .result")


def fill_mask_page(page: Any) -> None:
    page.select_option("#model", "bert-zh")
    page.fill("#text", "今天天气很[MASK]。")
    run_form(page, "Fill", "#results .result")


def generate_page(page: Any) -> None:
    page.select_option("#model", "gpt-zh")
    page.fill("#prompt", "却说曹操")
    page.fill("#max-new-tokens", "80")
    page.select_option("#strategy", "sample")
    page.fill("#top-p", "0.9")
    page.fill("#seed", "1")
    page.fill("#stop", "\\n")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_function("document.getElementById('status').textContent.startsWith('done')")


def search_page(page: Any) -> None:
    page.fill("#query", "物流要几天")
    page.fill("#k", "3")
    run_form(page, "Search", "#hits .hit")
    page.select_option("#embed-model", "bert-zh")
    page.fill("#embed-texts", "\n".join(["忘记密码了怎么办？", "密码忘了", "明天会下雨吗？"]))
    run_form(page, "Embed", "#matrix")


def admin_page(page: Any) -> None:
    page.wait_for_selector("#admin-models tr")  # the models the other pages loaded show as such
    page.wait_for_selector("#users tr")


PAGES: dict[str, tuple[str, Callable[[Any], None]]] = {
    "models": ("models", models_page),
    "classify": ("classify", classify_page),
    "tag": ("tag", tag_page),
    "fill-mask": ("fill-mask", fill_mask_page),
    "generate": ("generate", generate_page),
    "search": ("search", search_page),
    "admin": ("admin", admin_page),
}


def capture(url: str, key: str, out: Path, chromium: str) -> list[Path]:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    shots = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, headless=True, args=list(CHROMIUM_FLAGS)
        )
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        page.goto(url + "/")
        page.fill("#api-key", key)
        page.click("#sign-in")
        page.wait_for_selector("#models")
        for name, (route, fill) in PAGES.items():
            page.goto(f"{url}/#/{route}")
            page.wait_for_selector("#page h1")
            try:
                fill(page)
            except PlaywrightError as e:
                log.warning("skipping %s: %s", name, str(e).splitlines()[0])
                continue
            if page.locator("#alert").is_visible():
                log.warning("%s shows an error: %s", name, page.inner_text("#alert"))
            path = out / f"console-{name}.png"
            page.screenshot(path=path, full_page=name == "search")  # the matrix is below
            shots.append(path)
        browser.close()
    return shots


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=Path, default=Path("runs"))
    ap.add_argument("--out", type=Path, default=Path("docs/images"))
    ap.add_argument("--embedder", default="bert-zh", help="the FAQ index's encoder")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from llmos.store.db import Store

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llmos-console-") as tmp:
        work = Path(tmp)
        models = models_dir(args.models, work, args.embedder)
        db_url = f"sqlite:///{work / 'llmos.db'}"
        store = Store(db_url)
        key = store.create_user("demo", True)[1]
        store.close()
        with serve(models, db_url) as server:
            shots = capture(server.url, key, args.out, args.chromium)
    for path in shots:
        print(f"{path}  {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
