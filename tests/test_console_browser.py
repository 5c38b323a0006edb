"""The console in a real browser (headless chromium): what a person watching it would see.

The slow test runs `sightd run` on a video of solid colours with the small colour model and
reads the page as a person would: the picture moves, the label names the colour on screen, an
event appears with its snapshot, every component is online, and the Grad-CAM button lays a heat
map over the live image. With SIGHTD_SCREENSHOT=PATH it
also writes a screenshot of the console there (docs/console.png is one).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
import zmq
from browser_support import browser, page  # noqa: F401
from conftest import wait_for
from daemon_support import COLOURS, SightdRun, colour_video

from sightd.config import load_config
from sightd.process import Runtime
from sightd.protocol import pack_message, status_body
from sightd.transport import bind_publisher
from sightd.web.server import run_http

# The colour the <img> shows now: its centre drawn on a canvas, the strongest channel.
SCENE_JS = """() => {
  const img = document.querySelector("img.live");
  if (!img || !img.naturalWidth) return null;
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const context = canvas.getContext("2d");
  context.drawImage(img, 0, 0);
  const [r, g, b] = context.getImageData(canvas.width >> 1, canvas.height >> 1, 1, 1).data;
  const scene = r > g && r > b ? "red" : g > b ? "green" : "blue";
  const label = document.querySelector(".overlay .label");
  return { scene, label: label ? label.textContent : null, width: img.naturalWidth };
}"""


# The Grad-CAM overlay once its PNG is decoded and shown: its size and where it lies.
HEAT_JS = """h => h.complete && h.naturalWidth && getComputedStyle(h).display !== "none"
  ? { width: h.naturalWidth, height: h.naturalHeight,
      over: [h.offsetLeft, h.offsetTop, h.offsetWidth, h.offsetHeight] } : null"""
BOX_JS = "i => [i.offsetLeft, i.offsetTop, i.offsetWidth, i.offsetHeight]"


def Daemon(root: Path, checkpoint: Path) -> SightdRun:
    """`sightd run` on a looping video of blue, green and red, 2 s each, snapshots on."""
    video = colour_video(root / "colours.avi", (240, 320), fps=5)
    snapshots = {"snapshots": {"dir": str(root / "snapshots"), "keep": 20}}
    return SightdRun(root, checkpoint, video, events=snapshots)


@pytest.mark.slow
def test_a_person_watching_the_console_sees_the_live_pipeline(tmp_path, color_checkpoint, page):  # noqa: F811
    daemon = Daemon(tmp_path, color_checkpoint)
    try:
        # given `sightd run`, which logs where its console is, and is healthy
        wait_for(daemon.healthy, 90, "/healthz 200", daemon.tail)
        assert daemon.log().count(f"console: {daemon.url}") == 1, daemon.tail()
        # when a person opens it
        page.goto(daemon.url)

        # then the live image plays: it shows each colour of the video in turn
        def scene() -> dict | None:
            return page.evaluate(SCENE_JS)

        first = wait_for(scene, 30, "a frame in the live image")
        assert first["width"] == 320
        seen: set[str] = set()
        wait_for(lambda: seen.add(scene()["scene"]) or len(seen) == 3, 30, f"3 colours ({seen})")

        # and the label over it names the colour on screen, for every colour
        agreed: set[str] = set()

        def agree() -> bool:
            now = scene()
            if now["label"] == now["scene"]:
                agreed.add(now["scene"])
            return agreed == set(COLOURS)

        wait_for(agree, 45, f"the label to match the scene for each colour ({agreed})")
        bars = page.locator(".scores .name").all_text_contents()
        assert bars == list(COLOURS)

        # and the timeline has an event with its snapshot shown
        thumb = page.locator("#events tbody tr img.thumb").first
        thumb.wait_for()
        wait_for(
            lambda: thumb.evaluate("t => t.complete && t.naturalWidth") == 320, 20, "a snapshot"
        )
        row = page.locator("#events tbody tr").first.text_content()
        assert "cam0" in row and "→" in row and any(c in row for c in COLOURS)

        # and every component is online, the model card is filled in
        def states() -> dict[str, str]:
            rows = page.locator("#components tbody tr").all()
            cells = [r.locator("td").all_text_contents() for r in rows]
            return {c[0]: c[1] for c in cells}

        wanted = {"capture:cam0", "infer", "supervisor", "http"}
        wait_for(lambda: all(states().get(n) == "online" for n in wanted), 20, f"{states()}")
        card = page.locator("#model").text_content()
        assert "seed" in card and "100%" in card and "blue, green, red" in card
        assert "served by" in card  # the worker's engine and device

        # when the person asks why, with the camera's Grad-CAM button
        camera = page.locator('article.camera[data-camera="cam0"]')
        camera.locator(".actions button").click()
        # then the heat map of the current frame is drawn over the live image, with its label
        heat = camera.locator("img.heat")
        wait_for(lambda: heat.evaluate(HEAT_JS), 60, "the Grad-CAM overlay", daemon.tail)
        drawn = heat.evaluate(HEAT_JS)
        assert (drawn["width"], drawn["height"]) == (240, 240)  # the 320x240 frame's centre square
        assert drawn["over"] == camera.locator("img.live").evaluate(BOX_JS)
        note = camera.locator(".actions .quiet").text_content()
        assert re.fullmatch(r"Grad-CAM: (blue|green|red) \d+% \(\d+ ms\); click it to hide", note)
        # and a click on the map hides it again
        heat.click()
        assert heat.is_hidden()

        if os.environ.get("SIGHTD_SCREENSHOT"):
            write_screenshot(page, Path(os.environ["SIGHTD_SCREENSHOT"]))
    finally:
        daemon.kill()


def write_screenshot(page, path: Path) -> None:  # noqa: F811
    """The console 1000 px wide, down to the timeline's first rows, as a small PNG (a palette
    of 128 colours; the camera's sensor noise is most of what is left)."""
    page.set_viewport_size({"width": 1000, "height": 900})
    page.wait_for_timeout(1000)  # a few more events and the new layout painted
    raw = page.screenshot(full_page=False)
    from PIL import Image  # matplotlib's dependency; only this helper needs it

    image = Image.open(io.BytesIO(raw)).convert("RGB")
    small = image.quantize(128, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    small.save(path, optimize=True)


def test_nothing_from_the_bus_becomes_html(config_file, page):  # noqa: F811
    # given the console, and a worker whose messages carry markup in every text
    config = load_config(config_file())
    pub = bind_publisher(config.transport.labels, config.transport)
    runtime = Runtime("http")
    server = threading.Thread(target=run_http, args=(config, runtime), daemon=True)
    server.start()
    hostile = '<img src=x onerror="window.pwned=1">'
    try:
        url = f"http://{config.http.listen}/"
        wait_for(lambda: _answers(url), 20, "the server")
        page.goto(url)
        page.locator("article.camera").wait_for()

        def published() -> bool:
            now = time.time()
            scores = {hostile: 0.9, "<b>bold</b>": 0.1}
            body = {"camera": "cam0", "seq": 1, "captured_at": now, "inferred_at": now}
            body |= {"label": hostile, "confidence": 0.9, "scores": scores}
            pub.send_multipart(pack_message("label", "cam0", body), zmq.NOBLOCK)
            event = {"camera": "cam0", "label": hostile, "previous": "<i>x</i>", "confidence": 0.9}
            event |= {"at": now, "snapshot": '"><script>window.pwned=2</script>.jpg'}
            pub.send_multipart(pack_message("event", "cam0", event), zmq.NOBLOCK)
            reason = "<script>window.pwned=3</script>"  # names are checked: the reason is free text
            status = status_body("subscriber:evil", "reconnecting", reason=reason)
            pub.send_multipart(pack_message("status", "subscriber:evil", status), zmq.NOBLOCK)
            return page.locator(".overlay .label").text_content() == hostile

        # when its messages reach the page (again until the slow joiner has joined)
        wait_for(published, 20, "the hostile label on the page")
        page.locator("#events tbody tr").first.wait_for()
        evil = page.locator('#components tr[data-component="subscriber:evil"]')
        evil.wait_for()
        # then each shows as text: no element was made of it, no script of it ran
        assert page.evaluate("window.pwned") is None
        assert page.locator("img[src=x], i, script:not([src])").count() == 0
        assert page.locator("b").count() == 1  # the page's own: the stable label's
        assert "<script>window.pwned=3</script>" in evil.text_content()
        assert set(page.locator(".scores .name").all_text_contents()) == {hostile, "<b>bold</b>"}
        assert hostile in page.locator("#events tbody tr").first.text_content()
    finally:
        runtime.stop.set()
        server.join(10)
        pub.close()


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(f"{url}healthz", timeout=2).status_code in (200, 503)
    return False
