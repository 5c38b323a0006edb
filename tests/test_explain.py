"""Grad-CAM as a user meets it: the map points at what decided the class, `sightd explain`
writes an overlay per image, eval's grid of mistakes shows the maps, and the console's button
explains the newest frame of a camera publishing on the bus.

The test set is one where the evidence is known to be in one place: the colour of a patch
decides the class, and the patch sits in a random quadrant of the picture, with a white patch
that decides nothing in another quadrant. (Where the quadrant itself is the class, the evidence
is the patch's distance from the borders, which every cell of the seed's 99 px receptive field
sees on a 64 px input: Grad-CAM's peak was in the patch's quadrant for 14 of 40 images while the
model was right on all 40, so such a set cannot say whether a map is right.)
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import replace

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import free_port, wait_for

from sightd.checkpoint import ModelInfo, load_checkpoint, save_checkpoint
from sightd.cli import main

COLOURS = {
    "blue": (230, 60, 40),
    "cyan": (230, 220, 40),
    "green": (40, 210, 40),
    "red": (40, 40, 230),
}
CLASSES = sorted(COLOURS)
WHITE = (235, 235, 235)  # the distractor: brighter than any class colour, and decides nothing


def scene(name: str, quadrant: int, rng, height: int = 80, width: int = 100) -> np.ndarray:
    """A noisy frame with a patch of class `name`'s colour in `quadrant` of its centre square
    (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) and a white one in another."""
    frame = rng.integers(40, 140, (height, width, 3), dtype=np.uint8)
    side = min(height, width)
    top, left, half = (height - side) // 2, (width - side) // 2, side // 2
    patch = round(side * 0.175)

    def put(where: int, colour) -> None:
        y = top + (where // 2) * half + rng.integers(2, half - patch - 2)
        x = left + (where % 2) * half + rng.integers(2, half - patch - 2)
        frame[y : y + patch, x : x + patch] = colour

    put(quadrant, COLOURS[name])
    put((quadrant + rng.integers(1, 4)) % 4, WHITE)
    return frame


def peak_quadrant(heatmap: np.ndarray) -> int:
    y, x = np.unravel_index(int(heatmap.argmax()), heatmap.shape)
    return 2 * int(y >= heatmap.shape[0] / 2) + int(x >= heatmap.shape[1] / 2)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread: two on two shared cores wait on each other (test_eval_predict.py)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def patch_model(tmp_path_factory):
    """A 64 px `seed` model trained in a few seconds on 24 scenes a class; temperature 1.5,
    so that a confidence that skipped calibration would show."""
    import torch

    from sightd.model import create_model
    from sightd.preprocessing import preprocess

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    labels = [c for c in range(len(CLASSES)) for _ in range(24)]
    frames = [scene(CLASSES[c], int(rng.integers(4)), rng) for c in labels]
    batch, targets = preprocess(frames), torch.tensor(labels)
    model = create_model("seed", len(CLASSES))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(40):
        pick = torch.randperm(len(labels))[:32]
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(batch[pick]), targets[pick]).backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("patch_model") / "model.safetensors"
    info = ModelInfo("seed", CLASSES, 64, [0.5] * 3, [0.5] * 3, temperature=1.5)
    save_checkpoint(path, model.eval(), info)
    return path


def held_out(count: int = 40, seed: int = 5) -> list[tuple[str, int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        name, quadrant = CLASSES[int(rng.integers(4))], int(rng.integers(4))
        cases.append((name, quadrant, scene(name, quadrant, rng)))
    return cases


def test_the_heat_map_peaks_on_the_patch_that_decides_the_class(patch_model):
    from sightd.explain.gradcam import Explainer

    explainer = Explainer(patch_model)
    cases = held_out()

    results = [explainer.explain(frame) for _, _, frame in cases]

    right = sum(r.label == name for r, (name, _, _) in zip(results, cases, strict=True))
    on_patch = sum(
        peak_quadrant(r.heatmap) == quadrant
        for r, (_, quadrant, _) in zip(results, cases, strict=True)
    )
    assert right >= 36, f"the model is right on only {right} of 40"
    assert on_patch >= 36, f"the peak is on the deciding patch's quadrant for {on_patch} of 40"
    first = results[0]
    # drawn over what the network saw: the centre 80 x 80 square of the 80 x 100 frame
    assert first.heatmap.shape == (80, 80) and first.heatmap.dtype == np.float32
    assert first.overlay_bgr.shape == (80, 80, 3) and first.overlay_bgr.dtype == np.uint8
    assert first.heatmap.min() >= 0.0 and first.heatmap.max() <= 1.0


def test_the_confidence_is_the_calibrated_one_the_served_model_gives(patch_model):
    from sightd.classifier import Classifier
    from sightd.explain.gradcam import Explainer

    served = Classifier.load(patch_model, "cpu", precision="float32")  # folded, channels_last
    _, _, frame = held_out(1)[0]

    explained = Explainer(patch_model).explain(frame)
    prediction = served.predict([frame])[0]

    assert explained.label == prediction.label
    assert explained.confidence == pytest.approx(prediction.confidence, abs=1e-4)
    assert explained.scores == pytest.approx(prediction.scores, abs=1e-4)


def test_explain_writes_an_overlay_per_image_and_goes_on_past_a_missing_one(patch_model, tmp_path):
    shots, out = tmp_path / "shots", tmp_path / "out"
    (shots / "kitchen").mkdir(parents=True)
    rng = np.random.default_rng(3)
    cv2.imwrite(str(shots / "door.png"), scene("red", 0, rng))
    cv2.imwrite(str(shots / "kitchen" / "table.jpg"), scene("green", 3, rng, 480, 640))
    missing = tmp_path / "gone.png"

    args = ["explain", str(patch_model), str(shots), str(missing), "--out", str(out)]
    result = CliRunner().invoke(main, args)

    assert result.exit_code == 1, result.output  # one argument could not be explained
    assert result.stderr.splitlines() == [f"skipping {missing}: no such file or folder"]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{shots / 'door.png'}: red 0.")
    assert lines[1].startswith(f"{shots / 'kitchen' / 'table.jpg'}: green 0.")
    assert [line.rsplit(" -> ", 1)[1] for line in lines] == [
        str(out / "door.png"),
        str(out / "table.png"),
    ]
    assert sorted(p.name for p in out.iterdir()) == ["door.png", "table.png"]
    assert cv2.imread(str(out / "door.png")).shape == (80, 80, 3)  # the centre square
    assert cv2.imread(str(out / "table.png")).shape == (480, 480, 3)


def test_eval_draws_each_mistake_under_the_heat_map_of_its_predicted_class(
    patch_model, tmp_path, monkeypatch
):
    from sightd.explain import gradcam

    data = tmp_path / "mislabelled"  # the red and green scenes filed the wrong way round
    rng = np.random.default_rng(4)
    for folder, name in [("green", "red"), ("red", "green"), ("blue", "blue"), ("cyan", "cyan")]:
        (data / folder).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(data / folder / f"{i}.png"), scene(name, i % 4, rng))
    with_maps, plain = tmp_path / "with_maps.png", tmp_path / "plain.png"
    command = ["eval", str(patch_model), str(data), "--split", "all", "--misclassified"]

    shown = CliRunner().invoke(main, [*command, str(with_maps)])
    monkeypatch.setattr(gradcam, "available", lambda: False)  # as without the explain extra
    without = CliRunner().invoke(main, [*command, str(plain)])

    assert shown.exit_code == without.exit_code == 0, shown.output + without.output
    assert "each with the heat map of its predicted class" in shown.output
    assert "without heat maps (Grad-CAM needs the grad-cam package" in without.output
    grid, bare = cv2.imread(str(with_maps)), cv2.imread(str(plain))
    assert grid.shape == bare.shape  # the same 6 tiles with the same titles ...
    assert np.abs(grid.astype(int) - bare).mean() > 5  # ... under the heat maps' colours


# --- the console's button: POST /api/explain/{camera} -------------------------------------

FRAME = (240, 320)  # the camera's frames; its roi is the right half, whose centre is 160 x 160


def camera_frame(rng) -> np.ndarray:
    """Green's patch top-left in the roi; a red patch, outside the roi, must not count."""
    frame = rng.integers(40, 140, (*FRAME, 3), dtype=np.uint8)
    frame[40:200, 160:320] = scene("green", 0, rng, 160, 160)
    frame[100:130, 40:70] = COLOURS["red"]
    return frame


