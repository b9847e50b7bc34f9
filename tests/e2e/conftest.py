"""Browser tests: headless Debian Chromium (driven by Playwright) against a real server with the
tiny models of tests/serve. Skipped without /usr/bin/chromium (``.ci/chromium.sh`` installs
it) unless ``LLMOS_REQUIRE_BROWSER=1``, which CI sets so that a missing browser fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve.conftest import Live, build_models, start

from llmos.serve.testing import CHROMIUM_FLAGS

CHROMIUM = Path(os.environ.get("LLMOS_CHROMIUM", "/usr/bin/chromium"))
REPO = Path(__file__).resolve().parents[2]


def _browser_missing() -> str | None:
    if os.environ.get("LLMOS_REQUIRE_BROWSER") == "1":
        return None
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: run .ci/chromium.sh (or set LLMOS_CHROMIUM)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = _browser_missing()
    for item in items:
        if item.get_closest_marker("browser") and reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def e2e_models(
    tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path, tiny_tokenizer: Path
) -> Path:
    """The tiny random-init models of tests/serve (cls, ner, mlm, emb, gpt) and index ``docs``."""
    from llmos.text.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("e2e")
    bpe = train_tokenizer("bpe", [tiny_corpus / "train.txt"], 300, root / "bpe")
    return build_models(root, tiny_tokenizer, bpe)


@pytest.fixture(scope="module")
def live(e2e_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    d = tmp_path_factory.mktemp("e2e-db")
    runner, server = start(
        e2e_models,
        f"sqlite:///{d / 'llmos.db'}",
        rate_limit=0,
        max_chars=500,
        support_encoder="emb",
        recommend_encoder="emb",
        apps_dir=d,
    )
    with runner:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # Playwright gives the browser a fresh, throwaway --user-data-dir of its own.
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_FLAGS)
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the tests' screenshots go: build/screenshots (ignored by git), or
    $LLMOS_SCREENSHOT_DIR. The README's come from bench/console_screenshots.py on real models."""
    out = Path(os.environ.get("LLMOS_SCREENSHOT_DIR", REPO / "build" / "screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out
