"""The live pipeline end to end: real capture, worker and listener processes on real sockets."""

import subprocess
import threading
import time

import msgpack
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import color_frame, write_video
from pipeline_support import collect, json_lines, running_processes

from sightd.checkpoint import ModelInfo, load_checkpoint, save_checkpoint
from sightd.cli import main
from sightd.config import load_config
from sightd.protocol import pack_frame
from sightd.publishers.intake import FrameIntake
from sightd.transport import bind_publisher, connect_subscriber

SMALL = (60, 80)  # frame size: the classes are colours, so tiny frames keep the tests quick


@pytest.fixture
def procs(tmp_path):
    with running_processes(tmp_path) as processes:
        yield processes


def worker_config(config_file, model, transport=None, **model_options):
    options = {"path": str(model), "device": "cpu", **model_options}
    camera = {"name": "cam0", "source": "synthetic"}
    return config_file(cameras=[camera], model=options, transport=transport or {})


def test_a_known_colour_sequence_gives_the_right_labels_and_events_in_order(
    tmp_path, config_file, color_checkpoint, procs
):
    # Given a recording: a 3 s blue lead-in (while the sockets connect), then red, green, blue.
    sequence = ["blue"] * 30 + ["red"] * 10 + ["green"] * 10 + ["blue"] * 10
    rng = np.random.default_rng(5)
    video = write_video(tmp_path / "v.avi", [color_frame(c, SMALL, rng) for c in sequence], 10)
    camera = {"name": "cam0", "source": str(video), "fps": 10, "loop": False}
    config = config_file(cameras=[camera], model={"path": str(color_checkpoint), "device": "cpu"})
    status = collect("status", config)
    procs.sightd("infer", "-c", config)
    listener = json_lines(procs.sightd("listen", "-c", config, "--topic", "event", stdout=-1))
    labels = collect("label", config)
    status.wait_for(lambda m: m["component"] == "infer", timeout=60)
    # When the camera plays it.
    procs.sightd("capture", "-c", config)
    # Then the events arrive, as JSON lines while it plays, in order, each after 3 frames held.
    events = [listener.wait_for(lambda m: True, timeout=30) for _ in range(4)]
    assert [(e["previous"], e["label"]) for e in events] == [
        (None, "blue"),
        ("blue", "red"),
        ("red", "green"),
        ("green", "blue"),
    ]
    starts = [None, 30, 40, 50]
    for event, start in zip(events[1:], starts[1:], strict=True):
        assert start + 2 <= event["seq"] < start + 10
        assert event["type"] == "changed" and event["topic"] == "event.cam0"
        assert event["v"] == 1 and event["camera"] == "cam0" and event["confidence"] >= 0.5
    # And every label names its frame's colour, in frame order, with the protocol's fields.
    labels.wait_for(lambda m: m["seq"] >= 55)
    seen = labels.drain()
    assert [m["label"] for m in seen] == [sequence[m["seq"]] for m in seen]
    assert [m["seq"] for m in seen] == sorted({m["seq"] for m in seen})
    label = seen[-1]
    assert set(label) >= {"v", "camera", "seq", "captured_at", "inferred_at", "confidence"}
    assert set(label["scores"]) == {"blue", "green", "red"}
    assert abs(sum(label["scores"].values()) - 1) < 1e-4
    assert label["model"]["name"] == "seed" and len(label["model"]["hash"]) == 12
    assert 0 <= label["inferred_at"] - label["captured_at"] < 1
    latest = status.wait_for(lambda m: m["component"] == "infer" and m["frames_out"] >= 10)
    assert latest["labels"] == {"cam0": "blue"} and latest["malformed"] == 0


