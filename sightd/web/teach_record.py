"""The Teach page's recording: N frames of a live camera into a class folder, off the bus.

One recording at a time, in a thread of its own. It subscribes to the frames `sightd run`
already publishes (the camera is never opened twice), waits for the first one (a silent camera
is an error, not a wait), counts down, then keeps one frame every `every_s` as a JPEG numbered
after the images already there, written atomically. What is kept is what the worker
classifies: collect's camera_view of the frame (a bus frame is already at the camera's
resize, so only the roi cuts). A camera's JPEG with no roi is kept as its own bytes, so
training decodes exactly the pixels the worker decodes.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path

from sightd.config import CameraConfig, SightdConfig
from sightd.errors import SightdError
from sightd.web.teach_data import MAX_FILES, DataSet, TeachError, check_class, number

log = logging.getLogger("sightd.http")

COUNT = (1, 500)  # images a recording
EVERY_S = (0.1, 10.0)  # seconds between images
COUNTDOWN_S = (0, 10)  # seconds before the first
JPEG_QUALITY = 95  # a re-encoded roi loses next to nothing
ACTIVE = ("waiting", "countdown", "recording")


class Recorder:
    def __init__(self, config: SightdConfig, data: DataSet):
        self.config, self.data = config, data
        self._lock = threading.Lock()
        self._state: dict = {"state": "idle"}
        self._stop = threading.Event()

    def start(self, body: dict) -> dict:
        try:
            camera = self.config.camera(str(body.get("camera", "")))
        except SightdError as exc:
            raise TeachError(400, str(exc)) from None
        label = check_class(body.get("class", ""))
        count = number(body, "count", int, *COUNT, default=50)
        every_s = number(body, "every_s", float, *EVERY_S, default=0.2)
        countdown_s = number(body, "countdown_s", float, *COUNTDOWN_S, default=3)
        with self._lock:
            if self._state["state"] in ACTIVE:
                raise TeachError(409, "a recording is running; stop it first")
            folder = self.data.make(label)
            have = self.data.samples(label, 0, 1)["total"]
            if have + count > MAX_FILES:
                raise TeachError(
                    409, f"class {label} has {have} images; {MAX_FILES} a class at most"
                )
            self._stop = stop = threading.Event()
            self._state = {
                "state": "waiting",
                "camera": camera.name,
                "class": label,
                "count": count,
                "every_s": every_s,
                "written": 0,
                "last": None,
            }
        args = (camera, folder, count, every_s, countdown_s, stop)
        threading.Thread(target=self._run, args=args, name="teach record", daemon=True).start()
        return self.state()

    def state(self) -> dict:
        """idle, waiting (for the first frame), countdown (left_s), recording (written of
        count), done, stopped, or error (reason)."""
        with self._lock:
            state = dict(self._state)
        until = state.pop("until", None)
        if until is not None:
            state["left_s"] = round(max(0.0, until - time.monotonic()), 1)
        return state

    def stop(self) -> dict:
        with self._lock:
            if self._state["state"] in ACTIVE:
                self._stop.set()
                self._state = {**self._state, "state": "stopped", "until": None}
        return self.state()

    def _update(self, stop: threading.Event, **fields) -> None:
        """Fields of this recording's state; a stopped or replaced recording's are not."""
        with self._lock:
            if self._stop is stop and not stop.is_set():
                self._state = {**self._state, **fields}

    def _run(self, camera, folder, count, every_s, countdown_s, stop) -> None:
        try:
            self._record(camera, folder, count, every_s, countdown_s, stop)
            self._update(stop, state="done")
        except SightdError as exc:
            self._update(stop, state="error", reason=str(exc), until=None)
        except OSError as exc:  # the data set's disk: full, or read-only
            reason = f"cannot write {exc.filename or folder}: {exc.strerror or exc}"
            self._update(stop, state="error", reason=reason, until=None)
        except Exception as exc:  # a bug of ours: said on the page, not only in the log
            log.exception("teach: the recording failed")
            self._update(stop, state="error", reason=repr(exc), until=None)

    def _record(self, camera, folder, count, every_s, countdown_s, stop) -> None:
        from sightd.client import subscribe
        from sightd.trainer.collect import GIVE_UP_AFTER, next_number

        frames = subscribe("frame", camera.name, config=self.config, timeout=GIVE_UP_AFTER)
        start_at = next_at = None
        written, number_ = 0, next_number(folder)
        with contextlib.closing(frames):
            for frame in frames:
                now = time.monotonic()
                if stop.is_set():
                    return
                if start_at is None:  # the camera is there: count down from now
                    start_at = next_at = now + countdown_s
                    self._update(stop, state="countdown", until=start_at)
                if now < next_at - 0.1 * every_s:  # a frame a little early is on time
                    continue
                path = _free_name(folder, number_)
                if not _save(frame, camera, path):
                    continue
                number_, written = int(path.stem) + 1, written + 1
                self._update(stop, state="recording", until=None, written=written, last=path.name)
                if written == count:
                    return
                next_at = max(next_at + every_s, now)
        if not stop.is_set():
            raise SightdError(
                f"no frame from camera {camera.name} for {GIVE_UP_AFTER:g} s"
                + (f" after {written} images" if written else "")
                + "; is `sightd run` capturing it?"
            )


def _free_name(folder: Path, number_: int) -> Path:
    """NNNN.jpg from `number_` on, past any file (a `sightd collect` beside us) that took it."""
    while any(folder.glob(f"{number_:04d}.*")):
        number_ += 1
    return folder / f"{number_:04d}.jpg"


def _save(frame: dict, camera: CameraConfig, path: Path) -> bool:
    """The frame as the worker classifies it, as a JPEG at `path`; False for a frame that does
    not decode (it is skipped)."""
    import cv2

    from sightd.atomic import atomic_write_bytes
    from sightd.protocol import ProtocolError, decode_image
    from sightd.trainer.collect import camera_view

    try:
        view = camera_view(decode_image(frame, frame["payload"]), camera)
    except ProtocolError as exc:
        log.warning("teach: skipping a frame of %s that does not decode: %s", camera.name, exc)
        return False
    if camera.roi is None and frame["encoding"] == "jpeg":
        data = bytes(frame["payload"])
    else:
        ok, jpeg = cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise SightdError("could not encode a frame as JPEG")
        data = jpeg.tobytes()
    atomic_write_bytes(path, data)
    return True
