"""The systemd unit for `sightd run`: rendered for this machine, or copied from docs/.

Hardened on purpose: sightd only reads a camera and a model and talks on sockets, so the unit
takes away everything else (privilege gain, writes outside its runtime and state folders,
kernel tunables). docs/sightd.service is this template rendered with DOCS_VALUES.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from sightd.atomic import atomic_write_text
from sightd.config import SightdConfig

UNIT_NAME = "sightd.service"

TEMPLATE = """\
# sightd: camera frames in, label events out. {origin}
[Unit]
Description=sightd vision daemon
After=network-online.target
Wants=network-online.target

[Service]
# READY=1 once sockets are bound and the model is loaded; WATCHDOG=1 while labels flow.
Type=notify
NotifyAccess=main
ExecStart={exec_start}
WorkingDirectory={workdir}
# Subscriber output (print) reaches the journal line by line.
Environment=PYTHONUNBUFFERED=1
WatchdogSec=30
Restart=on-failure
RestartSec=5
TimeoutStopSec=20
# SIGTERM to the supervisor only: it stops its children in order, then exits 0.
KillMode=mixed
{account}\
# /run/sightd (or $XDG_RUNTIME_DIR/sightd): for ipc:// endpoints; gone when it stops.
RuntimeDirectory=sightd
RuntimeDirectoryMode=0750
# Hardening. Not set: PrivateDevices (hides /dev/video*) and MemoryDenyWriteExecute
# (PyTorch's CPU kernels are JIT-compiled into writable, executable memory).
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
# Writable: the working folder (log files); read-only: the model the worker hot-reloads.
ReadWritePaths=-{workdir}
ReadOnlyPaths=-{model_dir}

[Install]
WantedBy={wanted_by}
"""

SYSTEM_ACCOUNT = """\
User=sightd
Group=sightd
# The video group owns /dev/video*.
SupplementaryGroups=video
StateDirectory=sightd
"""

DOCS_VALUES = {  # docs/sightd.service: a system install under /opt/sightd
    "origin": "Copy to /etc/systemd/system/ and adjust the paths\n"
    "# (or let `sightd service install` write one for this machine).",
    "exec_start": "/opt/sightd/venv/bin/sightd run -c /etc/sightd/config.yaml",
    "workdir": "/var/lib/sightd",
    "model_dir": "/var/lib/sightd/runs",
}


def render_unit(
    exec_start: str, workdir: str, model_dir: str, user: bool = False, origin: str = ""
) -> str:
    flag = " --user" if user else ""
    return TEMPLATE.format(
        origin=origin or f"Written by `sightd service install{flag}`.",
        exec_start=exec_start,
        workdir=workdir,
        account="" if user else SYSTEM_ACCOUNT,
        model_dir=model_dir,
        wanted_by="default.target" if user else "multi-user.target",
    )


def unit_for(config: SightdConfig, config_path: Path | None, user: bool) -> str:
    """This install: this interpreter, this config, this model folder, all absolute."""
    workdir = Path.cwd()
    command = [sys.executable, "-m", "sightd", "run"]
    if config_path is not None:
        command += ["-c", str(config_path.resolve())]
    model_dir = (workdir / config.model.path).resolve().parent
    return render_unit(shlex.join(command), str(workdir), str(model_dir), user)


def unit_dir(user: bool) -> Path:
    if not user:
        return Path("/etc/systemd/system")
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "systemd" / "user"


def install_unit(text: str, directory: Path) -> Path:
    path = directory / UNIT_NAME
    atomic_write_text(path, text)
    return path


def next_steps(user: bool) -> list[str]:
    systemctl = "systemctl --user" if user else "sudo systemctl"
    steps = [f"{systemctl} daemon-reload", f"{systemctl} enable --now sightd"]
    logs = "journalctl --user -u sightd -f" if user else "journalctl -u sightd -f"
    return [*steps, logs]
