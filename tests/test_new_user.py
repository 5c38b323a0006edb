"""A new user's first `sightd run`: no model yet, so the worker waits while the console comes
up; a model recorded-for and trained from the Teach API, deployed, is served without a
restart."""

from __future__ import annotations

import contextlib
import os

import httpx
import pytest
from browser_support import browser, page  # noqa: F401
from conftest import color_frame, wait_for, write_color_dataset, write_video
from daemon_support import SightdRun

from sightd.engines.base import choose_engine

CSRF = {"X-Sightd-CSRF": "1"}


def worker_status(client: httpx.Client) -> dict:
    """The worker's last status as the console's first paint has it ({} before it is heard)."""
    with contextlib.suppress(httpx.TransportError):
        for component in client.get("/api/state").json()["components"]:
            if component["name"] == "infer":
                return component
    return {}


def teach_run(root, **train) -> SightdRun:
    """`sightd run` of a red camera, model.path at runs/latest (not trained yet), reload on."""
    video = write_video(root / "cam.avi", [color_frame("red", (120, 160))] * 20, fps=10)
    latest = root / "runs" / "latest" / "model.safetensors"
    # the default engine (auto: OpenVINO or ONNX Runtime where installed), as a new user has it
    model = {"path": str(latest), "device": "cpu", "reload": True}
    train = {"data_dir": str(root / "data"), "out_dir": str(root / "runs"), **train}
    return SightdRun(root, latest, video, model=model, train=train)


@pytest.mark.slow
def test_a_first_run_without_a_model_waits_for_one_taught_in_the_console(tmp_path, page):  # noqa: F811
    # given a data set but no model, and a camera; 2 epochs of 12 images a class keep it short
    write_color_dataset(tmp_path / "data", per_class=12)
    daemon = teach_run(tmp_path, epochs=2, min_steps=0, device="cpu")
    client = httpx.Client(base_url=daemon.url, headers=CSRF, timeout=10)
    try:
        # when it starts, it says the model is missing as a warning, not an error
        waiting = wait_for(
            lambda: (
                "waiting for a model" in (worker_status(client).get("reason") or "")
                and worker_status(client)
            ),
            120,
            "the worker to say it waits for a model",
            daemon.tail,
        )
        assert daemon.process.poll() is None, daemon.tail()
        assert "Warning: model.path: model file" in daemon.log()
        # then the worker says where it waits and how to get a model there
        latest = tmp_path / "runs" / "latest" / "model.safetensors"
        assert waiting["state"] == "starting"
        assert f"waiting for a model at {latest}: train one" in waiting["reason"]
        # and the Watch page shows it where the model card would be, with the way to Teach
        page.goto(daemon.url)
        card = page.locator("#model")
        wait_for(lambda: "waiting for a model" in card.text_content(), 30, "the waiting card")
        assert card.locator('a[href="/teach"]').count() == 1

        # when frames of the camera are recorded into a class, with no countdown
        record = {"camera": "cam0", "class": "red", "count": 3, "every_s": 0.1, "countdown_s": 0}
        assert client.post("/api/teach/record", json=record).status_code == 202, daemon.tail()
        recorded = wait_for(
            lambda: (
                (s := client.get("/api/teach/record").json())["state"] in ("done", "error") and s
            ),
            60,
            "the recording",
            daemon.tail,
        )
        assert (
            recorded["state"] == "done" and len(list((tmp_path / "data" / "red").iterdir())) == 15
        )
        # and a first model is trained from the Teach API and deployed
        assert client.post("/api/teach/train", json={}).status_code == 202, daemon.tail()
        state = wait_for(
            lambda: (
                (s := client.get("/api/teach/train").json())["state"] in ("done", "error") and s
            ),
            300,
            "the first training run",
            daemon.tail,
        )
        assert state["state"] == "done", state
        answer = client.post("/api/teach/deploy", json={"run": state["run"]}).json()
        assert os.readlink(tmp_path / "runs" / "latest") == state["run"], answer

        # then the worker loads it and labels flow, without a restart
        def labelled() -> dict | None:
            snapshot = client.get("/api/state").json()
            model, label = snapshot["model"], snapshot["labels"].get("cam0")
            served = model and model.get("digest") == answer["digest"]
            return snapshot if served and label else None

        snapshot = wait_for(labelled, 120, "labels from the deployed model", daemon.tail)
        assert snapshot["labels"]["cam0"]["label"] in ("blue", "green", "red", "unknown")
        assert worker_status(client)["state"] == "online"
        assert snapshot["model"]["engine"] == choose_engine("auto", "cpu")  # the default's
        assert snapshot["children"]["infer"]["restarts"] == 0, snapshot["children"]
        # and the Watch page's card now names the served model
        wait_for(lambda: answer["digest"] in card.text_content(), 30, "the model card")
    finally:
        client.close()
        daemon.kill()