class FakeCamera:
    """The test plays the camera: it binds cam0's endpoint and sends what it likes."""

    def __init__(self, config_path):
        config = load_config(config_path)
        self.sock = bind_publisher(config.camera_endpoint("cam0"), config.transport)
        self.seq = 0

    def frame(self, colour="blue", age=0.0) -> int:
        self.seq += 1
        parts = pack_frame("cam0", self.seq, color_frame(colour, SMALL), time.time() - age)
        self.sock.send_multipart(parts)
        return self.seq

    def until_labelled(self, labels, colour="blue", timeout=180.0) -> dict:
        """Send frames until one of them comes back labelled (the sockets are connected). The
        first call waits for the worker's start too: its imports and, for a model file of its
        own, the engine's export, 10 s on an idle machine and far more on a busy one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seq = self.frame(colour)
            try:
                return labels.wait_for(lambda m, seq=seq: m["seq"] >= seq, timeout=0.3)
            except AssertionError:
                continue
        raise AssertionError("the worker never labelled a frame")


def hostile_messages() -> tuple[list[list[bytes]], list[list[bytes]]]:
    """(protocol violations, frames that pass the header checks but do not decode)."""
    good = pack_frame("cam0", 1, color_frame("red", SMALL), time.time())
    head = msgpack.unpackb(good[1])

    def with_header(**changes):
        return [good[0], msgpack.packb({**head, **changes}), good[2]]

    malformed = [
        good[:2],
        [*good, b"extra"],
        [good[0], b"\xc1\xc1\xc1", good[2]],
        [good[0], msgpack.packb([1, 2, 3]), good[2]],
        with_header(v=2),
        with_header(encoding="bgr24"),  # the payload is not width x height x 3 bytes
        with_header(width=100_000),
        with_header(captured_at="yesterday"),
        with_header(pad="x" * 70_000),  # oversized header
        [b"frame.\xff\xfe", good[1], good[2]],
        [b"frame.intruder", msgpack.packb({**head, "camera": "intruder"}), good[2]],
    ]
    undecodable = [
        [good[0], good[1], b"\xff\xd8 not really a jpeg"],
        with_header(width=640, height=480),  # decodes, but not to the size it claims
    ]
    return malformed, undecodable


def test_malformed_and_hostile_messages_are_counted_and_the_worker_keeps_serving(
    config_file, color_checkpoint, procs
):
    config = worker_config(config_file, color_checkpoint, {"max_message_bytes": 2**20})
    labels, status = collect("label", config), collect("status", config)
    procs.sightd("infer", "-c", config)
    camera = FakeCamera(config)
    camera.until_labelled(labels)
    # When it receives every kind of broken message, one at a time, and one over 1 MiB.
    malformed, undecodable = hostile_messages()
    for count, parts in enumerate(malformed, 1):
        camera.sock.send_multipart(parts)
        counted(status, "malformed", count)  # one at a time: queues are 10 messages deep
    for count in range(1, len(undecodable) + 1):
        parts = hostile_messages()[1][count - 1]  # captured now: a frame gone stale is not decoded
        camera.sock.send_multipart(parts)
        counted(status, "decode_errors", count)  # a newer frame of cam0 would supersede it
    camera.sock.send_multipart([b"frame.cam0", b"x", b"\0" * (2 * 2**20)])
    # Then it still labels good frames, and its status counts what it refused.
    label = camera.until_labelled(labels, colour="green")
    assert label["label"] == "green"
    figures = status.wait_for(
        lambda m: m["component"] == "infer" and m["at"] > label["inferred_at"]
    )
    assert figures["state"] == "online"
    assert figures["malformed"] == len(malformed)
    assert figures["decode_errors"] == len(undecodable)
    assert figures["resets"] == 1  # ZeroMQ cut the connection for the oversized one; renewed
    assert procs.started[0].poll() is None


def counted(status, figure: str, count: int) -> dict:
    """The worker's status once it has counted `count` of `figure` (a busy machine: 60 s)."""
    return status.wait_for(
        lambda m: m["component"] == "infer" and m.get(figure, 0) >= count, timeout=60
    )


def test_frames_older_than_max_frame_age_are_never_classified(config_file, color_checkpoint, procs):
    config = worker_config(config_file, color_checkpoint, max_frame_age=1.0)
    labels, status = collect("label", config), collect("status", config)
    procs.sightd("infer", "-c", config)
    camera = FakeCamera(config)
    camera.until_labelled(labels)
    stale = []
    for _ in range(5):
        stale.append(camera.frame("red", age=3.0))
        time.sleep(0.05)
        stale.append(camera.frame("red", age=-3.0))  # from the future: not trusted either
        time.sleep(0.05)
    last = camera.until_labelled(labels, colour="green")
    assert not {m["seq"] for m in labels.drain()} & set(stale)
    assert all(m["inferred_at"] - m["captured_at"] <= 1.0 for m in labels.items)
    figures = status.wait_for(lambda m: m["component"] == "infer" and m["at"] > last["inferred_at"])
    assert figures["stale"] >= len(stale)  # (a fresh frame may go stale on a busy machine)


