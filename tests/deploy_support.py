"""Deployments for tests: one `sightd run --role ...` per host (optionally inside a Linux
network namespace), and the JSON-lines file a `log` subscriber writes, read as it grows."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import wait_for


class Host:
    """A host's supervisor: `sightd run -c config --role ...` in its own process group."""

    def __init__(self, root: Path, name: str, config: Path, args: list[str], netns=None):
        self.name = name
        self.log_path = root / f"{name}.log"
        prefix = ["ip", "netns", "exec", netns] if netns else []
        command = [*prefix, sys.executable, "-m", "sightd", "run", "-c", str(config), *args]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self) -> str:
        return f"--- {self.name} log ends:\n{self.log()[-2500:]}"

    def group(self) -> list[int]:
        """Live (not zombie) pids of its process group: the supervisor and its children."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rpartition(")")[2].split()
                if int(fields[2]) == self.process.pid and fields[0] != "Z":
                    found.append(int(stat.parent.name))
        return found

    def kill(self, sig: int = signal.SIGKILL, group: bool = True) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.process.pid, sig)
            else:
                os.kill(self.process.pid, sig)

    def close(self) -> None:
        self.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


class Hosts(list):
    """The hosts a test started; every one killed at its end, whatever happened."""

    def start(self, *args, **kwargs) -> Host:
        host = Host(*args, **kwargs)
        self.append(host)
        return host

    def tails(self) -> str:
        return "\n".join(host.tail() for host in self)

    def close(self) -> None:
        for host in self:
            host.close()


class MessageLog:
    """What a `log` subscriber wrote: every message, read incrementally as the file grows."""

    def __init__(self, path: Path):
        self.path, self.offset, self.messages = path, 0, []

    def read(self) -> list[dict]:
        with contextlib.suppress(FileNotFoundError), open(self.path, "rb") as file:
            file.seek(self.offset)
            data = file.read()
            complete = data.rpartition(b"\n")[0]
            self.offset += len(complete) + (1 if complete else 0)
            self.messages += [json.loads(line) for line in complete.splitlines() if line]
        return self.messages

    def labels(self, camera: str, after: float = 0.0) -> list[dict]:
        """Labels of `camera` whose frame was captured after `after` (UNIX time)."""
        return [
            m
            for m in self.read()
            if m["kind"] == "label" and m["camera"] == camera and m["captured_at"] > after
        ]

    def status(self, component: str) -> list[dict]:
        return [m for m in self.read() if m["kind"] == "status" and m["component"] == component]

    def wait_labels(self, camera: str, count: int, after: float, timeout: float, detail=None):
        return wait_for(
            lambda: len(self.labels(camera, after)) >= count and self.labels(camera, after),
            timeout,
            f"{count} labels of {camera} captured after {after:.2f}",
            detail,
        )


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def sightd_status(config: Path, seconds: float = 3.0) -> str:
    """What `sightd status` prints for `config`, run as a user would, in its own process."""
    command = [sys.executable, "-m", "sightd", "status", "-c", str(config)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [*command, "--seconds", str(seconds)], capture_output=True, text=True, env=env, timeout=120
    )
    return result.stdout + result.stderr
