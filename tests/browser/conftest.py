"""A real Chromium (Debian's, at /usr/bin/chromium) driven by Playwright for Python.

No browser is downloaded: `make install` installs the system package, and Playwright only
drives it. Each test gets a fresh browser context (its own sessionStorage), a page that
records console messages and page errors, and fails if the page logged an error it did
not expect.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

CHROMIUM = os.environ.get("BATCHFN_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "studio"
# Quiet, deterministic, offline: nothing but the page under test talks to the network.
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    # Module scope: the sync API runs an asyncio loop in this thread while it is open, which
    # would stop later tests from running their own.
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: `make install` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # headless=True adds --headless; Playwright gives the browser a new, temporary
        # user-data-dir of its own.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


class PageLog:
    """Console messages and uncaught errors of one page."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []
        self.allowed: list[str] = []  # substrings of error messages a test expects

    def errors(self) -> list[str]:
        found = [text for kind, text in self.messages if kind in ("error", "pageerror")]
        return [text for text in found if not any(a in text for a in self.allowed)]


@pytest.fixture
def page(browser, request) -> Iterator:
    """A page in a fresh context; the test fails if it logged an unexpected error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    log = PageLog()
    page.on("console", lambda message: log.messages.append((message.type, message.text)))
    page.on("pageerror", lambda error: log.messages.append(("pageerror", str(error))))
    page.log = log
    try:
        yield page
        assert not log.errors(), f"console errors: {log.errors()}"
    finally:
        context.close()


@pytest.fixture
def screenshot(page):
    """`screenshot(name)` saves the page as test-artifacts/studio/<name>.png."""

    def save(name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
