"""`sightd demo`: the whole product on a machine with no camera and no data, in two minutes.

Digits data set -> a trained model (cached) -> a video of held-out digit cards -> the real
supervisor with a print subscriber -> a score of the events against the cards shown; with
--keep the pipeline then stays up, set up for the console's Teach page, until Ctrl-C.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import click
import yaml

from sightd.atomic import atomic_write_text
from sightd.config import SightdConfig, TrainConfig
from sightd.errors import SightdError
from sightd.process import StopEvent

# Training is short so the demo fits in about two minutes on two CPU cores, and augmented,
# because the camera shows held-out cards smaller, moved and lit otherwise than the training
# images; fewer epochs, or 32-48 px, left cards that the model misreads on every frame (the
# README's demo section has the figures).
DEMO_EPOCHS = 20
DEMO_IMAGE_SIZE = 64
# The demo's events, chosen for its 1.5 s cards at 8 fps: a card is announced about 0.5 s after
# it appears, leaving a second for the run to restart after a few misread frames.
DEMO_EVENTS = {"stable_frames": 3, "min_hold_s": 0.5, "start_confidence": 0.6}
DEMO_MIN_CONFIDENCE = 0.5  # calibrated: below an even chance a frame says unknown
DIGITS = 1797  # images in scikit-learn's digits
CACHE_KEYS = ("epochs", "image_size", "augment", "min_steps")  # a model trained otherwise is redone
STARTUP_LIMIT = 120.0  # seconds to wait for the first label before giving up


def run_demo(workdir: Path, seconds: float, epochs: int, retrain: bool, keep: bool = False):
    """The scored pass; with `keep`, the pipeline and console then stay up until Ctrl-C, set
    up for Teach (train: in the workdir, model.path at runs/latest, hot reload on)."""
    from sightd.daemon.supervisor import Supervisor, serve
    from sightd.demo.score import Collector
    from sightd.demo.video import held_out_cards, write_demo_video
    from sightd.trainer.run_folder import point_latest_at

    workdir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    data_dir = prepare_digits(workdir / "digits")
    run_dir = prepare_model(workdir / "runs", data_dir, epochs, retrain)
    say(f"writing a {seconds:g} s demo video of held-out digit cards (noise, movement)")
    video = workdir / "demo.avi"
    order = write_demo_video(video, held_out_cards(run_dir, data_dir), seconds)
    say(f"cards in order: {' '.join(order)} (then again from the start)")

    model = run_dir / "model.safetensors"
    teach = demo_train_config(data_dir, run_dir.parent, epochs) if keep else None
    if keep:  # Teach's deploy swaps this link, and the worker reloads what it points at
        point_latest_at(run_dir.parent, run_dir)
        model = run_dir.parent / "latest" / "model.safetensors"
        say(f"{model.parent} -> {run_dir.name}: the scored pass serves the demo's own model")
    config = demo_config(video, model, teach)
    config_file = workdir / "demo.yaml"
    atomic_write_text(config_file, yaml.safe_dump(config.model_dump(), sort_keys=False))
    say(f"its config: {config_file} (try `sightd status -c {config_file}` in another terminal)")
    say(f"console: http://{config.http.listen}/ (watch it live in a browser)")
    supervisor, scored = Supervisor(config), threading.Event()
    collector = Collector(config, seconds, scored, give_up_after=STARTUP_LIMIT)
    collector.on_first_label = lambda: _announce(supervisor, began, keep)
    collector.start()
    say(f"starting the pipeline (`sightd run` machinery) for {seconds:g} s of live labels")
    if keep:
        keep_serving(supervisor, collector, order, config, began, workdir)
        return
    serve(supervisor, scored)
    collector.join(2.0)
    report(collector, order, began, workdir)


def report(collector, order: list[str], began: float, workdir: Path) -> None:
    """The scored pass's last lines: its time, then the accuracy line (a no-labels error)."""
    from sightd.demo.score import score
    from sightd.demo.video import FRAMES_PER_CARD

    result = score(collector.heard, order, FRAMES_PER_CARD)
    say(f"done in {time.monotonic() - began:.0f} s; model and data in {workdir}")
    click.echo(result.summary())
    if not collector.heard.labels:
        raise SightdError("the demo pipeline produced no labels; see the log above")


