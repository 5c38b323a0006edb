"""`command`: run a program when a matching event arrives, never through a shell.

`run` is an argv list; placeholders are filled inside each argument (placeholders.py), so a
label full of shell syntax is one literal argument. Each run gets its own session (process
group); at `timeout` the whole group is killed, grandchildren included. A label runs at most
once per `cooldown`, and at most `max_concurrent` runs are alive: more are skipped, counted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from typing import Any, ClassVar

from pydantic import AliasChoices, Field, field_validator

from sightd.backoff import Cooldown
from sightd.errors import SightdError
from sightd.subscribers.base import Subscriber, SubscriberConfig, Topic
from sightd.subscribers.placeholders import check_template, message_values, render


class CommandConfig(SubscriberConfig):
    run: list[str] = Field(min_length=1, description="program and arguments, with placeholders")
    labels: list[str] | None = Field(  # `on: thumbs_up` reads better here; one field either way
        None, min_length=1, validation_alias=AliasChoices("on", "labels"), description="triggers"
    )
    timeout: float = Field(30.0, gt=0, le=86_400, description="seconds; then the group is killed")
    cooldown: float = Field(5.0, ge=0, description="seconds before the same label runs again")
    max_concurrent: int = Field(2, ge=1, le=64, description="runs alive at once; more are skipped")

    @field_validator("run")
    @classmethod
    def _templates(cls, run: list[str]) -> list[str]:
        if "{" in run[0] or not run[0]:
            raise ValueError("the program (first item) must be a fixed, non-empty name or path")
        return [check_template(arg) for arg in run]


class CommandSubscriber(Subscriber):
    Config = CommandConfig
    config: CommandConfig
    default_topics: ClassVar[tuple[Topic, ...]] = ("event",)
    example: ClassVar[dict[str, Any]] = {
        "on": "thumbs_up",
        "run": ["notify-send", "sightd", "{label} on {camera}"],
    }

    def start(self) -> None:
        program = self.config.run[0]
        self.program = shutil.which(program)
        if self.program is None:
            raise SightdError(f"command: program {program!r} not found (or not executable)")
        self.running: dict[int, subprocess.Popen] = {}
        self.cooldown = Cooldown(self.config.cooldown)
        self.counts = {"runs": 0, "skipped": 0, "timeouts": 0, "failures": 0}
        self.lock = threading.Lock()

    def handle(self, message: dict[str, Any]) -> None:
        values = message_values(message)
        with self.lock:
            if len(self.running) >= self.config.max_concurrent:
                self.counts["skipped"] += 1
                self.log.warning("skipped %s: %d runs going", values["label"], len(self.running))
                return
            if not self.cooldown.ready(values["label"]):
                self.counts["skipped"] += 1
                return
            argv = [self.program, *(render(arg, values) for arg in self.config.run[1:])]
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, close_fds=True, start_new_session=True
            )
            self.running[process.pid] = process
            self.counts["runs"] += 1
        threading.Thread(target=self._reap, args=(process,), daemon=True).start()

    def _reap(self, process: subprocess.Popen) -> None:
        try:
            code = process.wait(self.config.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            with self.lock:
                self.counts["timeouts"] += 1
            self.log.warning("%s: killed at the %g s timeout", self.program, self.config.timeout)
        else:
            if code != 0:
                with self.lock:
                    self.counts["failures"] += 1
                self.log.warning("%s exited with status %d", self.program, code)
        with self.lock:
            self.running.pop(process.pid, None)

    def figures(self) -> dict[str, Any]:
        with self.lock:
            return {**self.counts, "running": len(self.running)}

    def close(self) -> None:
        """Runs still going when sightd stops are killed with their groups."""
        with self.lock:
            processes = list(self.running.values())
        for process in processes:
            _kill_group(process)


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # start_new_session: its pid is the group id
    process.wait()
