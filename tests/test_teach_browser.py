"""The Teach page in a real browser against a real `sightd run`: record from the live camera,
train with the progress streamed to the page, deploy, and see the worker serve the new model."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from browser_support import browser, page  # noqa: F401
from conftest import wait_for
from pipeline_support import running_processes
from teach_support import save_screenshot, start_daemon, teach_setup

# Every text the training state shows, kept as it changes (the run is too quick to sample).
WATCH_TRAIN_STATE = """() => {
  window.trainStates = [];
  const state = document.getElementById("train-state");
  new MutationObserver(() => window.trainStates.push(state.textContent))
    .observe(state, { childList: true, characterData: true, subtree: true });
}"""


def until(page, script: str, timeout: float = 30.0):  # noqa: F811
    """Wait for a JavaScript expression to be true (page.evaluate: the page's CSP forbids the
    eval that Playwright's own wait_for_function uses)."""
    return wait_for(lambda: page.evaluate(script), timeout, script)


@pytest.mark.slow
def test_record_train_and_deploy_from_the_page(tmp_path, color_checkpoint, page):  # noqa: F811
    config = teach_setup(tmp_path, color_checkpoint)
    with running_processes(tmp_path) as processes:
        url = start_daemon(processes, config)
        problems = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status} {r.url}"))
        page.goto(f"{url}/teach")

        # given the page: the live image of cam0, and the data set's classes with thumbnails
        until(page, "document.getElementById('live').naturalWidth > 0")
        red = page.locator('article.class[data-name="red"]')
        assert red.locator(".count").inner_text() == "20 images"
        until(page, "[...document.querySelectorAll('.thumb img')].some(i => i.naturalWidth > 0)")

        # when three images of red are recorded after a countdown
        page.select_option("#record-class", "red")
        page.fill("input[name=count]", "3")
        page.fill("input[name=every_s]", "0.1")
        page.fill("input[name=countdown_s]", "2")
        page.click("#record")
        # then the countdown shows over the live image, and the class has three more
        page.wait_for_selector('#overlay[data-state="countdown"]')
        page.wait_for_selector('#record-state[data-state="done"]', timeout=30_000)
        assert page.inner_text("#record-state") == "recorded 3 images of red"
        until(
            page,
            "document.querySelector('article[data-name=red] .count').textContent == '23 images'",
        )

        # when a short run is trained from the page
        page.evaluate(WATCH_TRAIN_STATE)
        asked: list[str] = []
        page.on("request", lambda r: "/api/teach/train" in r.url and asked.append(r.method))
        page.fill("#epochs", "2")
        page.click("#train")
        # then its progress streams in as it goes (epoch by epoch, the curve drawn), asked for
        # once: the click's POST; the stream opened with the page
        page.wait_for_selector('#train-state[data-state="done"]', timeout=90_000)
        shown = page.evaluate("window.trainStates")
        assert any(re.search(r"epoch [12]/2 · train loss \d", text) for text in shown), shown
        assert page.evaluate("document.getElementById('curve').dataset.epochs") == "2"
        assert asked == ["POST"], asked
        # and it finishes with its accuracy, confusion matrix and calibration shown
        assert re.fullmatch(r"[01]\.\d{3}", page.inner_text("#test-accuracy"))
        until(page, "document.getElementById('confusion').naturalWidth > 0")
        until(page, "document.getElementById('calibration').naturalWidth > 0")
        run = re.search(r"run (\S+)$", page.inner_text("#train-state")).group(1)

        # when it is deployed
        page.click("#deploy")
        # then the worker swaps it in, and the card names the run it serves
        page.wait_for_selector('#deploy-state[data-state="served"]', timeout=60_000)
        assert run in page.inner_text("#served")
        assert page.locator(f'#runs tr[data-run="{run}"] button').inner_text() == "served"
        assert not problems, problems
        if os.environ.get("SIGHTD_SCREENSHOT_TEACH"):  # the README's picture
            save_screenshot(
                page.locator("#train-section"), Path(os.environ["SIGHTD_SCREENSHOT_TEACH"])
            )