def keep_serving(supervisor, collector, order, config: SightdConfig, began, workdir) -> None:
    """Serve until Ctrl-C; the score is printed when the scored pass ends, then the URL."""
    from sightd.daemon.supervisor import serve

    def report_then_invite() -> None:
        collector.join()
        if stopping.is_set():
            return
        try:
            report(collector, order, began, workdir)
        except SightdError as exc:  # no labels: the console stays up to show why
            click.echo(f"Error: {exc}", err=True)
        url, train = f"http://{config.http.listen}/", config.train
        say(
            f"the pipeline and console keep running at {url} (Ctrl-C to stop): its Teach "
            f"page ({url}teach) records into {train.data_dir}, trains into {train.out_dir} "
            f"and deploys to {config.model.path}, which the worker reloads"
        )

    stopping = StopEvent()  # a signal wakes the supervisor's watch loop at once
    reporter = threading.Thread(target=report_then_invite, name="demo-report", daemon=True)
    reporter.start()
    serve(supervisor, stopping)
    collector.done.set()  # stopped before the scored pass ended: no score to print
    reporter.join(2.0)


def prepare_digits(data_dir: Path) -> Path:
    from sightd.trainer.digits import write_digits_dataset

    if sum(1 for _ in data_dir.glob("*/*.png")) == DIGITS:  # an interrupted write is redone
        say(f"reusing the digits data set in {data_dir}")
        return data_dir
    say(f"writing the digits data set ({DIGITS} images, 10 classes) to {data_dir}")
    return write_digits_dataset(data_dir)


def prepare_model(runs_dir: Path, data_dir: Path, epochs: int, retrain: bool) -> Path:
    """The cached demo run when it was trained the same way and still loads, else a new one."""
    from sightd.trainer.train import run_training

    run_dir = runs_dir / "demo"
    if not retrain and _cached(run_dir, epochs):
        say(f"reusing the trained model in {run_dir} (--retrain to train again)")
        return run_dir
    say(
        f"training the seed ResNet on digits: {epochs} epochs at {DEMO_IMAGE_SIZE} px with "
        "camera-like augmentation (shifts, zoom, tilt, light, blur, noise, covering), since "
        "the camera will not show the cards as cleanly as the data set does"
    )
    began = time.monotonic()
    run_dir = run_training(demo_train_config(data_dir, runs_dir, epochs), data_dir, run_dir)
    say(f"trained in {time.monotonic() - began:.0f} s")
    return run_dir


def demo_train_config(data_dir: Path, runs_dir: Path, epochs: int | None = None) -> TrainConfig:
    """The demo's training: short, and on camera-like augmentation, because the camera sees
    held-out cards moved, lit and blurred in ways the clean training images never are."""
    return TrainConfig(
        data_dir=str(data_dir),
        out_dir=str(runs_dir),
        epochs=epochs or DEMO_EPOCHS,
        image_size=DEMO_IMAGE_SIZE,
        augment=True,
        min_steps=0,  # exactly `epochs` passes: the demo's time is the one chosen here
    )


def _cached(run_dir: Path, epochs: int) -> bool:
    from sightd.checkpoint import load_checkpoint

    try:
        trained = json.loads((run_dir / "metrics.json").read_text())["config"]
        load_checkpoint(run_dir / "model.safetensors")
    except (OSError, ValueError, KeyError, SightdError):
        return False
    wanted = demo_train_config(Path(), Path(), epochs)
    same = all(trained.get(key) == getattr(wanted, key) for key in CACHE_KEYS)
    return same and (run_dir / "split.json").is_file()


def demo_config(video: Path, model: Path, teach: TrainConfig | None = None) -> SightdConfig:
    """One camera on the video, the worker, a print subscriber; free ports on 127.0.0.1.
    With `teach` (the --keep mode), its train: section and hot reload for the Teach page, and
    only events printed (labels at 8 a second would bury the console's URL)."""
    from sightd.demo.video import FPS

    names = ("frames", "labels", "status", "status_in")
    topics = ["event"] if teach else ["label", "event"]
    data = {
        "cameras": [{"name": "cam0", "source": str(video), "fps": float(FPS)}],
        "transport": {name: free_endpoint() for name in names},
        "http": {"listen": free_endpoint().removeprefix("tcp://")},
        "model": {
            "path": str(model),
            "reload": teach is not None,
            "min_confidence": DEMO_MIN_CONFIDENCE,
        },
        "events": DEMO_EVENTS,
        "subscribers": [{"type": "print", "topics": topics}],
        "log_level": "warning",  # the print subscriber's lines are the show
    }
    if teach is not None:
        data["train"] = teach.model_dump()
    return SightdConfig.model_validate(data)


def default_workdir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "sightd" / "demo"


def free_endpoint() -> str:
    """A port nothing listens on now, so the demo never collides with a running sightd."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def _announce(supervisor, began: float, keep: bool = False) -> None:
    children = ", ".join(f"{c.spec.name} (pid {c.pid})" for c in supervisor.children)
    say(f"pipeline up after {time.monotonic() - began:.0f} s: {children}")
    if keep:
        say("events print as `time camera label confidence (was previous)`")
    else:
        say("labels print as `time camera label confidence`; events add `(was previous)`")


def say(message: str) -> None:
    click.echo(f"[demo] {message}")
