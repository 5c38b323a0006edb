"""The Teach page's API: the data set (names checked, nothing written outside it), recording from
a live camera, training as a subprocess, and deploy swapping the worker's model.

The first tests call the routes in-process (starlette's TestClient); the last ones go through a
real `sightd run` (its HTTP server, its camera on the bus, its worker's hot reload).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import shutil
import threading
import time

import cv2
import httpx
import numpy as np
import pytest
from conftest import wait_for, write_color_dataset
from pipeline_support import collect, running_processes
from starlette.applications import Starlette
from starlette.testclient import TestClient
from teach_support import CSRF, FRAME, ROI, camera_frame, start_daemon, teach_setup

from sightd.config import SightdConfig, load_config
from sightd.web.teach import teach_routes
from sightd.web.teach_data import MAX_PAGE, THUMB_SIDE


def teach_client(tmp_path, **sections) -> TestClient:
    train = {"data_dir": str(tmp_path / "data"), "out_dir": str(tmp_path / "runs")}
    config = SightdConfig.model_validate({"train": train, **sections})
    return TestClient(Starlette(routes=teach_routes(config)), headers=CSRF)


def test_classes_have_counts_pages_and_thumbnails(tmp_path):
    # given a data set of three colours, 12 images each, one in a sub-folder
    write_color_dataset(tmp_path / "data", per_class=12)
    (tmp_path / "data" / "red" / "more").mkdir()
    shutil.move(tmp_path / "data" / "red" / "011.png", tmp_path / "data" / "red" / "more")
    client = teach_client(tmp_path)
    # then each class is listed with the images training would take
    classes = client.get("/api/teach/classes").json()["classes"]
    assert [(c["name"], c["count"]) for c in classes] == [("blue", 12), ("green", 12), ("red", 12)]
    # and its file names come a bounded page at a time
    page = client.get("/api/teach/classes/blue/samples?offset=10&limit=5").json()
    assert page == {"class": "blue", "total": 12, "offset": 10, "files": ["010.png", "011.png"]}
    assert client.get(f"/api/teach/classes/blue/samples?limit={MAX_PAGE + 1}").status_code == 400
    # and a thumbnail is a small JPEG of the image, answered 304 when the browser has it
    thumb = client.get("/api/teach/thumb/green/000.png")
    assert thumb.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(thumb.content, np.uint8), cv2.IMREAD_COLOR)
    assert max(image.shape[:2]) <= THUMB_SIDE and image[..., 1].mean() > 150
    again = client.get(
        "/api/teach/thumb/green/000.png", headers={"If-None-Match": thumb.headers["etag"]}
    )
    assert again.status_code == 304


def test_a_class_is_added_a_sample_deleted_and_only_an_empty_class_removed(tmp_path):
    write_color_dataset(tmp_path / "data", per_class=6)
    client = teach_client(tmp_path)
    # a new class is a new folder, once
    assert client.post("/api/teach/classes", json={"name": "thumbs_up"}).status_code == 200
    assert (tmp_path / "data" / "thumbs_up").is_dir()
    assert client.post("/api/teach/classes", json={"name": "thumbs_up"}).status_code == 409
    # a bad sample goes, and the count says so
    answer = client.post("/api/teach/classes/red/samples/003.png/delete").json()
    assert answer["count"] == 5 and not (tmp_path / "data" / "red" / "003.png").exists()
    assert client.delete("/api/teach/classes/red/samples/004.png").status_code == 200
    assert client.post("/api/teach/classes/red/samples/003.png/delete").status_code == 404
    # a class with images stays; an empty one can be removed
    assert client.post("/api/teach/classes/red/delete").status_code == 409
    assert client.post("/api/teach/classes/thumbs_up/delete").status_code == 200
    assert not (tmp_path / "data" / "thumbs_up").exists()


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b", "..", "-x", "x\n", "x" * 65, "", 7])
def test_a_class_name_that_is_not_a_plain_folder_name_is_refused(tmp_path, name):
    (tmp_path / "data").mkdir()
    client = teach_client(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for body, url in (
        ({"name": name}, "/api/teach/classes"),
        ({"camera": "cam0", "class": name, "countdown_s": 0}, "/api/teach/record"),
    ):
        response = client.post(url, json=body)
        assert response.status_code == 400, (url, response.text)
        assert "class name" in response.json()["error"]
    # and nothing was created, inside the data set or out of it
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_paths_out_of_the_data_set_are_refused(tmp_path):
    write_color_dataset(tmp_path / "data", per_class=5)
    secret = tmp_path / "secret.png"
    shutil.copy(tmp_path / "data" / "red" / "000.png", secret)
    os.symlink(secret, tmp_path / "data" / "red" / "link.png")  # a file leading out
    os.symlink(tmp_path, tmp_path / "data" / "out")  # a class folder leading out
    client = teach_client(tmp_path)
    refused = [
        "/api/teach/thumb/red/link.png",
        "/api/teach/thumb/out/secret.png",
        "/api/teach/thumb/red/..%2F..%2Fsecret.png",
        "/api/teach/thumb/red/.hidden.png",
        "/api/teach/thumb/red/000.txt",
        "/api/teach/thumb/../secret.png",
        "/api/teach/classes/out/samples",
        "/api/teach/runs/..%2Fdata/metrics.json",
    ]
    for url in refused:
        assert client.get(url).status_code in (400, 404), url
    assert client.post("/api/teach/classes/red/samples/link.png/delete").status_code == 404
    assert secret.exists()


def test_training_arguments_are_checked_and_one_run_goes_at_a_time(tmp_path):
    # given a data set of a single class, which the trainer refuses after starting
    write_color_dataset(tmp_path / "data", per_class=5)
    for name in ("green", "red"):
        shutil.rmtree(tmp_path / "data" / name)
    client = teach_client(tmp_path)
    assert client.post("/api/teach/train", json={"epochs": 0}).status_code == 400
    assert client.post("/api/teach/train", json={"arch": "../x"}).status_code == 400
    # when a run starts, a second is refused while it goes
    assert client.post("/api/teach/train", json={"epochs": 1}).status_code == 202
    assert client.post("/api/teach/train", json={}).status_code == 409
    # then the trainer's own one-line error is the page's reason
    state = wait_for(
        lambda: (
            (s := client.get("/api/teach/train").json())["state"] not in ("starting", "training")
            and s
        ),
        240,  # a trainer process at nice 10 importing torch, on a loaded machine
        "the training run to end",
    )
    assert state["state"] == "error" and "one class folder" in state["reason"], state
    # and a run can be stopped
    assert client.post("/api/teach/train", json={}).status_code == 202
    assert client.post("/api/teach/train/stop").status_code == 200
    wait_for(lambda: client.get("/api/teach/train").json()["state"] == "stopped", 30, "stopped")


def test_the_training_state_streams_each_change_without_being_asked(tmp_path):
    from sightd.web.teach_data import DataSet
    from sightd.web.teach_train import Trainer, progress_events

    # given the page's stream of an idle trainer, and a data set the trainer refuses
    write_color_dataset(tmp_path / "data", per_class=5)
    for name in ("green", "red"):
        shutil.rmtree(tmp_path / "data" / name)
    config = SightdConfig.model_validate({"train": {"data_dir": str(tmp_path / "data")}})
    trainer = Trainer(config, DataSet(config.train.data_dir))

    stopping = threading.Event()

    async def follow() -> list[dict]:
        seen: list[dict] = []
        stream = progress_events(trainer, stopping)
        assert (await asyncio.wait_for(anext(stream), 5)).startswith("retry:")
        async for chunk in stream:
            if chunk.startswith("event: train\n"):
                seen.append(json.loads(chunk.split("data: ", 1)[1]))
                if len(seen) == 1:  # when a run starts after the page opened
                    trainer.start({"epochs": 1})
                elif seen[-1]["state"] not in ("starting", "training"):
                    break
        stopping.set()  # when the server stops, the stream ends
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(stream), 5)
        return seen

    # (in a thread: Playwright's sync API, when a browser test ran first, holds this one's loop)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # (240 s: the nice-10 trainer importing torch on a loaded machine, as above)
        seen = pool.submit(asyncio.run, asyncio.wait_for(follow(), 240)).result()
    # then the page heard idle, the start, and the end with the trainer's reason, unasked
    states = [s["state"] for s in seen]
    assert states[0] == "idle" and states[1] == "starting" and states[-1] == "error", states
    assert "one class folder" in seen[-1]["reason"]


def test_deploy_copies_a_run_to_model_path_and_never_overwrites_a_run(tmp_path, color_checkpoint):
    run = tmp_path / "runs" / "20260101-120000"
    run.mkdir(parents=True)
    shutil.copy(color_checkpoint, run / "model.safetensors")
    served = tmp_path / "models" / "current.safetensors"
    client = teach_client(tmp_path, model={"path": str(served), "reload": False})
    # deploy copies the run's file to model.path, and says hot reload is off
    answer = client.post("/api/teach/deploy", json={"run": run.name}).json()
    assert served.read_bytes() == (run / "model.safetensors").read_bytes()
    assert "model.reload is off" in answer["note"]
    card = client.get("/api/teach/served").json()
    assert card["digest"] == answer["digest"] and card["classes"] == ["blue", "green", "red"]
    assert client.get("/api/teach/runs").json()["runs"][0]["served"] is True
    # a model.path inside a run folder is refused: deploying would change that run
    inside = teach_client(tmp_path, model={"path": str(run / "model.safetensors")})
    assert inside.post("/api/teach/deploy", json={"run": run.name}).status_code == 409
    assert client.post("/api/teach/deploy", json={"run": "nope"}).status_code == 404


def test_a_recording_keeps_the_camera_s_own_jpeg_and_names_a_silent_camera(
    tmp_path, config_file, monkeypatch
):
    import sightd.trainer.collect
    from sightd.protocol import pack_frame
    from sightd.transport import bind_publisher

    # given a camera with no roi whose JPEG frames a test publishes on its endpoint
    monkeypatch.setattr(sightd.trainer.collect, "GIVE_UP_AFTER", 1.5)
    cameras = [{"name": "door", "source": "synthetic"}]
    config = load_config(config_file(cameras=cameras, train={"data_dir": str(tmp_path / "data")}))
    client = TestClient(Starlette(routes=teach_routes(config)), headers=CSRF)
    pub = bind_publisher(config.camera_endpoint("door"), config.transport)
    try:
        body = {"camera": "door", "class": "open", "count": 2, "every_s": 0.1, "countdown_s": 0}
        assert client.post("/api/teach/record", json=body).status_code == 202
        assert client.post("/api/teach/record", json=body).status_code == 409
        sent = []

        def recorded():
            parts = pack_frame("door", len(sent), camera_frame(), time.time())
            pub.send_multipart(parts)
            sent.append(parts[2])
            return client.get("/api/teach/record").json()["state"] == "done"

        wait_for(recorded, 20, "two frames recorded")
        # then each image is a frame's own bytes, not a re-encoding
        files = sorted((tmp_path / "data" / "open").iterdir())
        assert [p.name for p in files] == ["0000.jpg", "0001.jpg"]
        assert all(p.read_bytes() in sent for p in files)
        # and a camera that sends nothing is an error that names it
        assert client.post("/api/teach/record", json=body).status_code == 202
        state = wait_for(
            lambda: (s := client.get("/api/teach/record").json())["state"] == "error" and s,
            20,
            "the recording to give up",
        )
        assert "no frame from camera door" in state["reason"]
        # and a recording stopped in its countdown keeps nothing
        assert client.post("/api/teach/record", json={**body, "countdown_s": 10}).status_code == 202
        assert client.post("/api/teach/record/stop").json()["state"] == "stopped"
        assert len(list((tmp_path / "data" / "open").iterdir())) == 2
    finally:
        pub.close()


# ---- through a real `sightd run` ---------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, color_checkpoint):
    root = tmp_path_factory.mktemp("teach")
    config = teach_setup(root, color_checkpoint)
    with running_processes(root) as processes:
        url = start_daemon(processes, config)
        with httpx.Client(base_url=url, headers=CSRF, timeout=10) as client:
            yield root, config, client, processes


@pytest.mark.slow
def test_recording_adds_jpegs_of_the_camera_roi_to_the_data_set(daemon):
    root, _, client, processes = daemon
    before = sorted((root / "data" / "red").iterdir())
    # when five frames of cam0 are recorded into red, with no countdown
    body = {"camera": "cam0", "class": "red", "count": 5, "every_s": 0.1, "countdown_s": 0}
    assert client.post("/api/teach/record", json=body).status_code == 202, processes.logs()
    state = wait_for(
        lambda: (s := client.get("/api/teach/record").json())["state"] in ("done", "error") and s,
        30,
        "the recording to end",
        processes.logs,
    )
    # then the class has five more images: JPEGs of the camera's roi, which is red
    assert state["state"] == "done" and state["written"] == 5, state
    new = sorted(set((root / "data" / "red").iterdir()) - set(before))
    assert [p.suffix for p in new] == [".jpg"] * 5
    for path in new:
        image = cv2.imread(str(path))
        assert image.shape[:2] == (FRAME[0], int(FRAME[1] * ROI[2]))
        assert image[..., 2].mean() > 150 and image[..., 0].mean() < 100  # red, no blue half
    counts = {c["name"]: c["count"] for c in client.get("/api/teach/classes").json()["classes"]}
    assert counts["red"] == 25
    # and the server's CSRF check guards these routes too: a cross-site POST changes nothing
    url = f"{client.base_url}/api/teach/classes"
    assert httpx.post(url, json={"name": "forged"}).status_code == 403
    evil = {**CSRF, "Origin": "http://evil.example"}
    assert httpx.post(url, json={"name": "forged"}, headers=evil).status_code == 403
    assert not (root / "data" / "forged").exists()


@pytest.mark.slow
def test_a_run_trained_from_the_api_is_deployed_and_served_by_the_worker(daemon):
    from sightd.checkpoint import load_checkpoint

    root, config, client, processes = daemon
    statuses = collect("status", config)
    streamed = follow_training(client)
    # when a short run is trained
    assert client.post("/api/teach/train", json={"epochs": 2}).status_code == 202
    state = wait_for(
        lambda: (s := client.get("/api/teach/train").json())["state"] in ("done", "error") and s,
        90,
        "the training run",
        processes.logs,
    )
    assert state["state"] == "done", state
    # then the page has its curve, accuracy, calibration and plots; latest has not moved
    assert [e["epoch"] for e in state["epochs"]] == [1, 2]
    assert 0 <= state["result"]["test_accuracy"] <= 1
    assert "test_ece_after" in state["result"]["calibration"]
    for name in ("confusion_matrix.png", "calibration.png"):
        plot = client.get(f"/api/teach/runs/{state['run']}/{name}")
        assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
    assert os.readlink(root / "runs" / "latest") == "first"
    # and the stream a page follows told each epoch as it came, then the same result
    wait_for(lambda: streamed and streamed[-1]["state"] == "done", 30, "the streamed end")
    epochs = [len(s.get("epochs", [])) for s in streamed if s["state"] == "training"]
    assert epochs and epochs == sorted(epochs) and max(epochs) >= 1, streamed
    assert streamed[-1]["result"] == state["result"]
    # when it is deployed
    answer = client.post("/api/teach/deploy", json={"run": state["run"]}).json()
    digest = load_checkpoint(root / "runs" / state["run"] / "model.safetensors").digest
    assert answer["digest"] == digest and answer["reload"] is True
    assert os.readlink(root / "runs" / "latest") == state["run"]
    # then the worker swaps it in: its status names the new model
    statuses.wait_for(
        lambda m: m.get("component") == "infer" and m.get("model", {}).get("digest") == digest,
        30,
    )
    assert client.get("/api/teach/served").json()["run"] == state["run"]


def follow_training(client: httpx.Client) -> list[dict]:
    """The states /api/teach/train/stream sends, appended as they come by a thread that reads
    the stream as a page's EventSource does (it ends when the daemon stops)."""
    seen: list[dict] = []

    def read() -> None:
        url = f"{client.base_url}/api/teach/train/stream"
        timeout = httpx.Timeout(10, read=None)
        # (the daemon stops at the module's end, in the middle of the stream)
        with (
            contextlib.suppress(httpx.TransportError),
            httpx.stream("GET", url, timeout=timeout) as response,
        ):
            for line in response.iter_lines():
                if line.startswith("data: "):
                    seen.append(json.loads(line.removeprefix("data: ")))

    threading.Thread(target=read, daemon=True).start()
    wait_for(lambda: seen, 20, "the training stream's first state")
    return seen
