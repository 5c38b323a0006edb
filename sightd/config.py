"""Strict, typed configuration: config.yaml -> validated models, errors that name the YAML path.

Precedence: command-line flags > config file > the defaults below (the one place each lives).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sightd.errors import SightdError

DEFAULT_CONFIG_PATH = Path("config.yaml")
Device = Literal["auto", "cpu", "cuda", "mps"]


class Section(BaseModel):
    # strict: YAML already types its values, so "15" for an integer is a mistake, not a hint.
    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class TrainConfig(Section):
    data_dir: str = Field("data", description="folder with one sub-folder of images per class")
    out_dir: str = Field("runs", description="where runs/<timestamp>/ folders are written")
    epochs: int = Field(15, ge=1, le=10_000, description="passes over the training split")
    batch_size: int = Field(64, ge=1, le=65_536, description="images per optimiser step")
    lr: float = Field(1e-3, gt=0, le=10, description="Adam learning rate")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="Adam weight decay (L2)")
    image_size: int = Field(64, ge=16, le=1024, description="square network input, pixels")
    mean: list[float] = Field([0.5, 0.5, 0.5], min_length=3, max_length=3)
    std: list[float] = Field([0.5, 0.5, 0.5], min_length=3, max_length=3)
    split: list[float] = Field(
        [0.7, 0.15, 0.15], min_length=3, max_length=3, description="train/validation/test"
    )
    arch: str = Field("seed", description="seed, resnet18, resnet34 or resnet50")
    augment: Literal["auto"] | bool = Field(
        "auto",
        description="camera-like shifts, zooms, rotations, light, blur and noise; "
        "auto = on for small sets",
    )
    flip: bool = Field(False, description="also mirror left-right (only if mirrored looks alike)")
    min_steps: int = Field(
        300, ge=0, le=1_000_000, description="optimiser steps at least: small sets get more epochs"
    )
    patience: int = Field(
        0, ge=0, le=10_000, description="stop after this many epochs without progress; 0 = auto"
    )
    init: str | None = Field(
        None, description="ImageNet start: a torchvision state-dict file, or 'torchvision'"
    )
    calibrate: bool = Field(True, description="fit a temperature on the validation split")
    seed: int = Field(0, ge=0, description="seeds the split, the weights and augmentation")
    device: Device = "auto"

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, value: list[float]) -> list[float]:
        if any(v <= 0 for v in value) or abs(sum(value) - 1) > 1e-6:
            raise ValueError("expected three positive fractions that sum to 1")
        return value

    @field_validator("std")
    @classmethod
    def _std_positive(cls, value: list[float]) -> list[float]:
        if any(v <= 0 for v in value):
            raise ValueError("expected three positive numbers")
        return value


class CameraConfig(Section):
    name: str = Field("cam0", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="topic suffix")
    source: int | str = Field(
        0, description="device index, video file, rtsp/http URL, image folder, or 'synthetic'"
    )
    kind: str | None = Field(
        None,
        description="webcam, stream, file, folder, synthetic, a plugin's kind or 'module:Class'; "
        "null = told by source",
    )
    options: dict[str, Any] = Field(
        {}, description="the kind's own keys, checked by its options class (sightd.sources)"
    )
    fps: float = Field(2.0, ge=0, le=1000, description="frames published per second; 0 = max")
    loop: bool = Field(True, description="restart a video file or image folder at its end")
    resize: list[int] | None = Field(None, description="[width, height] before publishing")
    encoding: Literal["jpeg", "bgr24"] = "jpeg"
    jpeg_quality: int = Field(90, ge=1, le=100)
    endpoint: str | None = Field(None, description="frames endpoint; default derived below")
    nice: int = Field(
        10, ge=0, le=19, description="CPU priority below the worker's (0 = the same)"
    )  # under load the worker, the bottleneck, goes first: at equal priority, unthrottled
    # captures take most of the CPU from it

    roi: list[float] | None = Field(
        None, description="[x, y, width, height] as fractions of the frame: the part classified"
    )

    @field_validator("roi")
    @classmethod
    def _roi_inside_frame(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return value
        if len(value) != 4:
            raise ValueError("expected [x, y, width, height], fractions of the frame")
        x, y, width, height = value
        if not (0 <= x < 1 and 0 <= y < 1 and 0 < width <= 1 and 0 < height <= 1):
            raise ValueError("expected x, y in [0, 1) and width, height in (0, 1]")
        if x + width > 1 + 1e-9 or y + height > 1 + 1e-9:
            raise ValueError("the region must lie inside the frame: x + width and y + height <= 1")
        return value

    @field_validator("resize")
    @classmethod
    def _resize_is_a_size(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (len(value) != 2 or not all(0 < v <= 8192 for v in value)):
            raise ValueError("expected [width, height] in pixels, each 1 to 8192")
        return value


class TransportConfig(Section):
    frames: str = Field("tcp://127.0.0.1:5550", description="camera N binds this port + 10*N")
    labels: str = Field("tcp://127.0.0.1:5551", description="worker: labels, events, status")
    status: str = Field("tcp://127.0.0.1:5552", description="supervisor's status forwarder")
    status_in: str = Field(
        "tcp://127.0.0.1:5553", description="components without a socket send status here"
    )
    labels_in: str = Field(
        "tcp://127.0.0.1:5554",
        description="named workers send labels here; the labels proxy republishes on labels",
    )
    high_water_mark: int = Field(10, ge=1, le=100_000, description="queued messages per peer")
    max_message_bytes: int = Field(32 * 2**20, ge=1024, description="larger messages dropped")
    status_interval: float = Field(2.0, gt=0, le=60, description="seconds between heartbeats")
    max_message_parts: int = Field(3, ge=2, le=16, description="messages with more are dropped")
    curve: bool = Field(False, description="encrypt and authenticate with ZeroMQ CURVE")
    keys_dir: str = Field("keys", description="written by `sightd keys generate`")
    client_key: str = Field("client", description="this host's client key pair in keys_dir")
    insecure_network: bool = Field(
        False, description="allow endpoints beyond loopback without curve (a trusted network)"
    )


class ModelConfig(Section):
    path: str = "runs/latest/model.safetensors"
    device: Device = "auto"
    min_confidence: float = Field(0.5, ge=0, le=1, description="below it the label is unknown")
    max_frame_age: float = Field(1.0, gt=0, description="older frames are never classified")
    reload: bool = Field(True, description="hot-reload the model file when it changes")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="auto: bfloat16 where the device does it natively, else float32"
    )
    threads: int = Field(
        1, ge=0, le=1024, description="CPU threads for inference; 0 = one per core"
    )  # 1: a live worker sharing cores with captures stays fast (threads stall when preempted)
    engine: Literal["auto", "torch", "onnxruntime", "openvino"] = Field(
        "auto",
        description="what runs the network: auto = torch on a GPU, else openvino, "
        "onnxruntime or torch, the first installed (README: Engines)",
    )

    @model_validator(mode="after")
    def _engine_precision(self) -> ModelConfig:
        if self.engine == "onnxruntime" and self.precision == "bfloat16":
            raise ValueError("engine onnxruntime serves float32: set precision auto or float32")
        return self


class SnapshotsConfig(Section):
    """The frame that completed each event, kept as a JPEG: what the camera saw when it fired."""

    dir: str = Field(description="folder for the snapshots (created when missing)")
    keep: int = Field(200, ge=1, le=1_000_000, description="newest snapshots kept; older go")


class EventsConfig(Section):
    """A new stable label (an event) needs all three; see sightd/publishers/events.py."""

    stable_frames: int = Field(3, ge=1, le=1000, description="frames a new label must hold")
    min_hold_s: float = Field(
        0.5,
        ge=0,
        le=3600,
        description="seconds (of captured_at) a new label must hold, as well as stable_frames",
    )  # 0.5: 4 frames at 5 fps; unlike a frame count it means the same at 30 fps
    start_confidence: float = Field(
        0.6,
        ge=0,
        le=1,
        description="mean confidence a named label needs over its frames to start (not unknown)",
    )  # 0.6: fewer wrong events on the digits demo at little cost in cards (README: the demo)
    snapshots: SnapshotsConfig | None = Field(
        None, description="save the frame that completed each event; off when not set"
    )


class SubscriberEntry(BaseModel):
    """`type` picks the plugin; the plugin's own config model validates the other keys."""

    model_config = ConfigDict(extra="allow", strict=True)
    type: str


