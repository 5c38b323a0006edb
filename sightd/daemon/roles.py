"""Which parts of a deployment this host's supervisor runs: its roles, cameras and workers.

One config describes the whole deployment; each host runs `sightd run --role ...` for its
share. The host with the subscribers role is the hub: its supervisor hosts the status bus
(transport.status_in -> status) and, with named workers, the labels proxy (labels_in ->
labels), because its subscribers and console read both. Every other host connects to them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sightd.config import SightdConfig
from sightd.daemon.child import ChildSpec
from sightd.errors import SightdError
from sightd.subscribers.registry import subscriber_name

ROLES = ("capture", "infer", "subscribers", "web")  # "all" is every one of them
CAPTURE = "sightd.publishers.capture:run_capture"
INFER = "sightd.publishers.inference:run_inference"
NAMED_WORKER = "sightd.daemon.workers:run_worker"


@dataclass(frozen=True)
class Plan:
    """What one supervisor runs. `cameras`/`workers` narrow the capture/infer roles to some
    of the config's (two camera hosts each run their own); None means all of them."""

    roles: frozenset[str] = frozenset(ROLES)
    cameras: tuple[str, ...] | None = None
    workers: tuple[str, ...] | None = None

    @property
    def hub(self) -> bool:
        """Hosts the status bus and the labels proxy: where the subscribers are."""
        return "subscribers" in self.roles

    @property
    def name(self) -> str:
        """The supervisor's status name: "supervisor" on the hub (what /healthz and `sightd
        status` read), elsewhere one naming its share, e.g. "supervisor:capture[cam0]"."""
        if self.hub:
            return "supervisor"
        parts = []
        for role in ROLES:
            if role in self.roles:
                chosen = {"capture": self.cameras, "infer": self.workers}.get(role)
                parts.append(f"{role}[{','.join(chosen)}]" if chosen else role)
        return "supervisor:" + "+".join(parts)


def make_plan(
    config: SightdConfig,
    roles: Iterable[str] = (),
    cameras: Iterable[str] = (),
    workers: Iterable[str] = (),
) -> Plan:
    """The plan from --role/--camera/--worker (empty: daemon.roles, every camera and worker);
    a name the config does not have is a one-line error."""
    chosen = set(roles) or set(config.daemon.roles)
    if "all" in chosen:
        chosen = set(ROLES)
    unknown = chosen - set(ROLES)
    if unknown:
        raise SightdError(
            f"unknown role {sorted(unknown)[0]!r}; roles are {', '.join(ROLES)} or all"
        )
    cameras, workers = tuple(cameras), tuple(workers)
    for camera in cameras:
        config.camera(camera)  # raises naming the cameras there are
    names = [w.name for w in config.workers] or ["infer"]
    for worker in workers:
        if worker not in names:
            raise SightdError(
                f"no worker named {worker!r} in the config (workers: {', '.join(names)}); "
                "name one from workers:"
            )
    if cameras and "capture" not in chosen:
        raise SightdError("--camera narrows the capture role: add --role capture")
    if workers and "infer" not in chosen:
        raise SightdError("--worker narrows the infer role: add --role infer")
    return Plan(frozenset(chosen), cameras or None, workers or None)


def pipeline_specs(config: SightdConfig, plan: Plan | None = None) -> list[ChildSpec]:
    """The children of `plan` (default: every part): one capture per camera, the worker (or
    one per named worker), one process per subscriber, and the HTTP server (/metrics,
    /healthz), which as a reader of the bus stops with the subscribers."""
    plan = plan or Plan()
    specs = []
    if "capture" in plan.roles:
        for camera in config.cameras:
            if plan.cameras is None or camera.name in plan.cameras:
                specs.append(
                    ChildSpec(f"capture:{camera.name}", CAPTURE, (camera.name,), "captures")
                )
    if "infer" in plan.roles:
        specs += worker_specs(config, plan.workers)
    if "subscribers" in plan.roles:
        for index in range(len(config.subscribers)):
            name = subscriber_name(config, index)  # subscriber:<type>, .<index> when repeated
            target = "sightd.subscribers.host:run_subscriber"
            specs.append(ChildSpec(name, target, (index,), "subscribers"))
    if "web" in plan.roles and config.http.enabled:
        specs.append(ChildSpec("http", "sightd.web.server:run_http", (), "subscribers"))
    return specs


def worker_specs(config: SightdConfig, only: tuple[str, ...] | None = None) -> list[ChildSpec]:
    if not config.workers:  # one worker for every camera, as on a single host
        return [] if only and "infer" not in only else [ChildSpec("infer", INFER, (), "worker")]
    return [
        ChildSpec(f"infer:{worker.name}", NAMED_WORKER, (worker.name,), "worker")
        for worker in config.workers
        if only is None or worker.name in only
    ]


def worker_cameras(config: SightdConfig) -> dict[str, list[str]]:
    """Each worker child's name and the cameras it classifies."""
    if not config.workers:
        return {"infer": [c.name for c in config.cameras]}
    return {f"infer:{w.name}": list(w.cameras) for w in config.workers}
