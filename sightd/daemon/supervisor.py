"""The supervisor of `sightd run`: starts every part in its own process and keeps it running.

A child that exits or crashes is restarted after a backoff; one that fails more than
daemon.max_restarts times in daemon.restart_window seconds is given up on (the rest keeps
running); one whose heartbeat goes stale (a read stuck in a driver, a hung worker) is killed and
restarted. What it sees goes to the log and, as status.supervisor, to the status topic.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from sightd.backoff import Backoff
from sightd.component import Component
from sightd.config import SightdConfig
from sightd.daemon.child import (
    EXIT_USER_ERROR,
    SPAWN,
    ChildSpec,
    StopFlag,
    child_main,
    set_preload,
    stop_fork_server,
)
from sightd.daemon.forwarder import LabelsProxy, StatusForwarder
from sightd.daemon.notify import notify
from sightd.daemon.readiness import Readiness
from sightd.daemon.roles import Plan, pipeline_specs, worker_cameras
from sightd.engines.base import choose_engine
from sightd.process import Runtime, StopEvent, configure_logging, set_process_title

log = logging.getLogger("sightd.daemon")

STARTUP_GRACE = 30.0  # seconds before a child's first beat: torch import, model load, CUDA
FIRST_BACKOFF, MAX_BACKOFF = 0.2, 10.0  # restart delays double from the first to the last
GROUPS = ("captures", "worker", "subscribers")  # start order; stop runs it in reverse


@dataclass
class Child:
    """One supervised process and its history; `process` is replaced on every restart."""

    spec: ChildSpec
    stop: StopFlag  # shared with every incarnation
    heartbeat: object  # a shared double: time.monotonic() of the last beat, 0 before the first
    process: mp.process.BaseProcess | None = None
    state: str = "new"  # running, backoff, given-up, stopped
    started_at: float = 0.0
    restart_at: float = 0.0
    restarts: int = 0
    failures: deque = field(default_factory=deque)  # monotonic times within restart_window
    last_failure: str = ""

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def summary(self) -> dict:
        return {
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_failure": self.last_failure,
        }


class Supervisor(Component):
    """Runs `plan`'s share of the deployment (default: all of it); on the hub (the subscribers'
    host) it also hosts the status bus and, with named workers, the labels proxy."""

    def __init__(
        self, config: SightdConfig, specs: list[ChildSpec] | None = None, plan: Plan | None = None
    ):
        self.plan = plan or Plan()
        super().__init__(self.plan.name, config.transport, Runtime(self.plan.name))
        self.config = config
        self.daemon = config.daemon
        specs = pipeline_specs(config, self.plan) if specs is None else specs
        for spec in specs:
            if spec.group not in GROUPS:
                raise ValueError(f"{spec.name}: group must be one of {GROUPS}")
        self.children = [Child(s, StopFlag(), SPAWN.RawValue("d", 0.0)) for s in specs]
        self.forwarder = StatusForwarder(config.transport) if self.plan.hub else None
        hosts_proxy = self.plan.hub and bool(config.workers)
        self.labels_proxy = LabelsProxy(config.transport) if hosts_proxy else None
        self.readiness = Readiness(c.spec.name for c in self._group("worker"))

    # ---- the checklist ---------------------------------------------------------------------

    def start(self) -> None:
        log.info("starting sightd (pid %d)", os.getpid())
        self.prepare_fork_server()
        self.start_status_forwarder()
        self.start_labels_proxy()
        self.start_children("captures")
        self.start_children("worker")
        self.start_children("subscribers")
        self.start_label_watch()

    def stop(self) -> None:
        notify("STOPPING=1")
        self.set_state("offline", "stopping")
        self.publish_status()  # now, while the status bus still runs
        self.stop_label_watch()
        self.stop_children("subscribers")
        self.stop_children("worker")
        self.stop_children("captures")
        self.stop_labels_proxy()
        self.stop_status_forwarder()
        stop_fork_server()
        log.info("sightd stopped")

    def run(self, stop_requested: threading.Event | None = None) -> None:
        """start(), watch until `stop_requested` is set, then stop(), whatever happened."""
        if stop_requested is not None:
            self.runtime.stop = stop_requested
        try:
            self.start()
            self.set_state("online")
        except BaseException:
            self.stop()
            raise
        super().run()

    def cycle(self, wait: float) -> None:
        now = time.monotonic()
        restarts = [c.restart_at - now for c in self.children if c.state == "backoff"]
        self.watch(timeout=max(min([wait, *restarts]), 0.01))

    def close(self) -> None:
        self.stop()

    # ---- start and stop steps --------------------------------------------------------------

    def prepare_fork_server(self) -> None:
        """The worker's engine preloaded where every child forks from: torch only for torch,
        and no engine at all on a host without a worker."""
        log.info("roles: %s (%s)", ", ".join(sorted(self.plan.roles)), self.name)
        if "infer" not in self.plan.roles:
            return
        model = self.config.model
        engine = choose_engine(model.engine, model.device)
        modules = ", ".join(set_preload(engine))
        log.info(
            "engine %s (model.engine %s); the fork server preloads %s",
            engine,
            model.engine,
            modules,
        )

    def start_status_forwarder(self) -> None:
        t = self.config.transport
        if self.forwarder is None:
            log.info("status bus hosted by the subscribers' host: sending to %s", t.status_in)
            return
        log.info("status forwarder: %s -> %s", t.status_in, t.status)
        self.forwarder.start()

    def start_labels_proxy(self) -> None:
        if self.labels_proxy is not None:
            t = self.config.transport
            log.info("labels proxy: %s -> %s", t.labels_in, t.labels)
            self.labels_proxy.start()

    def start_children(self, group: str) -> None:
        for child in self._group(group):
            self._launch(child)

    def start_label_watch(self) -> None:
        """The worker's labels prove the whole pipeline works (sightd/daemon/readiness.py)."""
        self.readiness.open(self.config.transport)

    def stop_label_watch(self) -> None:
        self.readiness.close()

    def stop_children(self, group: str) -> None:
        """Ask the group to stop, wait a share of daemon.stop_timeout, then SIGKILL the rest."""
        children = [c for c in self._group(group) if c.process is not None]
        if not children:  # none started (a bind failed first), or all given up: nothing to say
            return
        log.info("stopping %s: %s", group, ", ".join(c.spec.name for c in children))
        for child in children:
            child.stop.set()
        deadline = time.monotonic() + self.daemon.stop_timeout / (len(GROUPS) + 1)
        for child in children:
            if child.process is not None and child.state == "running":
                child.process.join(max(0.0, deadline - time.monotonic()))
                if child.process.is_alive():
                    log.warning("%s did not stop in time; killing it", child.spec.name)
                    child.process.kill()
                    child.process.join(1.0)
            child.state = "stopped"

    def stop_labels_proxy(self) -> None:
        if self.labels_proxy is not None and self.labels_proxy.running:
            log.info("stopping labels proxy")
            self.labels_proxy.stop()

    def stop_status_forwarder(self) -> None:
        if self.forwarder is not None and self.forwarder.running:
            log.info("stopping status forwarder")
            self.forwarder.stop()

    # ---- watching --------------------------------------------------------------------------

    def watch(self, timeout: float) -> None:
        """One round: wait up to `timeout` for the worker's status, a child's exit or a stop,
        then check every child once."""
        self._read_labels(timeout)
        if self.runtime.stop.is_set():
            # Restart nothing: stop() is next, and a SIGTERM to the whole process group has
            # ended the fork server too, so a launch now would fail.
            return
        now = time.monotonic()
        for child in self.children:
            self._check(child, now)
        if not self.readiness.workers:
            self.readiness.parts_alive(self.children)
        self.readiness.tick()

    @property
    def ready(self) -> bool:
        """READY=1 was sent: the worker here is online, or, without one, every part beat."""
        return self.readiness.ready

    def _check(self, child: Child, now: float) -> None:
        if child.state == "backoff" and now >= child.restart_at:
            self._launch(child)
        elif child.state != "running":
            return
        elif not child.process.is_alive():
            # Once a stop has come (its handler runs in this thread, so this sees it) an exit
            # is no crash: a SIGTERM to the whole process group (`timeout`, `kill -- -PGID`)
            # ends the children a moment after it reaches us.
            if self.runtime.stop.is_set():
                return
            code = child.process.exitcode
            if code == EXIT_USER_ERROR:  # it logged why (a taken port, a bad model file)
                reason = "stopped on an error in the config or its files"
                self._give_up(child, reason, "a restart would not help")
            else:
                self._failed(child, f"exited with code {code}")
        elif self._silent_for(child, now) > self._allowed_silence(child):
            log.warning(
                "%s (pid %d): no heartbeat for %.1f s; killing it",
                child.spec.name,
                child.pid,
                self._silent_for(child, now),
            )
            child.process.kill()
            child.process.join(2.0)
            self._failed(child, "heartbeat stopped")

    def _silent_for(self, child: Child, now: float) -> float:
        return now - (child.heartbeat.value or child.started_at)

    def _allowed_silence(self, child: Child) -> float:
        # Until its first beat a child is starting up (torch, the model, CUDA): a longer grace.
        if child.heartbeat.value == 0.0:
            return max(self.daemon.heartbeat_timeout, STARTUP_GRACE)
        return self.daemon.heartbeat_timeout

    def _failed(self, child: Child, reason: str) -> None:
        now = time.monotonic()
        child.last_failure = reason
        child.failures.append(now)
        while child.failures and child.failures[0] < now - self.daemon.restart_window:
            child.failures.popleft()
        if child.process is not None and not child.process.is_alive():
            child.process.close()  # a process stuck in the kernel even after SIGKILL stays open
        child.process = None
        recent = len(child.failures)
        window = f"{recent} failures in {self.daemon.restart_window:g} s"
        if recent > self.daemon.max_restarts:
            self._give_up(child, reason, window)
            return
        delay = Backoff(FIRST_BACKOFF, MAX_BACKOFF).delays(recent)[-1]
        child.state, child.restart_at = "backoff", now + delay
        log.warning("%s %s; restarting in %.1f s (%s)", child.spec.name, reason, delay, window)
        if child.spec.group == "worker":
            self._worker_down(child)

    def _give_up(self, child: Child, reason: str, why: str) -> None:
        """No more restarts: the rest keeps running, the log and the status say so."""
        child.last_failure = reason
        if child.process is not None and not child.process.is_alive():
            child.process.close()
        child.process = None
        child.state = "given-up"
        log.error("%s %s; giving up on it (%s)", child.spec.name, reason, why)
        if child.spec.group == "worker":
            self._worker_down(child)
        self.publish_status()

    def _worker_down(self, child: Child) -> None:
        cameras = worker_cameras(self.config).get(child.spec.name, [])
        self.readiness.worker_down(child.spec.name)
        log.warning(
            "cameras %s get no labels while %s is down", ", ".join(cameras), child.spec.name
        )
        if child.state == "backoff":
            self.publish_status()  # now: the status says which cameras are affected

    def _launch(self, child: Child) -> None:
        if child.state in ("running", "given-up", "stopped"):
            return
        if child.state == "backoff":
            child.restarts += 1
        child.heartbeat.value = 0.0
        child.process = SPAWN.Process(
            target=child_main,
            args=(child.spec, self.config.model_dump(), child.stop, child.heartbeat),
            name=f"sightd.{child.spec.name}",
        )
        child.process.start()
        child.state, child.started_at = "running", time.monotonic()
        log.info("started %s (pid %d)", child.spec.name, child.pid)

    def _read_labels(self, timeout: float) -> None:
        exits = [c.process.sentinel for c in self.children if c.process is not None]
        labels = self.readiness.socket
        watched = [labels] if labels is not None else []
        heard = dict(self.poller(*watched, *exits).poll(timeout * 1000))
        if labels is not None and labels in heard:
            self.readiness.read()

    # ---- status ----------------------------------------------------------------------------

    def figures(self) -> dict:
        return {
            "roles": sorted(self.plan.roles),
            "children": {c.spec.name: c.summary() for c in self.children},
            "given_up": [c.spec.name for c in self.children if c.state == "given-up"],
            "cameras_affected": self.cameras_affected(),
        }

    def cameras_affected(self) -> dict[str, str]:
        """Each camera whose worker here is not running, and why: what a worker's death costs."""
        owners = worker_cameras(self.config)
        affected = {}
        for child in self._group("worker"):
            if child.state != "running" and child.spec.name in owners:
                why = f"{child.spec.name} {child.state}: {child.last_failure or 'not running'}"
                affected |= dict.fromkeys(owners[child.spec.name], why)
        return affected

    def _group(self, group: str) -> list[Child]:
        return [c for c in self.children if c.spec.group == group]


def serve(supervisor: Supervisor, stop_requested: threading.Event | None = None) -> None:
    """Run in the foreground until SIGTERM, Ctrl-C or `stop_requested`; then stop everything."""
    set_process_title("sightd.supervisor")
    configure_logging(supervisor.config.log_level)
    stop_requested = stop_requested or StopEvent()  # a signal wakes the watch loop at once

    def request_stop(signum, _frame):
        log.info("stopping (%s)", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    supervisor.run(stop_requested)