Role = Literal["capture", "infer", "subscribers", "web", "all"]


class DaemonConfig(Section):
    roles: list[Role] = Field(
        ["all"], min_length=1, description="the parts this host's `sightd run` supervises"
    )
    max_restarts: int = Field(5, ge=0, description="restarts allowed per restart_window")
    restart_window: float = Field(60.0, gt=0, description="seconds")
    heartbeat_timeout: float = Field(5.0, gt=0, description="silent child is killed after this")
    stop_timeout: float = Field(10.0, gt=0, description="seconds to stop before SIGKILL")


class WorkerConfig(Section):
    """A named inference worker (the child infer:<name>) and the cameras it classifies."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="the child is infer:<name>")
    cameras: list[str] = Field(min_length=1, description="names from cameras: its cameras")


class HttpConfig(Section):
    """The HTTP server of `sightd run` and `sightd web`: the console, /metrics and /healthz."""

    listen: str = Field(
        "127.0.0.1:8765", description="host:port; 127.0.0.1 keeps it off the network"
    )
    enabled: bool = Field(True, description="false: `sightd run` starts no HTTP server")
    console: bool = Field(True, description="serve the browser console at /")
    token_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="environment variable holding the console's token; required unless "
        "listen is a loopback address",
    )

    @field_validator("listen")
    @classmethod
    def _host_and_port(cls, value: str) -> str:
        split_listen(value)
        return value


def split_listen(listen: str) -> tuple[str, int]:
    """("127.0.0.1", 8765) from "127.0.0.1:8765"; an IPv6 host goes in brackets: "[::1]:8765"."""
    host, sep, port = listen.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    if not sep or not host or (":" in host and not bracketed):
        raise ValueError('expected host:port, e.g. "127.0.0.1:8765" or "[::1]:8765"')
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"port must be a number from 1 to 65535, got {port!r}")
    return host, int(port)


class SightdConfig(Section):
    train: TrainConfig = TrainConfig()
    cameras: list[CameraConfig] = [CameraConfig()]
    transport: TransportConfig = TransportConfig()
    model: ModelConfig = ModelConfig()
    events: EventsConfig = EventsConfig()
    subscribers: list[SubscriberEntry] = []
    daemon: DaemonConfig = DaemonConfig()
    http: HttpConfig = HttpConfig()
    workers: list[WorkerConfig] = Field(
        [], description="named workers, each its own cameras; none = one worker, all cameras"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("workers")
    @classmethod
    def _each_camera_one_worker(cls, workers: list[WorkerConfig], info) -> list[WorkerConfig]:
        cameras = [c.name for c in info.data.get("cameras", [])]
        owner: dict[str, str] = {}  # camera -> its worker
        names = [w.name for w in workers]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"worker name {twice[0]!r} is used twice; names must differ")
        for worker in workers:
            for camera in worker.cameras:
                if camera not in cameras:
                    raise ValueError(
                        f"worker {worker.name!r} names camera {camera!r}, which is not in "
                        f"cameras ({', '.join(cameras)})"
                    )
                if camera in owner:
                    raise ValueError(
                        f"camera {camera!r} is given to workers {owner[camera]!r} and "
                        f"{worker.name!r}; give each camera to one worker"
                    )
                owner[camera] = worker.name
        missing = [c for c in cameras if c not in owner]
        if workers and missing:
            raise ValueError(
                f"camera(s) {', '.join(missing)} belong to no worker; add them to a worker's "
                "cameras (unassigned cameras would never be classified)"
            )
        return workers

    def camera(self, name: str) -> CameraConfig:
        for camera in self.cameras:
            if camera.name == name:
                return camera
        names = ", ".join(c.name for c in self.cameras)
        raise SightdError(f"no camera named {name!r} in the config (cameras: {names})")

    def camera_endpoint(self, name: str) -> str:
        """Camera N publishes on its own endpoint, or the frames port + 10*N."""
        index = [c.name for c in self.cameras].index(self.camera(name).name)
        camera = self.cameras[index]
        if camera.endpoint:
            return camera.endpoint
        return offset_endpoint(self.transport.frames, index, camera.name)

    def frame_endpoints(self) -> list[str]:
        return [self.camera_endpoint(c.name) for c in self.cameras]


def offset_endpoint(endpoint: str, index: int, name: str) -> str:
    if index == 0:
        return endpoint
    if endpoint.startswith("tcp://"):
        host, _, port = endpoint.rpartition(":")
        return f"{host}:{int(port) + 10 * index}"
    return f"{endpoint}.{name}"  # ipc:// and inproc:// get one path per camera


class _YamlLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 also reads on/off/yes/no as booleans,
    which would turn a subscriber's `on: thumbs_up` into `True: thumbs_up`."""