def test_the_intake_keeps_only_the_newest_frame_per_camera_and_counts_the_rest(config_file):
    config = load_config(config_file())
    pub = bind_publisher(config.transport.frames, config.transport)
    sub = connect_subscriber([], [b"frame."], config.transport)
    intake = FrameIntake(sub, {"cam0"}, [config.transport.frames])
    seq = 0
    while not intake.collect(0.1):  # until the subscription has reached the publisher
        seq += 1
        pub.send_multipart(pack_frame("cam0", seq, color_frame("red", SMALL), time.time()))
    for n in range(seq + 1, seq + 6):
        pub.send_multipart(pack_frame("cam0", n, color_frame("red", SMALL), time.time()))
    time.sleep(0.3)  # all five are queued before the worker looks
    newest = intake.collect(0.5)
    assert list(newest) == ["cam0"] and newest["cam0"][0]["seq"] == seq + 5
    assert intake.counts.dropped >= 4
    pub.close()
    intake.close()  # its monitor first: a monitor left behind its socket can block ZeroMQ's thread


def relabelled(path, classes, out):
    """The same weights under other class names: a swap shows in the labels themselves."""
    checkpoint = load_checkpoint(path)
    info = checkpoint.info
    save_checkpoint(out, checkpoint.model, ModelInfo(info.arch, classes, 64, info.mean, info.std))
    return out.read_bytes()


