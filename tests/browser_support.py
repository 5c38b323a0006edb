"""A real browser for the console's tests: Debian's chromium, headless, driven by Playwright.

Playwright never downloads a browser here: it is pointed at the system's chromium
(`CHROMIUM`, default /usr/bin/chromium, which .ci/run installs with apt-get).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


_shared: dict = {"users": 0}  # one chromium for every module that imports the fixtures


@pytest.fixture(scope="session")
def browser() -> Iterator:
    """One headless chromium for the session; each test takes a page of its own.

    Each test module imports this fixture, so pytest makes one per module; Playwright's sync
    API allows only one instance per thread, so they share the one started first.
    """
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no chromium at {CHROMIUM}: apt-get install chromium (or set CHROMIUM)")
    if _shared["users"] == 0:
        _shared["playwright"] = sync_playwright().start()
        _shared["browser"] = _shared["playwright"].chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
    _shared["users"] += 1
    try:
        yield _shared["browser"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            _shared.pop("browser").close()
            _shared.pop("playwright").stop()


@pytest.fixture
def page(browser) -> Iterator:
    """A fresh page (its own cookies), closed after the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)  # a loaded 2-core machine is slow to paint
    yield page
    context.close()