_BOOL = "tag:yaml.org,2002:bool"
_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_yaml(text: str) -> Any:
    """yaml.safe_load with YAML 1.2 booleans; raises yaml.YAMLError."""
    return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader: plain data only


def load_config(path: str | Path | None = None) -> SightdConfig:
    """Read `path` (or ./config.yaml if present, else built-in defaults) and validate it."""
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            return SightdConfig()
        path = DEFAULT_CONFIG_PATH
    path = Path(path)
    try:
        raw = parse_yaml(path.read_text()) or {}
    except FileNotFoundError:
        raise SightdError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SightdError(f"config file {path} is not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise SightdError(f"config file {path}: expected a mapping of sections at the top")
    return validate(SightdConfig, raw, source=str(path))


def validate(
    model: type[BaseModel],
    data: dict[str, Any],
    source: str = "",
    prefix: str = "",
    unknown_key: str | None = None,
):
    """model.model_validate with pydantic's errors turned into one line naming the YAML path;
    `unknown_key` replaces the generic message for a key the model does not have."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SightdError(describe_validation_error(exc, source, prefix, unknown_key)) from None


def override(section: Section, prefix: str, **flags: Any) -> Section:
    """A copy of `section` with every flag that was given (not None) applied and validated."""
    updates = {k: v for k, v in flags.items() if v is not None}
    if not updates:
        return section
    return validate(type(section), {**section.model_dump(), **updates}, prefix=prefix)


_MESSAGES = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "missing": "required key is missing",
    "extra_forbidden": "unknown key; check its spelling against config.yaml's documented keys",
}


def describe_validation_error(
    exc: ValidationError, source: str = "", prefix: str = "", unknown_key: str | None = None
) -> str:
    problems: dict[str, list[str]] = {}
    for error in exc.errors():
        message = _MESSAGES.get(error["type"], error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden" and unknown_key:
            message = unknown_key
        problems.setdefault(_yaml_path(error["loc"], prefix), []).append(message)
    path, messages = next(iter(problems.items()))
    # A union field (e.g. source: int | str) reports one error per branch: join them.
    message = " or ".join(dict.fromkeys(messages)).replace(" or expected ", " or ")
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    where = f"{source}: " if source else ""
    return f"{where}{path}: {message}{more}"


def _yaml_path(loc: tuple, prefix: str) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("int", "str", "list[int]") and path:
            continue  # union branch names are not YAML keys
        else:
            path += f".{part}" if path else str(part)
    return path or "<top>"
