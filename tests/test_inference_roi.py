"""A camera's roi in the worker: only the roi's pixels reach the classifier, decoded large
enough to cover the model's input, and the labels describe the roi alone."""

import time

import numpy as np
import pytest
from conftest import COLORS, color_frame
from pipeline_support import collect, running_processes

from sightd.config import load_config
from sightd.protocol import pack_frame, unpack_frame
from sightd.publishers.inference import model_input
from sightd.transport import bind_publisher


@pytest.fixture
def procs(tmp_path):
    with running_processes(tmp_path) as processes:
        yield processes


def halves(left: str, right: str, size=(480, 640)) -> np.ndarray:
    """A camera frame whose left half is one colour and right half another."""
    height, width = size
    return np.hstack(
        [color_frame(left, (height, width // 2)), color_frame(right, (height, width // 2))]
    )


def colour_of(image: np.ndarray) -> str:
    mean = image.reshape(-1, 3).mean(axis=0)
    return min(COLORS, key=lambda name: np.abs(mean - COLORS[name]).sum())


def as_jpeg(frame: np.ndarray) -> tuple[dict, bytes]:
    header, payload = unpack_frame(pack_frame("cam0", 0, frame, time.time()))
    return header, payload


def test_the_classifier_is_given_the_roi_decoded_large_enough_for_the_model():
    # given a 640x480 JPEG frame whose top-left 160x120 corner is red and the rest blue
    frame = color_frame("blue")
    frame[:120, :160] = color_frame("red", (120, 160))
    header, payload = as_jpeg(frame)
    # when the worker prepares it for a 64 px model with the corner as the roi
    image = model_input(header, payload, 64, [0.0, 0.0, 0.25, 0.25])
    # then only the red corner reaches the classifier, still at least 64 px each way (a
    # decode at 1/4 scale, enough for the whole frame, would leave a 40x30 corner)
    assert colour_of(image) == "red" and min(image.shape[:2]) >= 64
    # and without a roi the whole frame is given, reduced as far as 64 px allows
    whole = model_input(header, payload, 64, None)
    assert colour_of(whole) == "blue" and whole.shape == (120, 160, 3)


def test_raw_bgr_frames_are_cropped_to_the_roi_too():
    frame = halves("green", "red", (60, 80))
    header, payload = unpack_frame(pack_frame("cam0", 0, frame, time.time(), "bgr24"))
    assert colour_of(model_input(header, payload, 64, [0.5, 0.0, 0.5, 1.0])) == "red"


def test_two_cameras_with_different_rois_label_the_same_frame_by_their_own_part(
    config_file, color_checkpoint, procs
):
    # given two cameras whose rois are the left and the right half of what they film
    cameras = [
        {"name": "left", "source": "synthetic", "roi": [0.0, 0.0, 0.5, 1.0]},
        {"name": "right", "source": "synthetic", "roi": [0.5, 0.0, 0.5, 1.0]},
    ]
    config = config_file(cameras=cameras, model={"path": str(color_checkpoint), "device": "cpu"})
    loaded = load_config(config)
    socks = {
        c: bind_publisher(loaded.camera_endpoint(c), loaded.transport) for c in ("left", "right")
    }
    labels, events = collect("label", config), collect("event", config)
    status = collect("status", config)
    procs.sightd("infer", "-c", config)
    send = Sender(socks)
    # when both film the same 640x480 frame, blue on the left and red on the right
    first = {"left": "blue", "right": "red"}
    send.until(
        halves("blue", "red"),
        lambda: stable_labels(status) == first and len(by_camera(labels.drain())) == 2,
    )
    # then each camera's labels describe its own half, and its stable label becomes that colour
    assert by_camera(labels.drain()) == {"left": {"blue"}, "right": {"red"}}
    # when the halves swap, then so do the stable labels, each one announced by an event
    changes = send.until(halves("red", "blue"), lambda: changed(events.drain()))
    assert changes == {"left": ("blue", "red"), "right": ("red", "blue")}
    for sock in socks.values():
        sock.close()


def stable_labels(status) -> dict | None:
    """The worker's last reported stable label of each camera."""
    reports = [m["labels"] for m in status.drain() if m["component"] == "infer" and "labels" in m]
    return reports[-1] if reports else None


def by_camera(messages) -> dict[str, set[str]]:
    named: dict[str, set[str]] = {}
    for message in messages:
        named.setdefault(message["camera"], set()).add(message["label"])
    return named


def changed(events) -> dict[str, tuple] | None:
    """(previous, label) of each camera's change after its first stable label, once both had one."""
    found = {e["camera"]: (e["previous"], e["label"]) for e in events if e["previous"] is not None}
    return found if len(found) == 2 else None


class Sender:
    """Plays both cameras: the same frame on each, 10 a second."""

    def __init__(self, socks):
        self.socks, self.seq = socks, 0

    def until(self, frame, done, timeout=180.0):
        """Send `frame` until done() returns something truthy (the worker may still be starting
        on a busy machine: a generous deadline), and return that."""
        deadline = time.monotonic() + timeout
        while True:
            self.seq += 1
            for camera, sock in self.socks.items():
                sock.send_multipart(pack_frame(camera, self.seq, frame, time.time()))
            time.sleep(0.1)
            if result := done():
                return result
            assert time.monotonic() < deadline, f"not done within {timeout} s"
