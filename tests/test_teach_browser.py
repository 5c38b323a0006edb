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
        # (the worker makes its engine's export of the new model first: seconds, or a minute
        # on a loaded machine; the page waits 180 s)
        page.wait_for_selector('#deploy-state[data-state="served"]', timeout=200_000)
        assert run in page.inner_text("#served")
        assert page.locator(f'#runs tr[data-run="{run}"] button').inner_text() == "served"
        assert not problems, problems
        served = page.get_attribute("#served", "data-digest")

        # when a run whose weights are broken is deployed from the runs table
        broken_run(tmp_path / "runs" / "broken", color_checkpoint)
        page.reload()
        page.locator('#runs tr[data-run="broken"] button').click()
        # then the page says the worker refused it, and why; the good run is still served
        page.wait_for_selector('#deploy-state[data-state="refused"]', timeout=200_000)
        said = page.inner_text("#deploy-state")
        assert said.startswith("the worker refused broken") and "non-finite" in said, said
        assert page.get_attribute("#served", "data-digest") == served
        if os.environ.get("SIGHTD_SCREENSHOT_TEACH"):  # the README's picture
            save_screenshot(
                page.locator("#train-section"), Path(os.environ["SIGHTD_SCREENSHOT_TEACH"])
            )


def broken_run(folder: Path, checkpoint: Path) -> None:
    """A run folder whose model loads but whose weights are NaN: the worker's hot reload
    tests each new file with a forward pass, and refuses this one."""
    import torch

    from sightd.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(checkpoint)
    with torch.no_grad():
        for parameter in loaded.model.parameters():
            parameter.fill_(float("nan"))
    folder.mkdir(parents=True)
    save_checkpoint(folder / "model.safetensors", loaded.model, loaded.info)