def test_the_model_is_swapped_under_load_and_bad_files_are_refused(
    tmp_path, config_file, color_checkpoint, procs
):
    model = tmp_path / "model.safetensors"
    original = color_checkpoint.read_bytes()
    model.write_bytes(original)
    renamed = relabelled(color_checkpoint, ["azure", "lime", "crimson"], tmp_path / "new.st")
    config = worker_config(config_file, model)
    labels, status = collect("label", config), collect("status", config)
    procs.sightd("infer", "-c", config)
    camera = FakeCamera(config)
    old = camera.until_labelled(labels)
    stop = threading.Event()
    threading.Thread(target=_stream_blue, args=(camera, stop), daemon=True).start()
    try:
        # When a new model replaces the file under load, labels come from it, without a gap
        # (its engine export is made in a subprocess first: a minute on a busy machine).
        model.write_bytes(renamed)
        new = labels.wait_for(lambda m: m["label"] == "azure", timeout=180)
        served = [m for m in labels.items if m["model"] == old["model"]]
        assert new["model"]["hash"] != old["model"]["hash"]
        # The swap never stalls the worker: from the old model's last label to the new one's
        # first, no more frames go by than between two of the old model's labels while the new
        # one was loading (a busy machine widens every gap alike; a load in the worker's loop
        # would widen this one by the seconds it takes).
        gaps = [b["seq"] - a["seq"] for a, b in zip(served, served[1:], strict=False)]
        assert new["seq"] - served[-1]["seq"] <= max(gaps) + 5, (served[-1], new, max(gaps))
        # When a truncated file and then garbage replace it, both are refused; it keeps serving.
        for bad in (renamed[: len(renamed) // 2], b"\x00garbage" * 1000):
            errors = status.wait_for(lambda m: m["component"] == "infer")["model_errors"]
            model.write_bytes(bad)
            refused = status.wait_for(lambda m, e=errors: m.get("model_errors", 0) > e, timeout=120)
            assert "model file" in refused["model_error"]
            later = labels.wait_for(lambda m, t=refused["at"]: m["captured_at"] > t)
            assert later["label"] == "azure" and later["model"] == new["model"]
        # When a good file is copied in slowly, it is loaded only once complete.
        errors = refused["model_errors"]
        with open(model, "wb") as out:
            out.write(original[:1000])
            out.flush()
            time.sleep(0.4)
            out.write(original[1000:])
        labels.wait_for(lambda m: m["label"] == "blue", timeout=180)  # exported again
        assert status.wait_for(lambda m: m["component"] == "infer")["model_errors"] == errors
    finally:
        stop.set()


def _stream_blue(camera: FakeCamera, stop: threading.Event) -> None:
    while not stop.is_set():
        camera.frame("blue")
        time.sleep(0.03)


def test_capture_and_infer_document_their_options():
    runner = CliRunner()
    capture = runner.invoke(main, ["capture", "--help"]).output
    infer = runner.invoke(main, ["infer", "--help"]).output
    assert all(option in capture for option in ("--camera", "--source", "--fps", "--config"))
    assert all(option in infer for option in ("--model", "--device", "--config"))


def test_bad_flags_and_a_missing_model_are_one_line_errors(tmp_path, config_file):
    config = config_file()
    result = CliRunner().invoke(main, ["capture", "-c", str(config), "--fps", "-1"])
    assert result.exit_code == 1
    assert (
        result.output.strip() == "Error: cameras[0].fps: Input should be greater than or equal to 0"
    )
    missing = tmp_path / "none.safetensors"
    run = subprocess.run(
        ["sightd", "infer", "-c", str(config), "--model", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"Error: model file {missing} does not exist; train one with `sightd train`"
    ]


def test_each_event_keeps_the_frame_that_completed_it_and_only_the_newest_are_kept(
    tmp_path, config_file, color_checkpoint, procs
):
    import cv2

    # given a recording red, green, blue after a blue lead-in, and snapshots kept: 2
    sequence = ["blue"] * 30 + ["red"] * 10 + ["green"] * 10 + ["blue"] * 10
    rng = np.random.default_rng(6)
    video = write_video(tmp_path / "v.avi", [color_frame(c, SMALL, rng) for c in sequence], 10)
    folder = tmp_path / "snapshots"
    config = config_file(
        cameras=[{"name": "cam0", "source": str(video), "fps": 10, "loop": False}],
        model={"path": str(color_checkpoint), "device": "cpu"},
        events={"snapshots": {"dir": str(folder), "keep": 2}},
    )
    status = collect("status", config)
    events = collect("event", config)
    procs.sightd("infer", "-c", config)
    status.wait_for(lambda m: m["component"] == "infer", timeout=60)
    procs.sightd("capture", "-c", config)
    # when its events fire
    heard = [events.wait_for(lambda m, n=n: m["seq"] >= n, timeout=30) for n in (32, 42, 52)]
    # then each names its snapshot, a JPEG of the frame that completed it (the new colour);
    # of the four written, the newest two are kept
    assert [e["label"] for e in heard] == ["red", "green", "blue"]
    wait_for_files = time.monotonic() + 10
    while sorted(p.name for p in folder.glob("*.jpg")) != sorted(e["snapshot"] for e in heard[-2:]):
        assert time.monotonic() < wait_for_files, sorted(folder.iterdir())
        time.sleep(0.1)
    for event in heard[-2:]:
        image = cv2.imread(str(folder / event["snapshot"]))
        channel = {"blue": 0, "green": 1, "red": 2}[event["label"]]
        assert image.mean(axis=(0, 1)).argmax() == channel
    assert not list(folder.glob(".*"))  # no temp file left behind


def test_the_newest_frames_of_several_cameras_are_classified_in_one_batch(
    config_file, color_checkpoint, procs
):
    names, colours = ["cam0", "cam1", "cam2"], ["red", "green", "blue"]
    cameras = [{"name": name, "source": "synthetic"} for name in names]
    model = {"path": str(color_checkpoint), "device": "cpu"}
    config = config_file(cameras=cameras, model=model)
    labels, status = collect("label", config), collect("status", config)
    procs.sightd("infer", "-c", config)
    loaded = load_config(config)
    socks = [bind_publisher(loaded.camera_endpoint(n), loaded.transport) for n in names]
    status.wait_for(lambda m: m["component"] == "infer" and m["state"] == "online", timeout=60)
    # When every camera sends a frame at once, again and again (the worker classifies one
    # batch while the next frames queue up behind it),
    seq, deadline = 0, time.monotonic() + 60
    while time.monotonic() < deadline:
        seq += 1
        for name, colour, sock in zip(names, colours, socks, strict=True):
            frame = color_frame(colour, SMALL)
            sock.send_multipart(pack_frame(name, seq, frame, time.time()))
        batched = [m for m in status.drain() if m.get("batch", {}).get("max", 0) >= 2]
        if batched and seq > 20:
            break
        time.sleep(0.02)
    # then one forward pass takes several cameras' frames, and each keeps its own label.
    assert batched, "no forward pass ever took more than one camera's frame"
    assert 1 <= batched[-1]["batch"]["mean"] <= batched[-1]["batch"]["max"] <= 3
    seen = labels.drain()
    assert {m["camera"] for m in seen} == set(names)
    assert all(m["label"] == colours[names.index(m["camera"])] for m in seen)
    for sock in socks:
        sock.close(linger=0)