@contextlib.contextmanager
def publishing(config, camera: str = "cam0"):
    """A camera on the bus: frames of camera_frame at 20 fps until the block ends."""
    from sightd.protocol import pack_frame
    from sightd.transport import bind_publisher

    sock = bind_publisher(config.camera_endpoint(camera), config.transport)
    stop, sent = threading.Event(), [0]

    def publish() -> None:
        rng = np.random.default_rng(6)
        while not stop.is_set():
            sock.send_multipart(pack_frame(camera, sent[0], camera_frame(rng), time.time()))
            sent[0] += 1
            stop.wait(0.05)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        wait_for(lambda: sent[0] > 0, what="the first frame sent")
        yield sent
    finally:
        stop.set()
        thread.join(5)
        sock.close()


@pytest.fixture
def console(config_file, patch_model, tmp_path):
    """(config, a TestClient of an app serving only the explain routes); cam1 never publishes."""
    import shutil

    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from sightd.config import load_config
    from sightd.web.explain_routes import explain_routes

    model = tmp_path / "served" / "model.safetensors"
    model.parent.mkdir()
    shutil.copy(patch_model, model)
    cameras = [
        {"name": "cam0", "source": "synthetic", "roi": [0.5, 0.0, 0.5, 1.0]},
        {"name": "cam1", "source": "synthetic", "endpoint": f"tcp://127.0.0.1:{free_port()}"},
    ]
    config = load_config(config_file(cameras=cameras, model={"path": str(model)}))
    with TestClient(Starlette(routes=explain_routes(config))) as client:
        yield config, client


def test_the_button_explains_the_newest_frame_of_a_publishing_camera(console):
    config, client = console

    with publishing(config) as sent:
        response = client.post("/api/explain/cam0")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-label"] == "green"  # the roi's patch, not the red one outside
    assert 0.25 < float(response.headers["x-confidence"]) <= 1.0
    assert 0 <= int(response.headers["x-seq"]) < sent[0]
    overlay = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == (160, 160, 3)  # the roi's centre square at full resolution


def test_the_button_takes_a_retrained_model_without_a_restart(console):
    config, client = console
    with publishing(config):
        first = client.post("/api/explain/cam0")
        checkpoint = load_checkpoint(config.model.path)
        renamed = replace(checkpoint.info, classes=[f"{name}-v2" for name in CLASSES])
        save_checkpoint(config.model.path, checkpoint.model, renamed)  # what deploy does
        second = client.post("/api/explain/cam0")

    assert (first.headers["x-label"], second.headers["x-label"]) == ("green", "green-v2")


def test_the_button_answers_json_errors_for_an_unknown_or_silent_camera(console, monkeypatch):
    from sightd.web import explain_routes

    _, client = console
    monkeypatch.setattr(explain_routes, "FRAME_WAIT_S", 0.3)

    unknown = client.post("/api/explain/garage")
    silent = client.post("/api/explain/cam1")
    read = client.get("/api/explain/cam0")

    assert unknown.status_code == 404 and "no camera named 'garage'" in unknown.json()["error"]
    assert silent.status_code == 503
    assert silent.json() == {"error": "no frame from camera cam1 within 0.3 s"}
    assert read.status_code == 405  # POST only, so the console's CSRF defence covers it
